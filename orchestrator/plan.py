"""Sweep planning: Experiment -> the list of trials, each a frozen TrialSpec, and its RunConfig.

    trials = |matryoshka schedules| x lrs x seeds  +  |lora ranks| x lrs x seeds  +  dylora lrs x seeds

A fixed-rank LoRA trial of rank k is evaluated at every eval rank <= k (truncated), so its
curve shows how plain LoRA collapses when cut; its value at k is one point of the grid's envelope.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from mlora_core.config import AdapterConfig
from mlora_core.run import RunConfig
from mlora_core.tasks import TaskConfig
from mlora_core.train import TrainConfig

from .config import Experiment


@dataclass(frozen=True)
class TrialSpec:
    arm: str               # matryoshka | lora | dylora (an arm may hold several schedules)
    method: str
    rank: int
    p_schedule: str
    lr: float
    seed: int

    @property
    def trial_id(self) -> str:
        """Stable, readable, unique within a sweep: also the MLflow run name."""
        sched = f"-{self.p_schedule}" if self.method == "matryoshka" else ""
        return f"{self.method}{sched}-r{self.rank}-lr{self.lr:.0e}-s{self.seed}"

    def as_dict(self) -> dict:
        return {**asdict(self), "trial_id": self.trial_id}


def plan(exp: Experiment) -> list[TrialSpec]:
    a, r = exp.arms, exp.adapter.rank
    trials: list[TrialSpec] = []
    for seed in exp.seeds:
        if a.matryoshka:
            trials += [TrialSpec("matryoshka", "matryoshka", r, s, lr, seed)
                       for s in a.matryoshka.p_schedules for lr in (a.matryoshka.lrs or exp.lrs)]
        if a.lora:
            trials += [TrialSpec("lora", "lora", k, "diag", lr, seed)
                       for k in sorted(set(a.lora.ranks or exp.adapter.eval_rank_list)) for lr in (a.lora.lrs or exp.lrs)]
        if a.dylora:
            trials += [TrialSpec("dylora", "dylora", r, "diag", lr, seed) for lr in (a.dylora.lrs or exp.lrs)]
    ids = [t.trial_id for t in trials]
    assert len(set(ids)) == len(ids), "trial ids must be unique"
    return trials


def run_config(exp: Experiment, spec: TrialSpec) -> RunConfig:
    """What one trial trains: the experiment's settings with this trial's method/rank/lr/seed."""
    ad = exp.adapter
    targets = getattr(exp.arms, spec.arm).target_modules or ad.target_modules
    eval_ranks = tuple(k for k in ad.eval_rank_list if k <= spec.rank) or (spec.rank,)
    train_ranks = tuple(k for k in (ad.train_ranks or []) if k <= spec.rank) or None
    adapter = AdapterConfig(method=spec.method, rank=spec.rank, train_ranks=train_ranks, eval_ranks=eval_ranks,
                            scaling=ad.scaling, alpha=ad.alpha, p_schedule=spec.p_schedule,
                            target_modules=tuple(targets) if isinstance(targets, list) else targets, exclude_modules=tuple(ad.exclude_modules), dropout=ad.dropout)
    t = exp.training
    train = TrainConfig(steps=t.steps, epochs=t.epochs, batch_size=t.batch_size, grad_accum=t.grad_accum, lr=spec.lr,
                        weight_decay=t.weight_decay, warmup_steps=t.warmup_steps, schedule=t.schedule,
                        max_grad_norm=t.max_grad_norm, max_length=t.max_length, seed=spec.seed,
                        checkpoint_every=t.checkpoint_every, compile=t.compile,
                        threads=max(1, int(exp.resources.cpus_per_worker)) if not exp.resources.gpus_per_worker else None)
    # the eval set is the same for every trial (seed 0); the training data order follows the trial's seed
    task = lambda s, seed: TaskConfig(**s.model_dump(), seed=seed)  # noqa: E731
    return RunConfig(model=exp.model, train_task=task(exp.tasks.train, spec.seed), eval_task=task(exp.tasks.eval, 0),
                     adapter=adapter, train=train, eval_batch_size=exp.eval.batch_size,
                     max_new_tokens=exp.eval.max_new_tokens, device_name=exp.cost.device,
                     price_per_device_hour=exp.cost.price_per_device_hour,
                     devices_per_worker=devices_per_worker(exp))


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
    if t.epochs:
        n = exp.tasks.train.n or 0
        steps = int(t.epochs * max(1, n // (t.batch_size * res.workers_per_trial)) / t.grad_accum) if n else t.steps
    else:
        steps = t.steps
    seqs = steps * t.batch_size * t.grad_accum * res.workers_per_trial
    devices = res.workers_per_trial * devices_per_worker(exp)
    out, models = [], {}
    for spec in trials:
        rc = run_config(exp, spec)
        key = (spec.rank, spec.method)
        if key not in models:
            models[key] = estimate_flop_model(exp.model, rc.adapter, exp.model_revision)
        fm = models[key]
        if fm is None:
            out.append(Estimate(spec.trial_id, seqs * t.max_length, None, None, None))
            continue
        rank = spec.rank if spec.method != "dylora" else sum(rc.adapter.train_ranks) / len(rc.adapter.train_ranks)
        flops = fm.train_step(seqs, t.max_length, rank)
        seconds = flops / (exp.cost.effective_tflops * 1e12 * devices) + exp.cost.startup_seconds
        hours = seconds * devices / 3600
        out.append(Estimate(spec.trial_id, seqs * t.max_length, flops, hours, hours * exp.cost.price_per_device_hour))
    return out
