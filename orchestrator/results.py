"""Read a sweep back from MLflow (the source of truth) and aggregate it.

Used by the end-of-sweep summary, `mlora report` and `mlora register`. Aggregation: for
each arm (a Matryoshka schedule, DyLoRA, or LoRA at rank k) pick the learning rate with
the best mean metric over seeds, then report mean +- std over seeds at that lr. The LoRA
grid's *envelope* at rank k is the best grid run evaluated at k (its own rank, or a larger
rank truncated to k).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from mlora_core.aurac import aurac
from mlora_core.io import read_json

from . import tracking

COST_KEYS = ("device_hours", "total_flops", "train_flops", "wall_seconds", "cost_usd", "train_tokens")


@dataclass
class Trial:
    trial_id: str
    run_id: str
    arm: str
    method: str
    rank: int
    p_schedule: str
    lr: float
    seed: int
    status: str                      # FINISHED | FAILED | RUNNING ...
    error: str | None
    curve: dict[int, float]          # eval rank -> accuracy
    metrics: dict[str, float]

    @property
    def group(self) -> str:
        """What the report compares: one line per Matryoshka schedule / DyLoRA / LoRA rank."""
        if self.method == "matryoshka":
            return f"matryoshka-{self.p_schedule}"
        return f"lora-r{self.rank}" if self.method == "lora" else self.method

    @property
    def ok(self) -> bool:
        return self.status == "FINISHED" and bool(self.curve)


@dataclass
class Group:
    name: str
    method: str
    rank: int
    lr: float                        # the chosen (best) learning rate
    trials: list[Trial]              # seeds at that lr
    ranks: list[int]
    mean: list[float]
    std: list[float]
    aurac: float
    aurac_log2: float
    aurac_std: float
    cost: dict[str, float]           # mean over seeds


@dataclass
class Sweep:
    tracking_uri: str
    parent_run_id: str
    trials: list[Trial]
    groups: dict[str, Group] = field(default_factory=dict)

    @property
    def failed(self) -> list[Trial]:
        return [t for t in self.trials if not t.ok]


def _trial(run) -> Trial:
    p, m, tags = run.data.params, run.data.metrics, run.data.tags
    curve = {int(k.removeprefix("acc_rank_")): v for k, v in m.items() if k.startswith("acc_rank_")}
    return Trial(trial_id=tags.get("mlora.trial_id", run.info.run_name), run_id=run.info.run_id,
                 arm=p.get("arm", "?"), method=p.get("method", "?"), rank=int(p.get("rank", 0)),
                 p_schedule=p.get("p_schedule", "-"), lr=float(p.get("lr", "nan")), seed=int(p.get("seed", 0)),
                 status=run.info.status, error=tags.get("mlora.error"), curve=dict(sorted(curve.items())),
                 metrics=dict(m))


def _group(name: str, trials: list[Trial]) -> Group:
    by_lr: dict[float, list[Trial]] = {}
    for t in trials:
        by_lr.setdefault(t.lr, []).append(t)
    # Matryoshka/DyLoRA: choose lr by AURAC; a fixed-rank LoRA: by accuracy at its own rank
    score = lambda t: t.metrics.get("aurac", 0) if t.method != "lora" else t.curve.get(t.rank, 0)  # noqa: E731
    lr = max(by_lr, key=lambda lr: statistics.fmean(score(t) for t in by_lr[lr]))
    chosen = by_lr[lr]
    ranks = sorted(set.intersection(*(set(t.curve) for t in chosen)))
    cols = [[t.curve[k] for t in chosen] for k in ranks]
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    aur = [t.metrics.get("aurac", aurac(ranks, [t.curve[k] for k in ranks])) for t in chosen]
    return Group(name, chosen[0].method, chosen[0].rank, lr, chosen, ranks, [statistics.fmean(c) for c in cols],
                 [sd(c) for c in cols], statistics.fmean(aur),
                 statistics.fmean(t.metrics.get("aurac_log2", 0.0) for t in chosen), sd(aur),
                 {k: statistics.fmean(t.metrics.get(k, 0.0) for t in chosen) for k in COST_KEYS})


def load_sweep(tracking_uri: str, parent_run_id: str) -> Sweep:
    return aggregate([_trial(r) for r in tracking.trial_runs(tracking_uri, parent_run_id)], tracking_uri, parent_run_id)


def aggregate(trials: list[Trial], tracking_uri: str = "", parent_run_id: str = "") -> Sweep:
    """A Sweep of these trials: sorted, finished ones grouped per arm."""
    trials = sorted(trials, key=lambda t: (t.method != "matryoshka", t.method, t.rank, t.p_schedule, t.lr, t.seed))
    sweep = Sweep(tracking_uri, parent_run_id, trials)
    names: dict[str, list[Trial]] = {}
    for t in trials:
        if t.ok:
            names.setdefault(t.group, []).append(t)
    sweep.groups = {n: _group(n, ts) for n, ts in names.items()}
    return sweep


def envelope(sweep: Sweep) -> dict[int, float]:
    """Best fixed-rank LoRA group accuracy at each rank (own rank or truncated from a larger one)."""
    env: dict[int, float] = {}
    for g in sweep.groups.values():
        if g.method == "lora":
            for k, acc in zip(g.ranks, g.mean):
                env[k] = max(env.get(k, 0.0), acc)
    return dict(sorted(env.items()))


def grid_cost(sweep: Sweep, key: str = "device_hours") -> float:
    """What the whole LoRA grid cost: every LoRA trial (all lrs and seeds)."""
    return sum(t.metrics.get(key, 0.0) for t in sweep.trials if t.method == "lora")


def arm_cost(sweep: Sweep, group: str, key: str = "device_hours") -> float:
    """What one arm (e.g. a Matryoshka schedule) cost: all its trials (all lrs and seeds)."""
    return sum(t.metrics.get(key, 0.0) for t in sweep.trials if t.group == group)


def headline(sweep: Sweep) -> dict:
    """The numbers the report leads with (per Matryoshka schedule).

    cost_fraction / flops_fraction compare what the sweep spent on each side: the Matryoshka
    arm's trials against the LoRA grid's trials. With the same lrs and seeds on both sides
    (the default) that is one Matryoshka run / one grid (a run per rank); comparing one run
    with every grid trial of a 3-seed sweep would understate it 3x."""
    env = envelope(sweep)
    out = {"envelope": env, "envelope_aurac": aurac(list(env), list(env.values())) if env else None,
           "envelope_aurac_log2": aurac(list(env), list(env.values()), log2=True) if env else None,
           "grid_device_hours": grid_cost(sweep), "grid_flops": grid_cost(sweep, "total_flops"),
           "grid_runs": sum(t.method == "lora" for t in sweep.trials),
           "failed": [t.trial_id for t in sweep.failed], "matryoshka": {}}
    for g in sweep.groups.values():
        if g.method != "matryoshka":
            continue
        common = [k for k in g.ranks if k in env]
        arm_hours, arm_flops = arm_cost(sweep, g.name), arm_cost(sweep, g.name, "total_flops")
        entry = {"aurac": g.aurac, "aurac_log2": g.aurac_log2, "device_hours": g.cost["device_hours"],
                 "flops": g.cost["total_flops"], "arm_device_hours": arm_hours,
                 "arm_runs": sum(t.group == g.name for t in sweep.trials), "grid_runs": out["grid_runs"],
                 "cost_fraction": arm_hours / out["grid_device_hours"] if out["grid_device_hours"] else None,
                 "flops_fraction": arm_flops / out["grid_flops"] if out["grid_flops"] else None,
                 "per_rank": {k: {"matryoshka": a, "lora": env.get(k)} for k, a in zip(g.ranks, g.mean)}}
        if common and out["envelope_aurac"]:
            m_sub = aurac(common, [dict(zip(g.ranks, g.mean))[k] for k in common])
            e_sub = aurac(common, [env[k] for k in common])
            entry["envelope_ratio"] = m_sub / e_sub if e_sub else None
        out["matryoshka"][g.name] = entry
    return out


def read_sweep_state(output_dir) -> dict:
    """OUTPUT_DIR/sweep.json (tracking URI, parent run, resolved experiment), or a clear error."""
    path = Path(output_dir) / "sweep.json"
    if not path.is_file():
        raise FileNotFoundError(f"{output_dir} holds no sweep (no sweep.json)")
    return read_json(path)


def best_matryoshka(sweep: Sweep) -> Group | None:
    """The Matryoshka arm (P schedule) with the highest AURAC: what the report recommends
    from and what the registry registers."""
    return max((g for g in sweep.groups.values() if g.method == "matryoshka"), key=lambda g: g.aurac, default=None)


def recommended_rank(ranks: list[int], accs: list[float], tolerance: float) -> int:
    """The smallest rank whose accuracy is within `tolerance` (absolute) of the best."""
    best = max(accs)
    return min(k for k, a in zip(ranks, accs) if a >= best - tolerance)


def print_summary(sweep: Sweep) -> dict:
    """The end-of-sweep table: every arm's rank curve, AURAC and cost; returns parent-run metrics."""
    ranks = sorted({k for t in sweep.trials for k in t.curve})
    head = f"{'arm':<22} {'lr':>8} {'seeds':>5} " + " ".join(f"{'r' + str(k):>6}" for k in ranks) + \
        f" {'AURAC':>6} {'log2':>6} {'dev-h':>8}"
    print("\n" + head + "\n" + "-" * len(head))
    for g in sweep.groups.values():
        accs = dict(zip(g.ranks, g.mean))
        cells = " ".join(f"{accs[k]:6.3f}" if k in accs else f"{'':>6}" for k in ranks)
        print(f"{g.name:<22} {g.lr:8.1e} {len(g.trials):>5} {cells} {g.aurac:6.3f} {g.aurac_log2:6.3f} "
              f"{g.cost['device_hours']:8.4f}")
    for t in sweep.failed:
        print(f"{t.trial_id:<22} {t.status}: {t.error or 'no result'}")
    h = headline(sweep)
    metrics = {"failed_trials": len(h["failed"]), "grid_device_hours": h["grid_device_hours"]}
    if h["envelope_aurac"] is not None:
        metrics["envelope_aurac"] = h["envelope_aurac"]
    for name, m in h["matryoshka"].items():
        if m["cost_fraction"] is not None and m.get("envelope_ratio") is not None:
            print(f"\n{name} ({m['arm_runs']} run(s), {m['device_hours']:.4f} device-hours each): "
                  f"{100 * m['cost_fraction']:.0f}% of the compute of the LoRA grid's {m['grid_runs']} runs "
                  f"({h['grid_device_hours']:.4f} device-hours, {100 * m['flops_fraction']:.0f}% of its FLOPs); "
                  f"AURAC {m['aurac']:.3f} vs grid envelope {h['envelope_aurac']:.3f} "
                  f"({100 * m['envelope_ratio']:.0f}%)")
            metrics[f"{name}_cost_fraction"] = m["cost_fraction"]
            metrics[f"{name}_envelope_ratio"] = m["envelope_ratio"]
    return metrics
