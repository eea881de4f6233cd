"""Sweep planning: Experiment -> the list of trials, each a frozen TrialSpec, and its RunConfig.

    arms   = matryoshka: objectives x their p_schedules x their budgets  +  lora: ranks  +  dylora: budgets
    trials = arms x lrs x seeds            (search: grid, the default)
           + per searched arm: num_samples sampled lrs on the first seed + the chosen lr on the
             other seeds                   (search: optuna; SearchGroup, orchestrator/search.py)

The plan owns each trial's identity: its arm (the group the report compares; lrs and seeds
are its samples), its id (also the MLflow run name) and its MLflow params. A fixed-rank LoRA
trial of rank k is evaluated at every eval rank <= k, so its curve shows how plain LoRA does
when cut; its value at k is one point of the grid's envelope.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from mlora_core.config import AdapterConfig
from mlora_core.data.tasks import TaskConfig, scorable
from mlora_core.methods import passes_per_step
from mlora_core.p_schedule import rank_weights
from mlora_core.run import RunConfig
from mlora_core.scoring.metrics import MetricConfig
from mlora_core.train import TrainConfig, total_steps

from .config import Experiment, HarnessSpec
from .metrics import report_every

RECORD_VERSION = 1   # of TrialSpec.to_json: bump when a field changes meaning


def exact_lr(lr: float) -> str:
    """The lr with the shortest mantissa that reads back as the same float: 3e-03, 1.2e-04 (ids
    of one-digit lrs are unchanged, and two distinct lrs never share an id)."""
    return next(s for s in (f"{lr:.{p}e}" for p in range(17)) if float(s) == lr)


@dataclass(frozen=True)
class TrialSpec:
    """A trial's one identity, from the plan to the report: stored whole on its MLflow run and in
    sweep.json (to_json), read back by tracking.read_trials. A field that does not apply is None."""
    method: str                  # lora | dylora | matryoshka (mlora_core.methods.METHODS)
    rank: int
    lr: float
    seed: int
    objective: str | None = None    # matryoshka: summed | per_rank | stratified (None: the method's own)
    p_schedule: str | None = None   # matryoshka: how P weights the nested ranks
    budget: float = 1               # x training.steps
    sample: int | None = None       # a searched arm's n-th sampled lr (None: a grid trial)

    @property
    def arm(self) -> str:
        """What the report compares, one line each: a Matryoshka objective and schedule, DyLoRA,
        or LoRA at rank k (at a budget other than 1: '-x3', '-x1.5')."""
        name = "-".join(filter(None, (self.method, self.objective, self.p_schedule)))
        return f"{name}-r{self.rank}" + (f"-x{self.budget:g}" if self.budget != 1 else "")

    @property
    def trial_id(self) -> str:
        """Stable, readable, unique within a sweep: also the MLflow run name."""
        if self.sample is None:
            return f"{self.arm}-lr{exact_lr(self.lr)}-s{self.seed}"
        return f"{self.arm}-o{self.sample:02d}-lr{self.lr:.2e}-s{self.seed}"   # sampled lrs need more digits

    @property
    def one_run(self) -> bool:
        """Serves every rank from one run (Matryoshka, DyLoRA), unlike a LoRA-k of the grid."""
        return self.method != "lora"

    def as_dict(self) -> dict:
        """The fields, plus the derived arm and trial id (what Tune's table and ASHA read)."""
        return {**dataclasses.asdict(self), "v": RECORD_VERSION, "arm": self.arm, "trial_id": self.trial_id}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> TrialSpec:
        if d.get("v", RECORD_VERSION) != RECORD_VERSION:
            raise ValueError(f"trial record version {d.get('v')} is not {RECORD_VERSION}: written by another mlora")
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    @classmethod
    def from_json(cls, text: str) -> TrialSpec:
        return cls.from_dict(json.loads(text))


def _nested_duplicate(schedule: str, objective: str, earlier: list[str], adapter: AdapterConfig) -> bool:
    """per_rank and stratified use a schedule's weights normalised (p_schedule.rank_weights), so
    schedules that differ only by a factor (diag and binary) train the very same thing: run one."""
    if objective == "summed":
        return False
    weights = lambda s: list(rank_weights(dataclasses.replace(adapter, p_schedule=s)).values())  # noqa: E731
    return any(all(math.isclose(x, y) for x, y in zip(weights(e), weights(schedule))) for e in earlier)


def arms_of(exp: Experiment) -> list[tuple[str, TrialSpec]]:
    """(arm kind, a template TrialSpec with lr and seed unset) for every arm of the experiment, at
    every budget it runs."""
    a, r = exp.arms, exp.adapter.rank
    out: list[tuple[str, TrialSpec]] = []
    if a.matryoshka:
        adapter = AdapterConfig(rank=r, train_ranks=tuple(exp.adapter.train_ranks or ()) or None)
        m = a.matryoshka
        out += [("matryoshka", TrialSpec("matryoshka", r, 0.0, 0, objective=o, p_schedule=s, budget=b))
                for o in m.objectives for i, s in enumerate(m.schedules_for(o))
                if not _nested_duplicate(s, o, m.schedules_for(o)[:i], adapter) for b in m.budgets_for(o)]
    if a.lora:
        out += [("lora", TrialSpec("lora", k, 0.0, 0, budget=b))
                for k in sorted(set(a.lora.ranks or exp.adapter.eval_rank_list)) for b in a.lora.budgets]
    if a.dylora:
        out += [("dylora", TrialSpec("dylora", r, 0.0, 0, budget=b)) for b in a.dylora.budgets]
    return out


def lora_grid(specs) -> list[TrialSpec]:
    """The LoRA grid among `specs`: per rank, the fixed-rank LoRA at the least budget (more budgets
    of LoRA-k are arms of their own), by rank."""
    least: dict[int, TrialSpec] = {}
    for s in specs:
        if not s.one_run and (s.rank not in least or s.budget < least[s.rank].budget):
            least[s.rank] = s
    return [least[k] for k in sorted(least)]


def plan(exp: Experiment) -> list[TrialSpec]:
    """Every grid trial: arms x lrs x seeds. Searched arms (search_groups) add theirs as they go."""
    trials = [dataclasses.replace(t, lr=lr, seed=seed) for seed in exp.seeds for kind, t in arms_of(exp)
              if exp.search_of(kind).algorithm == "grid" for lr in (getattr(exp.arms, kind).lrs or exp.lrs)]
    ids = [t.trial_id for t in trials]
    if len(set(ids)) != len(ids):   # the schema keeps lrs and seeds distinct: a guard, not an assert (python -O)
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"two trials would share the id {twice[0]}: every trial needs its own")
    return trials


