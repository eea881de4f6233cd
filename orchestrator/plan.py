"""Sweep planning: Experiment -> the list of trials, each a frozen TrialSpec, and its RunConfig.

    arms   = matryoshka: p_schedules x objectives x budgets  +  lora: ranks  +  dylora: budgets
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
import math
from dataclasses import asdict, dataclass

from mlora_core.config import AdapterConfig
from mlora_core.p_schedule import SCHEDULES
from mlora_core.run import RunConfig
from mlora_core.tasks import TaskConfig
from mlora_core.train import TrainConfig, total_steps

from .config import Experiment
from .metrics import report_every


@dataclass(frozen=True)
class TrialSpec:
    method: str            # lora | dylora | matryoshka
    rank: int
    lr: float
    seed: int
    p_schedule: str = "diag"     # matryoshka: how P weights the nested ranks
    objective: str = "summed"    # matryoshka: summed | per_rank | stratified
    budget: int = 1              # x training.steps (one-run arms)
    sample: int | None = None    # a searched arm's n-th sampled lr (None: a grid trial)

    @property
    def arm(self) -> str:
        """What the report compares, one line each: a Matryoshka objective and schedule, DyLoRA,
        or LoRA at rank k (at a budget other than 1: '-x3')."""
        name = f"matryoshka-{self.objective}-{self.p_schedule}" if self.method == "matryoshka" else self.method
        return f"{name}-r{self.rank}" + (f"-x{self.budget}" if self.budget != 1 else "")

    @property
    def trial_id(self) -> str:
        """Stable, readable, unique within a sweep: also the MLflow run name."""
        if self.sample is None:
            return f"{self.arm}-lr{self.lr:.0e}-s{self.seed}"
        return f"{self.arm}-o{self.sample:02d}-lr{self.lr:.2e}-s{self.seed}"   # sampled lrs need more digits

    def as_dict(self) -> dict:
        return {**asdict(self), "arm": self.arm, "trial_id": self.trial_id}

    @classmethod
    def from_dict(cls, d: dict) -> TrialSpec:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def _nested_duplicate(schedule: str, objective: str, earlier: list[str], n_ranks: int) -> bool:
    """per_rank and stratified use a schedule's weights normalised (p_schedule.rank_weights), so
    schedules that differ only by a factor (diag and binary) train the very same thing: run one."""
    if objective == "summed":
        return False
    weights = lambda s: [SCHEDULES[s](i, n_ranks) / sum(SCHEDULES[s](j, n_ranks) for j in range(n_ranks))  # noqa: E731
                         for i in range(n_ranks)]
    return any(all(math.isclose(x, y) for x, y in zip(weights(e), weights(schedule))) for e in earlier)


def arms_of(exp: Experiment) -> list[tuple[str, TrialSpec]]:
    """(arm kind, a template TrialSpec with lr and seed unset) for every arm of the experiment."""
    a, r = exp.arms, exp.adapter.rank
    out: list[tuple[str, TrialSpec]] = []
    if a.matryoshka:
        n_ranks = len(AdapterConfig(rank=r, train_ranks=tuple(exp.adapter.train_ranks or ()) or None).train_ranks)
        schedules = a.matryoshka.p_schedules
        out += [("matryoshka", TrialSpec("matryoshka", r, 0.0, 0, p_schedule=s, objective=o, budget=b))
                for o in a.matryoshka.objectives for i, s in enumerate(schedules)
                if not _nested_duplicate(s, o, schedules[:i], n_ranks) for b in a.matryoshka.budgets_for(o)]
    if a.lora:
        out += [("lora", TrialSpec("lora", k, 0.0, 0)) for k in sorted(set(a.lora.ranks or exp.adapter.eval_rank_list))]
    if a.dylora:
        out += [("dylora", TrialSpec("dylora", r, 0.0, 0, budget=b)) for b in a.dylora.budgets]
    return out


def plan(exp: Experiment) -> list[TrialSpec]:
    """Every grid trial: arms x lrs x seeds. Searched arms (search_groups) add theirs as they go."""
    trials = [dataclasses.replace(t, lr=lr, seed=seed) for seed in exp.seeds for kind, t in arms_of(exp)
              if exp.search_of(kind).algorithm == "grid" for lr in (getattr(exp.arms, kind).lrs or exp.lrs)]
    ids = [t.trial_id for t in trials]
    assert len(set(ids)) == len(ids), "trial ids must be unique"
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
    """What one trial trains: the experiment's settings with this trial's method/rank/lr/seed."""
    ad = exp.adapter
    targets = getattr(exp.arms, spec.method).target_modules or ad.target_modules
    eval_ranks = tuple(k for k in ad.eval_rank_list if k <= spec.rank) or (spec.rank,)
    train_ranks = tuple(k for k in (ad.train_ranks or []) if k <= spec.rank) or None
    adapter = AdapterConfig(method=spec.method, rank=spec.rank, train_ranks=train_ranks, eval_ranks=eval_ranks,
                            scaling=ad.scaling, alpha=ad.alpha, p_schedule=spec.p_schedule, objective=spec.objective,
                            target_modules=tuple(targets) if isinstance(targets, list) else targets,
                            exclude_modules=tuple(ad.exclude_modules), dropout=ad.dropout)
    t = exp.training
    train = TrainConfig(steps=t.steps * spec.budget, epochs=t.epochs and t.epochs * spec.budget,
                        batch_size=t.batch_size, grad_accum=t.grad_accum, lr=spec.lr,
                        weight_decay=t.weight_decay, warmup_steps=t.warmup_steps, schedule=t.schedule,
                        max_grad_norm=t.max_grad_norm, max_length=t.max_length, seed=spec.seed,
                        checkpoint_every=t.checkpoint_every, compile=t.compile,
                        threads=max(1, int(exp.resources.cpus_per_worker)) if not exp.resources.gpus_per_worker else None)
    train_task, val_task = tasks_of(exp, spec.seed)
    return RunConfig(model=exp.model, train_task=train_task, eval_task=TaskConfig(**exp.tasks.eval.model_dump()),
                     val_task=val_task, adapter=adapter, train=train, eval_batch_size=exp.eval.batch_size,
                     # early stopping compares validation losses at the progress reports
                     val_loss_every=report_every(train.steps) if exp.early_stopping.asha and val_task else 0,
                     max_new_tokens=exp.eval.max_new_tokens, eval_rules=tuple(exp.eval.rules),
                     device_name=exp.cost.device, price_per_device_hour=exp.cost.price_per_device_hour,
                     devices_per_worker=devices_per_worker(exp))


def tasks_of(exp: Experiment, seed: int) -> tuple[TaskConfig, TaskConfig | None]:
    """(training task, validation task). The validation and test sets are the same for every trial;
    the training data order follows the trial's seed. Validation held out of the training data is
    cut in a fixed order (tasks.HOLDOUT_SEED), so no trial ever trains on it."""
    t, v = exp.tasks.train, exp.tasks.val
    holdout = v.n if v.enabled and v.split is None else 0
    train = TaskConfig(name=t.name, path=t.path, source=t.source, split=t.split, n=t.n, seed=seed, holdout=holdout)
    if not v.enabled:
        return train, None
    if holdout:
        return train, TaskConfig(name=t.name, path=t.path, source=t.source, split=t.split, holdout=holdout,
                                 held_out=True)
    return train, TaskConfig(name=t.name, path=t.path, source=t.source, split=v.split, n=v.n)


def trial_params(exp: Experiment, spec: TrialSpec) -> dict:
    """The trial's MLflow params: what identifies it (arm, method, objective, ...) and what it ran with."""
    rc = run_config(exp, spec)
    matryoshka = spec.method == "matryoshka"
    return {"arm": spec.arm, "method": spec.method, "rank": spec.rank, "lr": spec.lr, "seed": spec.seed,
            "objective": spec.objective if matryoshka else "-", "p_schedule": spec.p_schedule if matryoshka else "-",
            "budget": spec.budget, "sample": "-" if spec.sample is None else spec.sample,
            "model": exp.model, "dataset": exp.tasks.train.name,
            "eval_dataset": exp.tasks.eval.name, "scaling": exp.adapter.scaling, "alpha": exp.adapter.alpha,
            "val": (f"{rc.val_task.split} ({'held out, ' if rc.val_task.held_out else ''}"
                    f"{rc.val_task.n or rc.val_task.holdout})" if rc.val_task else "none"),
            "train_ranks": ",".join(map(str, rc.adapter.train_ranks)),
            "eval_ranks": ",".join(map(str, rc.adapter.eval_ranks)), "eval_rules": ",".join(rc.eval_rules),
            "steps": rc.train.steps if not rc.train.epochs else f"{rc.train.epochs:g} epochs",
            "batch_size": exp.training.batch_size, "workers": exp.resources.workers_per_trial}


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


