"""What SweepResult holds besides its curves: the LoRA grid's cost (GridCost), each one-run curve
against the grid (Comparison: its shares and the ranks where it is as good; the sentence that
says it is rendered where it is shown, summary.outcome), and each arm's lr choice (SearchTrace).
Pure: from results.Arm and results.Curve, no I/O.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mlora_core.aurac import aurac

from .decisions import within

if TYPE_CHECKING:
    from .results import Arm, Curve


@dataclass(frozen=True)
class GridCost:
    """The LoRA grid (one LoRA-k per rank, each at its least budget): what one grid costs, and
    what the sweep spent on every LoRA arm (all their lrs, seeds and budgets)."""
    runs: int
    device_hours: float                          # one run of each grid rank
    flops: float
    trials: int                                  # every LoRA trial of the sweep
    spent_device_hours: float


@dataclass(frozen=True)
class RankPoint:
    accuracy: float | None
    std: float
    grid: float | None                           # the envelope at that rank (LoRA-k at its own rank)


PaidOff = Literal["yes", "partly", "no"]


@dataclass(frozen=True)
class Comparison:
    """One one-run curve against the LoRA grid (the sentence that says it: summary.outcome)."""
    arm: str
    rule: str
    label: str
    method: str
    objective: str | None
    p_schedule: str | None
    budget: float
    lr: float
    seeds: int
    aurac: float
    aurac_std: float
    aurac_log2: float
    device_hours: float                          # one run
    flops: float
    cost_share: float | None                     # of one grid's device-hours
    flops_share: float | None                    # of one grid's FLOPs
    per_rank: dict[int, RankPoint]
    aurac_share: float | None                    # of the envelope's AURAC, over the ranks both have
    within: tuple[int, ...]                      # ranks within tolerance of the envelope (or above)
    cheaper: bool                                # fewer FLOPs than one grid (load-independent)
    everywhere: bool                             # within tolerance at every rank both have
    paid_off: PaidOff                            # yes: cheaper and everywhere; partly: cheaper, some ranks


@dataclass(frozen=True)
class LrScore:
    lr: float
    score: float


@dataclass(frozen=True)
class SearchTrace:
    """An arm's lr choice under the primary rule: each lr's selection score, the one chosen."""
    arm: str
    rule: str
    points: tuple[LrScore, ...]
    chosen: float
    selected_on: str
    searched: bool                               # sampled by a search (Optuna), not a grid of lrs
    trials: int
    lrs_tried: int
    grid_trials: int                             # what a grid of those lrs x seeds would run


def grid_cost(arms: dict[str, Arm], grid_arms: list[Arm]) -> GridCost:
    lora = [a for a in arms.values() if not a.one_run]
    return GridCost(len(grid_arms), sum(a.run_cost["device_hours"] for a in grid_arms),
                    sum(a.run_cost["total_flops"] for a in grid_arms), sum(len(a.trials) for a in lora),
                    sum(a.total_cost["device_hours"] for a in lora))


def against_grid(arm: Arm, curve: Curve, env: dict[int, float], grid: GridCost, tolerance: float) -> Comparison:
    """One one-run curve against the LoRA grid: AURAC share of the envelope's (over the ranks
    both have), cost share of one grid, and at which ranks it is within tolerance of it."""
    common = [k for k in curve.ranks if k in env]
    hours, flops = arm.run_cost["device_hours"], arm.run_cost["total_flops"]
    flops_share = flops / grid.flops if grid.flops else None
    good = tuple(k for k in common if within(curve.at(k), env[k], tolerance))
    e_sub = aurac(common, [env[k] for k in common]) if common else 0.0
    cheaper = flops_share is not None and flops_share < 1   # FLOPs: load-independent
    everywhere = bool(common) and len(good) == len(common)
    std = dict(zip(curve.ranks, curve.std))
    return Comparison(
        arm=arm.name, rule=curve.rule, label=curve.label, method=arm.method, objective=arm.spec.objective,
        p_schedule=arm.spec.p_schedule, budget=arm.spec.budget, lr=curve.lr, seeds=len(curve.trial_ids),
        aurac=curve.aurac, aurac_std=curve.aurac_std, aurac_log2=curve.aurac_log2, device_hours=hours, flops=flops,
        cost_share=hours / grid.device_hours if grid.device_hours else None, flops_share=flops_share,
        per_rank={k: RankPoint(curve.at(k), std[k], env.get(k)) for k in curve.ranks},
        aurac_share=aurac(common, [curve.at(k) for k in common]) / e_sub if e_sub else None,
        within=good, cheaper=cheaper, everywhere=everywhere,
        paid_off="yes" if cheaper and everywhere else "partly" if cheaper and good else "no")


def search_trace(arm: Arm, rule: str) -> SearchTrace | None:
    """An arm's lr choice under `rule`: each lr's selection score (validation when present; mean over
    the seeds every lr ran), the chosen lr, and the trials it took against the grid it replaces."""
    curve = arm.curves.get(rule)
    done = [t for t in arm.trials if t.ok and rule in t.curves]
    lrs = sorted({t.lr for t in done})
    if curve is None or len(lrs) < 2:
        return None
    common = set.intersection(*({t.seed for t in done if t.lr == lr} for lr in lrs)) or {t.seed for t in done}
    points = tuple(LrScore(lr, statistics.fmean(t.score(rule) for t in done if t.lr == lr and t.seed in common))
                   for lr in lrs)
    seeds, tried = {t.seed for t in arm.trials}, {t.lr for t in arm.trials}
    return SearchTrace(arm.name, rule, points, curve.lr, curve.selected_on,
                       any(t.spec.sample is not None for t in arm.trials), len(arm.trials), len(tried),
                       len(tried) * len(seeds))


__all__ = ["Comparison", "GridCost", "LrScore", "PaidOff", "RankPoint", "SearchTrace", "against_grid", "grid_cost",
           "search_trace"]