@dataclass(frozen=True)
class SearchGroup:
    """One searched arm: `num_samples` lrs drawn by TPE on the first seed, then the best (on
    validation) repeated on the other seeds. Seeds are repeats of the chosen configuration, not a
    searched dimension: the search spends its samples on lrs, and the report's spread over seeds
    is measured at the lr it chose, like the grid's."""
    template: TrialSpec
    num_samples: int
    low: float
    high: float
    log: bool
    sampler_seed: int
    seeds: tuple[int, ...]

    @property
    def arm(self) -> str:
        return self.template.arm

    @property
    def max_trials(self) -> int:
        return self.num_samples + len(self.seeds) - 1

    def sample(self, index: int, lr: float) -> TrialSpec:
        return dataclasses.replace(self.template, lr=lr, seed=self.seeds[0], sample=index)

    def repeats(self, chosen: TrialSpec) -> list[TrialSpec]:
        return [dataclasses.replace(chosen, seed=seed) for seed in self.seeds[1:]]


def search_groups(exp: Experiment) -> list[SearchGroup]:
    out = []
    for kind, t in arms_of(exp):
        s = exp.search_of(kind)
        if s.algorithm == "optuna":
            out.append(SearchGroup(t, s.num_samples, s.lr.low, s.lr.high, s.lr.log, s.seed, tuple(exp.seeds)))
    return out


