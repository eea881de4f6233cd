"""The end-of-sweep summary: every curve as a table and the verdict in words, from a SweepResult."""
from __future__ import annotations

from .comparison import Comparison
from .frontier import frontier_lines
from .results import SweepResult


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def outcome(c: Comparison) -> str:
    """A one-run curve against the grid, in words (the summary's and the report's)."""
    if c.paid_off == "yes":
        return "pays off: as good as the grid at every rank, for less compute"
    if c.paid_off == "partly":
        return f"pays off at ranks {list(c.within)} only (cheaper than the grid)"
    if c.everywhere:
        return "no cheaper than the grid, though as good at every rank"
    if not c.cheaper:
        return "does not pay off: no cheaper than the grid, and worse at some rank"
    return "does not pay off: cheaper, but worse than the grid at every rank"


def verdict_lines(result: SweepResult) -> list[str]:
    """The answer in words: per rank what to deploy, whether Matryoshka paid off, what to serve."""
    lines = []
    for c in result.verdict:
        grid = result.envelope.get(c.rank)
        lines.append(f"rank {c.rank:>4}: {c.label} {c.accuracy:.3f} at {c.flops / 1e12:.3g} TFLOPs, "
                     f"{c.device_hours:.4f} device-h a run"
                     + (f"  (LoRA-{c.rank} at its own rank: {grid:.3f})" if grid is not None else ""))
    m = result.best_matryoshka
    if m is not None:
        spread = f" +- {m.aurac_std:.3f} over {m.seeds} seeds" if m.seeds > 1 else ""
        runs = result.grid.runs
        lines.append(f"best Matryoshka: {m.label} (objective {m.objective}, budget x{m.budget:g}, lr "
                     f"{m.lr:.1e}): AURAC {m.aurac:.3f}{spread} = {_pct(m.aurac_share)} of the grid "
                     f"envelope's, for {_pct(m.flops_share)} of the grid's FLOPs ({_pct(m.cost_share)} of its "
                     f"device-hours; {runs} run{'s' if runs != 1 else ''}): "
                     f"{outcome(m)} (within {result.tolerance:g} of the grid: ranks {list(m.within) or 'none'})")
    lines += frontier_lines(result.compute_frontier, result.tolerance)
    if result.recommended is not None:
        r = result.recommended
        lines.append(f"recommended: rank {r.rank}, {r.label} ({r.accuracy:.3f}; the smallest rank within "
                     f"{result.tolerance:g} of the best accuracy, its cheapest adapter)")
    if result.curves:
        lines.append(f"learning rates chosen on {result.selected_on}; every accuracy above is on the test set"
                     + ("" if result.selected_on == "validation" else " (so optimistic: the best of the lrs tried)"))
    for s in result.searches:
        if s.searched:
            lines.append(f"search {s.arm}: {s.trials} trials ({s.lrs_tried} lrs on the first seed, the "
                         f"chosen lr {s.chosen:.2e} on the others) where a grid of those lrs x seeds runs "
                         f"{s.grid_trials}")
    return lines


def print_summary(result: SweepResult) -> dict:
    """The end-of-sweep table (every arm under every rule) and verdict; returns parent-run metrics."""
    ranks = sorted({k for c in result.curves for k in c.ranks})
    head = f"{'arm [rule]':<44} {'lr':>8} {'seeds':>5} " + " ".join(f"{'r' + str(k):>6}" for k in ranks) + \
        f" {'AURAC':>6} {'log2':>6} {'dev-h':>8}"
    print("\n" + head + "\n" + "-" * len(head))
    for a in result.arms.values():
        for c in a.curves.values():
            cells = " ".join(f"{c.at(k):6.3f}" if c.at(k) is not None else f"{'':>6}" for k in ranks)
            print(f"{c.label:<44} {c.lr:8.1e} {len(c.trial_ids):>5} {cells} {c.aurac:6.3f} {c.aurac_log2:6.3f} "
                  f"{a.run_cost['device_hours']:8.4f}")
    for t in result.failed:
        print(f"{t.trial_id:<44} {t.status}: {t.error or 'no result'}")
    print("\n" + "\n".join(verdict_lines(result)))
    metrics = {"failed_trials": len(result.failed), "grid_device_hours": result.grid.device_hours}
    if result.envelope_aurac is not None:
        metrics["envelope_aurac"] = result.envelope_aurac
    m = result.best_matryoshka
    if m is not None:
        metrics.update(best_matryoshka_aurac=m.aurac)
        if m.cost_share is not None:
            metrics["best_matryoshka_cost_share"] = m.cost_share
        if m.aurac_share is not None:
            metrics["best_matryoshka_aurac_share"] = m.aurac_share
    if result.recommended is not None:
        metrics.update(recommended_rank=result.recommended.rank, recommended_accuracy=result.recommended.accuracy)
    return metrics
