"""The compute-matched frontier: at every total compute C (FLOPs of training + evaluation, the
verdict's unit), the best adapter that one run of a one-run arm gives against the best LoRA grid,
and the break-even between them. Pure: from results.Arm, no I/O.

    one run   a one-run arm (Matryoshka, DyLoRA) served under one rank-k rule: its curve at the lr
              chosen for it, costing one run of the arm
    grid      one LoRA-k per evaluated rank, each at any budget the sweep ran it at: its accuracy at
              rank k is LoRA-k's at its own rank, its cost the sum of its runs (3 ranks x 3
              budgets: 27 grids)
    best <= C the one (run or grid) with the highest AURAC among those costing at most C

Break-even: the least C at which one run is within `tolerance` of the grid's envelope (each
LoRA-k at its least budget, results.py) at every rank; and the least C at which a grid is within
`tolerance` of the best one run (highest AURAC at any cost) at every rank.
"""
from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass

from mlora_core.aurac import aurac

from .decisions import within


@dataclass(frozen=True)
class FrontierPoint:
    """One run (a one-run arm under one rule) or one LoRA grid: its cost and its rank curve."""
    label: str
    kind: str                            # "one run" | "grid"
    flops: float
    per_rank: dict[int, float]           # mean over seeds
    std: dict[int, float]
    aurac: float
    aurac_std: float
    seeds: int


@dataclass(frozen=True)
class FrontierRow:
    """At compute C: the best one run and the best grid costing at most C."""
    flops: float
    grid_share: float | None             # C / one grid (each LoRA-k at its least budget)
    one_run: FrontierPoint | None
    grid: FrontierPoint | None


@dataclass(frozen=True)
class ComputeFrontier:
    ranks: tuple[int, ...] = ()
    rows: tuple[FrontierRow, ...] = ()   # one per distinct cost
    one_runs: tuple[FrontierPoint, ...] = ()
    grids: tuple[FrontierPoint, ...] = ()
    best_one_run: FrontierPoint | None = None
    one_run_matches_grid: FrontierPoint | None = None       # break-even: the cheapest run as good as the envelope
    one_run_matches_grid_share: float | None = None
    grid_matches_best_one_run: FrontierPoint | None = None  # ... the cheapest grid as good as the best run
    grid_matches_best_one_run_share: float | None = None


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def one_runs(arms: dict) -> list[FrontierPoint]:
    return [FrontierPoint(c.label, "one run", a.run_cost["total_flops"], dict(zip(c.ranks, c.mean)),
                          dict(zip(c.ranks, c.std)), c.aurac, c.aurac_std, len(c.trial_ids))
            for a in arms.values() if a.one_run for c in a.curves.values()]


def _own_rank(arm) -> dict[int, float]:
    """LoRA-k's accuracy at its own rank, per seed, at its chosen lr (results.Arm.own_rank_curve)."""
    curve = arm.own_rank_curve
    return {t.seed: t.curves[curve.rule][arm.rank] for t in arm.trials if t.trial_id in curve.trial_ids}


def grids(arms: dict, ranks: list[int]) -> list[FrontierPoint]:
    """Every LoRA grid: one LoRA-k per rank in `ranks`, at any budget run (none when a rank has no LoRA-k)."""
    by_rank: dict[int, list] = {k: [] for k in ranks}
    for a in arms.values():
        if not a.one_run and a.curves and a.rank in by_rank:
            by_rank[a.rank].append(a)
    if not ranks or not all(by_rank.values()):
        return []
    out = []
    for combo in itertools.product(*(sorted(by_rank[k], key=lambda a: a.spec.budget) for k in ranks)):
        own = [_own_rank(a) for a in combo]
        seeds = sorted(set.intersection(*(set(o) for o in own)))
        per_seed = [aurac(ranks, [o[s] for o in own]) for s in seeds]
        per_rank = {k: statistics.fmean(o.values()) for k, o in zip(ranks, own)}
        out.append(FrontierPoint("LoRA " + " + ".join(f"r{a.rank}x{a.spec.budget:g}" for a in combo), "grid",
                                 sum(a.run_cost["total_flops"] for a in combo), per_rank,
                                 {k: _sd(list(o.values())) for k, o in zip(ranks, own)},
                                 aurac(ranks, list(per_rank.values())), _sd(per_seed), len(seeds)))
    return out


def _best_within(points: list[FrontierPoint], c: float) -> FrontierPoint | None:
    affordable = [p for p in points if p.flops <= c * (1 + 1e-9)]
    return max(affordable, key=lambda p: (p.aurac, -p.flops)) if affordable else None


def _matches(p: FrontierPoint, target: dict[int, float], tolerance: float) -> bool:
    return all(k in p.per_rank and within(p.per_rank[k], v, tolerance) for k, v in target.items())


def compute_frontier(arms: dict, envelope: dict[int, float], grid_flops: float, tolerance: float) -> ComputeFrontier:
    """The frontier table (one row per distinct cost), both break-evens, and the points behind them."""
    ranks = sorted(envelope)
    singles, all_grids = one_runs(arms), grids(arms, ranks)
    rows = [FrontierRow(c, c / grid_flops if grid_flops else None, _best_within(singles, c), _best_within(all_grids, c))
            for c in sorted({p.flops for p in singles + all_grids})]
    cheapest = lambda ps: min(ps, key=lambda p: p.flops) if ps else None  # noqa: E731
    best_one = max(singles, key=lambda p: (p.aurac, -p.flops)) if singles else None
    one_matches = cheapest([p for p in singles if envelope and _matches(p, envelope, tolerance)])
    grid_matches = cheapest([g for g in all_grids if best_one and _matches(
        g, {k: v for k, v in best_one.per_rank.items() if k in ranks}, tolerance)])
    share = lambda p: p.flops / grid_flops if p and grid_flops else None  # noqa: E731
    return ComputeFrontier(tuple(ranks), tuple(rows), tuple(singles), tuple(all_grids), best_one,
                           one_matches, share(one_matches), grid_matches, share(grid_matches))


def frontier_lines(f: ComputeFrontier, tolerance: float) -> list[str]:
    """The break-even in words (the verdict's last lines)."""
    if not f.rows or not f.grids:
        return []
    pct = lambda x: f"{100 * x:.0f}% of the grid's FLOPs" if x is not None else ""  # noqa: E731
    m, g, b = f.one_run_matches_grid, f.grid_matches_best_one_run, f.best_one_run
    lines = [f"break-even: one run within {tolerance:g} of the grid's envelope at every rank from "
             f"{m.flops / 1e12:.3g} TFLOPs ({m.label}, {pct(f.one_run_matches_grid_share)})" if m else
             f"break-even: no one run of this sweep is within {tolerance:g} of the grid's envelope at every rank"]
    if b is not None:
        lines.append(f"break-even: a LoRA grid within {tolerance:g} of the best one run ({b.label}, AURAC "
                     f"{b.aurac:.3f}) at every rank from {g.flops / 1e12:.3g} TFLOPs ({g.label}, "
                     f"{pct(f.grid_matches_best_one_run_share)})" if g else
                     f"break-even: no LoRA grid of this sweep's budgets is within {tolerance:g} of the best one run "
                     f"({b.label}, AURAC {b.aurac:.3f}) at every rank")
    return lines


__all__ = ["ComputeFrontier", "FrontierPoint", "FrontierRow", "compute_frontier", "frontier_lines", "grids",
           "one_runs"]