def run_config(exp: Experiment, spec: TrialSpec) -> RunConfig:
    """What one trial trains: the experiment's settings with this trial's method/rank/lr/seed/budget."""
    ad = exp.adapter
    targets = getattr(exp.arms, spec.method).target_modules or ad.target_modules
    eval_ranks = tuple(k for k in ad.eval_rank_list if k <= spec.rank) or (spec.rank,)
    train_ranks = tuple(k for k in (ad.train_ranks or []) if k <= spec.rank) or None
    own = {k: v for k, v in (("objective", spec.objective), ("p_schedule", spec.p_schedule)) if v is not None}
    adapter = AdapterConfig(method=spec.method, rank=spec.rank, train_ranks=train_ranks, eval_ranks=eval_ranks,
                            scaling=ad.scaling, alpha=ad.alpha, **own,
                            target_modules=tuple(targets) if isinstance(targets, list) else targets,
                            exclude_modules=tuple(ad.exclude_modules), dropout=ad.dropout)
    t = exp.training
    train = TrainConfig(**t.model_dump(exclude={"steps", "epochs"}), steps=budgeted_steps(t.steps, spec.budget),
                        epochs=t.epochs and t.epochs * spec.budget, lr=spec.lr, seed=spec.seed,
                        threads=max(1, int(exp.resources.cpus_per_worker)) if not exp.resources.gpus_per_worker else None)
    train_task, val_task = tasks_of(exp, spec.seed)
    harness = isinstance(exp.tasks.eval, HarnessSpec)   # lm-eval tasks as the test set: eval_task unused
    return RunConfig(model=exp.model, train_task=train_task,
                     eval_task=RunConfig.eval_task if harness else exp.tasks.eval.to_core(),
                     eval_harness=exp.tasks.eval.to_core(exp.eval.batch_size) if harness else None,
                     val_task=val_task, adapter=adapter, train=train, eval_batch_size=exp.eval.batch_size,
                     # early stopping compares validation losses at the progress reports
                     val_loss_every=report_every(train.steps) if exp.early_stopping.asha and val_task else 0,
                     max_new_tokens=exp.eval.max_new_tokens, eval_rules=tuple(exp.eval.rules),
                     device_name=exp.cost.device, price_per_device_hour=exp.cost.price_per_device_hour,
                     devices_per_worker=devices_per_worker(exp), cache_dir=str(exp.out_dir.resolve() / "cache"))


def budgeted_steps(steps: int, budget: float) -> int:
    """training.steps x budget, rounded to a whole step (at least one): 1000 x 1.5 = 1500."""
    return max(1, round(steps * budget))


def tasks_of(exp: Experiment, seed: int) -> tuple[TaskConfig, TaskConfig | None]:
    """(training task, validation task). The validation and test sets are the same for every trial;
    the training data order follows the trial's seed. Validation held out of the training data is
    cut in a fixed order (tasks.HOLDOUT_SEED), so no trial ever trains on it. Validation is read
    in the training data's format and scored with the eval task's metric (what the lr is chosen by),
    or by its loss where that metric cannot score the format (Platypus -> ARC: no choices). With lm-eval
    tasks as the test set, the metric is the training task's own (ARC: multiple_choice, Platypus: loss)."""
    t, v = exp.tasks.train, exp.tasks.val
    holdout = v.n if v.enabled and v.split is None else 0
    train = t.to_core(seed=seed, holdout=holdout)
    if not v.enabled:
        return train, None
    metric = (train if isinstance(exp.tasks.eval, HarnessSpec) else exp.tasks.eval.to_core()).resolved().metric
    if not scorable(train, metric):
        metric = MetricConfig("loss")
    if holdout:
        return train, t.to_core(holdout=holdout, held_out=True, n=None, metric=metric)
    return train, t.to_core(split=v.split, n=v.n, metric=metric)


