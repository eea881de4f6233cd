"""The compute-matched frontier in the report: frontier.png (the best one run and the best LoRA grid
at every compute, FLOPs on a log axis, the seed spread as error bars) and its table, kept to the
costs where either best changes (report.json holds every row)."""
from __future__ import annotations

import html

from .frontier import ComputeFrontier, FrontierPoint, FrontierRow
from .results import SweepResult


def changes(f: ComputeFrontier) -> list[FrontierRow]:
    """The frontier's rows where the best one run or the best grid changes."""
    out, last = [], (None, None)
    for row in f.rows:
        key = tuple(p and p.label for p in (row.one_run, row.grid))
        if key != last:
            out.append(row)
            last = key
    return out


def _cell(p: FrontierPoint | None) -> tuple[str, str]:
    if p is None:
        return "", ""
    spread = f" ± {p.aurac_std:.3f}" if p.seeds > 1 else ""
    return p.label, f"{p.aurac:.3f}{spread}"


def table_rows(f: ComputeFrontier) -> list[list[str]]:
    rows = []
    for r in changes(f):
        share = f"{r.grid_share:.2f}" if r.grid_share is not None else ""
        rows.append([f"{r.flops / 1e12:.3g}", share, *_cell(r.one_run), *_cell(r.grid)])
    return rows


HEAD = ["TFLOPs ≤", "/ grid", "best one run", "AURAC", "best LoRA grid", "AURAC"]


def frontier_html(result: SweepResult) -> str:
    f = result.compute_frontier
    if not f.grids:
        return "<p>No frontier: the sweep has no LoRA-k for every evaluated rank.</p>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(f))
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in HEAD) + f"</tr>{body}</table>"
            "<p class=sub>At each compute C (training + evaluation FLOPs), the adapter with the highest AURAC "
            "that one run costing at most C gives, against the best grid (one LoRA-k per rank, each at any "
            "budget the sweep ran) costing at most C. Rows where either changes.</p>")


def frontier_markdown(result: SweepResult) -> str:
    f = result.compute_frontier
    if not f.grids:
        return ""
    lines = ["| " + " | ".join(HEAD) + " |", "|---" * len(HEAD) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(f)]
    return "\n".join(lines) + "\n"


def frontier_plot(plt, result: SweepResult):
    f = result.compute_frontier
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for side, color, name in (("one_run", "#c44e52", "best one run"), ("grid", "#4c72b0", "best LoRA grid")):
        pts = [getattr(r, side) for r in f.rows if getattr(r, side) is not None]
        if pts:
            xs, ys = [r.flops for r in f.rows if getattr(r, side) is not None], [p.aurac for p in pts]
            ax.step(xs, ys, where="post", color=color, label=f"{name} costing <= C")
            ax.errorbar(xs, ys, yerr=[p.aurac_std for p in pts], fmt="o", ms=3, color=color, capsize=2)
    for p, marker in ((f.one_run_matches_grid, "*"), (f.grid_matches_best_one_run, "D")):
        if p is not None:
            ax.plot([p.flops], [p.aurac], marker, ms=12, color="gold", mec="k", label=f"break-even: {p.label}")
    ax.set_xscale("log")
    ax.set(xlabel="compute C: training + eval FLOPs (log)", ylabel="AURAC", title="The compute-matched frontier")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return fig


__all__ = ["frontier_html", "frontier_markdown", "frontier_plot", "table_rows"]
