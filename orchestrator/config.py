"""The experiment YAML's schema: one pydantic model, every key's type, bounds and default.

Unknown keys, wrong types and impossible values are errors (never silently ignored); load.py
reads a file into it and words each problem as one line naming its key. The sections that are
core config types (training, adapter) take their defaults from mlora_core, written once there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_serializer, field_validator, model_validator

from mlora_core.config import AdapterConfig, powers_of_two_upto
from mlora_core.data.formats import FORMATS
from mlora_core.data.tasks import SOURCES, TASKS, TaskConfig
from mlora_core.methods import RULES, SCALINGS
from mlora_core.models import check_model_id
from mlora_core.offline_data import check_installed as check_offline_installed
from mlora_core.run import RunConfig
from mlora_core.scoring.harness import HarnessConfig
from mlora_core.scoring.metrics import METRICS, MetricConfig
from mlora_core.train import TrainConfig

from .config_arms import Arms, LoraArm, MatryoshkaArm, Search, distinct
from .config_base import NonNegInt, PosFloat, PosInt, Strict, from_core

_distinct = distinct


MetricSpec = from_core(MetricConfig, "MetricSpec", doc="How an eval task is scored (mlora_core/scoring/metrics.py).",
                       keys={
    "name": Literal[tuple(METRICS)],        # type: ignore[valid-type]  # exact_match | function | multiple_choice | loss
    "extract": str,                         # exact_match: final_number | first_line | regex | none
    "regex": str | None,                    # extract regex: its pattern (its first group is the answer)
    "normalize": list[str],                 # exact_match: strip | lower | punctuation, in order
    "length_normalized": bool,              # multiple_choice: per-character log-likelihood (lm-eval's acc_norm)
    "function": str | None,                 # function: "package.module:name", fn(completion, row) -> [0, 1]
})


class _TaskChecks(Strict):
    """A task (mlora_core.TaskConfig: its defaults): a built-in one by name, or one of your own by
    format, from a local path or a hub dataset (docs/data.md)."""

    @model_validator(mode="after")
    def _task_fits(self):
        try:
            self.to_core()
        except ValueError as e:
            raise ValueError(str(e).removeprefix("task.")) from None
        if self.source == "offline":  # `mlora validate` catches a missing package, not the first trial
            check_offline_installed()
        return self

    def to_core(self, **fields) -> TaskConfig:
        """The core's TaskConfig of this task (+ `fields`: seed, holdout, ...)."""
        given = {**self.model_dump(exclude={"metric"}), **fields}
        metric = fields.get("metric", self.metric)
        if isinstance(metric, str):
            metric = MetricConfig(metric)
        elif isinstance(metric, BaseModel):
            metric = MetricConfig(**metric.model_dump())
        return TaskConfig(**{**given, "metric": metric})


TaskSpec = from_core(TaskConfig, "TaskSpec", base=_TaskChecks, keys={
    "name": Literal[tuple(TASKS)] | None,   # type: ignore[valid-type]  # a built-in task; none: a task of your own
    "format": Literal[tuple(FORMATS)] | None,  # type: ignore[valid-type]  # prompt_completion | alpaca | messages | text | multiple_choice
    "source": Literal[SOURCES] | None,      # type: ignore[valid-type]  # hub | offline | local; default: local with a path, else hub
    "path": str | None,                     # a local file (jsonl, json, csv, parquet) or folder (train*, validation*, test*)
    "dataset": str | None,                  # a hub dataset of your own (owner/name)
    "subset": str | None,                   # ... its configuration
    "split": str,                           # offline: gsm8k train|test, arc_* validation|test (mlora_core/offline_data.py)
    "n": PosInt | None,                     # first n examples
    "template": str | None,                 # prompt_completion / multiple_choice: the prompt over the row's fields
    "columns": dict[str, str | list[str]] | None,   # the format's roles -> your columns ({completion: answer})
    "metric": Annotated[str | MetricSpec | None, Field(  # type: ignore[valid-type]
        description="a metric name (exact_match, function, multiple_choice, loss) or a mapping "
                    "{name: exact_match, extract: final_number, normalize: [strip, lower]}")],
    "choice_prefix": str | None,            # multiple_choice: before each choice (default " ")
    "chat_template": str | None,            # messages on a model without a chat template: a Jinja template
    "streaming": bool,                      # read as a stream: the first n after a seeded shuffle buffer
    "shuffle_buffer": PosInt,               # streaming: rows the buffer shuffles among
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


class HarnessSpec(Strict):
    """lm-evaluation-harness tasks as the test set (mlora_core/scoring/harness.py; docs/data.md): each
    trial scores them at every (rank, rule); the first task's first metric is the primary curve."""
    harness: Annotated[list[str], Field(min_length=1)]   # lm-eval task / group / tag names: [arc_easy, hellaswag]
    num_fewshot: NonNegInt | None = None    # None: each task's own default
    limit: PosInt | None = None             # the first `limit` documents of each task
    include_path: str | None = None         # a folder of your own task YAMLs

    @field_validator("harness")
    @classmethod
    def _names_distinct(cls, v):
        return _distinct(v)

    @property
    def name(self) -> str:
        return "harness:" + ",".join(self.harness)

    def to_core(self, batch_size: int = _RUN.eval_batch_size) -> HarnessConfig:
        path = self.include_path and str(Path(self.include_path).expanduser().resolve())   # Ray workers' cwd differs
        return HarnessConfig(tuple(self.harness), self.num_fewshot, self.limit, path, batch_size)


class Tasks(Strict):
    train: TaskSpec = _task(_RUN.train_task)
    val: ValSpec = ValSpec()
    eval: TaskSpec | HarnessSpec = _task(_RUN.eval_task)   # a task, or {harness: [lm-eval tasks], num_fewshot, ...}

    @field_validator("eval", mode="plain", json_schema_input_type=TaskSpec | HarnessSpec)
    @classmethod
    def _eval_kind(cls, v):
        """The `harness` key tells an lm-eval test set from a task (each reports its own keys' errors)."""
        if isinstance(v, (TaskSpec, HarnessSpec)):
            return v
        return (HarnessSpec if isinstance(v, dict) and "harness" in v else TaskSpec).model_validate(v)

    @field_serializer("eval")
    def _dump_eval(self, v, info):
        return v.model_dump(mode=info.mode)


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
    rules: list[Literal[tuple(RULES)]] = list(_RUN.eval_rules)  # type: ignore[valid-type]  # methods.default_rules()

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