def trial_params(exp: Experiment, spec: TrialSpec, rc: RunConfig) -> dict:
    """The trial's MLflow params, for people (the MLflow UI's columns): what applies to it and what it
    ran with (`rc`: its run_config). Nothing reads them back: its record is TrialSpec.to_json."""
    fields = {k: v for k, v in dataclasses.asdict(spec).items() if v is not None}
    return {"arm": spec.arm, **fields, "model": exp.model, "dataset": exp.tasks.train.name,
            "eval_dataset": exp.tasks.eval.name, "scaling": exp.adapter.scaling, "alpha": exp.adapter.alpha,
            "val": (f"{rc.val_task.split} ({'held out, ' if rc.val_task.held_out else ''}"
                    f"{rc.val_task.n or rc.val_task.holdout})" if rc.val_task else "none"),
            "train_ranks": ",".join(map(str, rc.adapter.train_ranks)),
            "eval_ranks": ",".join(map(str, rc.adapter.eval_ranks)), "eval_rules": ",".join(rc.eval_rules),
            "steps": rc.train.steps if not rc.train.epochs else f"{rc.train.epochs:g} epochs",
            "batch_size": exp.training.batch_size, "workers": exp.resources.workers_per_trial}


def resolved_config(exp: Experiment, spec: TrialSpec, rc: RunConfig) -> dict:
    """Everything a trial ran with, as plain data (its MLflow artifact config.yaml): the experiment
    with every default filled in, the trial's identity, and the run config the core trained with."""
    return {"trial": spec.as_dict(), "run_config": rc.to_dict(), "experiment": exp.model_dump(mode="json")}


def devices_per_worker(exp: Experiment) -> float:
    """What a trial pays for, per worker: its GPUs on a GPU trial, else its CPU cores (so `cost.device`
    names one GPU or one core, and a 2-CPU worker costs twice a 1-CPU one)."""
    res = exp.resources
    return float(res.gpus_per_worker or res.cpus_per_worker)


@dataclass(frozen=True)
class Estimate:
    trial_id: str
    train_tokens: int       # upper bound: padded to max_length
    train_flops: float | None
    device_hours: float | None
    dollars: float | None


def estimate(exp: Experiment, trials: list[TrialSpec]) -> list[Estimate]:
    """Cost before running: FLOPs from the formula in mlora_core.cost on the model's shape,
    time from the configured effective throughput + per-trial start-up."""
    from mlora_core.cost import estimate_flop_model

    t, res = exp.training, exp.resources
    devices = res.workers_per_trial * devices_per_worker(exp)
    out, models = [], {}
    for spec in trials:
        rc = run_config(exp, spec)
        # with epochs and no fixed dataset size the steps are unknown before loading: fall back to `steps`
        n = exp.tasks.train.n
        steps = total_steps(rc.train, n, res.workers_per_trial) if n else rc.train.steps
        seqs = steps * t.batch_size * t.grad_accum * res.workers_per_trial
        key = (spec.rank, spec.method, spec.objective)
        if key not in models:
            models[key] = estimate_flop_model(exp.model, rc.adapter, exp.model_revision)
        fm = models[key]
        if fm is None:
            out.append(Estimate(spec.trial_id, seqs * t.max_length, None, None, None))
            continue
        a = rc.adapter
        n_passes, rank = passes_per_step(a.method, a.objective, a.rank, a.train_ranks)
        flops = n_passes * fm.train_step(seqs, t.max_length, rank)
        seconds = flops / (exp.cost.effective_tflops * 1e12 * devices) + exp.cost.startup_seconds
        hours = seconds * devices / 3600
        out.append(Estimate(spec.trial_id, seqs * t.max_length, flops, hours, hours * exp.cost.price_per_device_hour))
    return out