def passes_per_step(adapter: AdapterConfig) -> tuple[int, float]:
    """(forward/backward passes per micro-batch, the adapter rank they run at): per_rank makes one
    pass per train rank; DyLoRA runs at its sampled rank (the mean of R on average)."""
    if adapter.method == "matryoshka" and adapter.objective == "per_rank":
        return len(adapter.train_ranks), adapter.rank
    if adapter.method == "dylora":
        return 1, sum(adapter.train_ranks) / len(adapter.train_ranks)
    return 1, adapter.rank


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
        steps = total_steps(rc.train, n, res.workers_per_trial) if n else t.steps * spec.budget
        seqs = steps * t.batch_size * t.grad_accum * res.workers_per_trial
        key = (spec.rank, spec.method, spec.objective)
        if key not in models:
            models[key] = estimate_flop_model(exp.model, rc.adapter, exp.model_revision)
        fm = models[key]
        if fm is None:
            out.append(Estimate(spec.trial_id, seqs * t.max_length, None, None, None))
            continue
        n_passes, rank = passes_per_step(rc.adapter)
        flops = n_passes * fm.train_step(seqs, t.max_length, rank)
        seconds = flops / (exp.cost.effective_tflops * 1e12 * devices) + exp.cost.startup_seconds
        hours = seconds * devices / 3600
        out.append(Estimate(spec.trial_id, seqs * t.max_length, flops, hours, hours * exp.cost.price_per_device_hour))
    return out
