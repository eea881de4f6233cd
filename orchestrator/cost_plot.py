"""The cost plot (report.py's cost.png): the AURAC of the adapters you get against what they cost,
for the LoRA grid grown rank by rank (r1; r1+r4; ...) and for every single run under each rule,
with the points on the Pareto front in FLOPs (a function of the config, like the verdict's
choices; device-hours move with load and are shown beside them). Pure: from results.Arm, no I/O.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlora_core.aurac import aurac

if TYPE_CHECKING:
    from .results import Arm


@dataclass(frozen=True)
class CostPoint:
    label: str                   # "LoRA r1+r4", or a curve's "arm [rule]"
    kind: str                    # "lora-grid" (a growing LoRA grid), else the single run's method
    rule: str | None             # a single run's rule (None for the grid)
    device_hours: float
    flops: float
    aurac: float                 # over the plot's ranks: at rank j, the best any of its adapters gives at <= j
    pareto: bool = False         # no other point is at most as costly and at least as good, one strictly


@dataclass(frozen=True)
class CostPlot:
    ranks: tuple[int, ...] = ()
    points: tuple[CostPoint, ...] = ()


def _usable(curves: list[dict[int, float]], ranks: list[int]) -> list[float]:
    """At deployment rank j: the best accuracy any adapter of the set reaches at a rank <= j."""
    out = []
    for j in ranks:
        best = 0.0
        for c in curves:
            below = [k for k in c if k <= j]
            if below:
                best = max(best, c[j] if j in c else c[max(below)])
        out.append(best)
    return out


def _pareto(points: list[CostPoint]) -> tuple[CostPoint, ...]:
    return tuple(dataclasses.replace(p, pareto=not any(
        q is not p and q.flops <= p.flops and q.aurac >= p.aurac and (q.flops < p.flops or q.aurac > p.aurac)
        for q in points)) for p in points)


def cost_plot(arms: dict[str, Arm], lora_grid: list[Arm], ranks: list[int]) -> CostPlot:
    """The plot's points: `lora_grid` (results.lora_grid_arms) grown rank by rank, then every
    one-run arm and the grid's largest LoRA, each under every rule."""
    if not ranks:
        return CostPlot()
    points, spent, flops, own = [], 0.0, 0.0, []
    for i, a in enumerate(lora_grid):
        spent, flops = spent + a.run_cost["device_hours"], flops + a.run_cost["total_flops"]
        own.append({a.rank: a.at_own_rank})
        label = "LoRA " + ("+".join(f"r{x.rank}" for x in lora_grid[:i + 1]) if i < 3 else
                           f"r{lora_grid[0].rank}..r{a.rank}")
        points.append(CostPoint(label, "lora-grid", None, spent, flops, aurac(ranks, _usable(own, ranks))))
    for a in [a for a in arms.values() if a.one_run] + lora_grid[-1:]:
        for c in a.curves.values():
            points.append(CostPoint(c.label, a.method, c.rule, a.run_cost["device_hours"], a.run_cost["total_flops"],
                                    aurac(ranks, _usable([dict(zip(c.ranks, c.mean))], ranks))))
    return CostPlot(tuple(ranks), _pareto(points))


__all__ = ["CostPlot", "CostPoint", "cost_plot"]
