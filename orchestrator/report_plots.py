"""The report's plots (report.py embeds them): rank curves per rule, AURAC per curve, the cost plot,
training loss, the compute-matched frontier and each arm's lr search, from one SweepResult."""
from __future__ import annotations

from pathlib import Path

from .frontier_report import frontier_plot
from .results import SweepResult

COLORS = {"matryoshka": "#d62728", "dylora": "#9467bd", "lora": "#1f77b4", "lora-grid": "#1f77b4"}
# per arm within a family, so every line of a plot keeps one colour across panels
PALETTES = {"matryoshka": ["#d62728", "#ff7f0e", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#2ca02c"],
            "dylora": ["#9467bd", "#c5b0d5"], "lora": ["#7f7f7f", "#aec7e8", "#c7c7c7", "#98df8a"]}


def _arm_colors(result: SweepResult) -> dict[str, str]:
    seen: dict[str, int] = {}
    out = {}
    for name, arm in result.arms.items():
        palette = PALETTES.get(arm.method, ["k"])
        out[name] = palette[seen.get(arm.method, 0) % len(palette)]
        seen[arm.method] = seen.get(arm.method, 0) + 1
    return out


# ---- plots ------------------------------------------------------------------------------

def plots(result: SweepResult, losses: dict[str, list[tuple[int, float]]], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = [("rank_curve", _rank_curve_plot(plt, result)), ("aurac", _aurac_plot(plt, result)),
            ("cost", _cost_plot(plt, result)), ("loss", _loss_plot(plt, losses))]
    if result.compute_frontier.grids:
        figs.append(("frontier", frontier_plot(plt, result)))
    if result.searches:
        figs.append(("search", _search_plot(plt, result)))
    return [_save(plt, fig, out / f"{name}.png") for name, fig in figs]


def _search_plot(plt, result: SweepResult):
    """Per arm: the selection score of each lr tried, the chosen one starred."""
    import matplotlib.ticker  # noqa: F401 (matplotlib.ticker.NullFormatter below)
    n = len(result.searches)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for ax, s in zip(axes.flat, result.searches):
        xs, ys = [p.lr for p in s.points], [p.score for p in s.points]
        ax.plot(xs, ys, "o" if s.searched else "o-", color=COLORS.get(result.arms[s.arm].method, "k"))
        best = next(p for p in s.points if p.lr == s.chosen)
        ax.plot([best.lr], [best.score], "*", ms=16, color="gold", mec="k", label=f"chosen {s.chosen:.1e}")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(xs, [f"{x:.1e}" for x in xs], rotation=45, ha="right", fontsize=6)
        ax.set_title(f"{s.arm}{' (optuna)' if s.searched else ''}", fontsize=8)
        ax.set_xlabel("learning rate", fontsize=8)
        ax.set_ylabel(f"{s.selected_on} score", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig


def _rank_curve_plot(plt, result: SweepResult):
    rules = result.rules or ("truncate",)
    fig, axes = plt.subplots(1, len(rules), figsize=(5.5 * len(rules), 4.5), sharey=True, squeeze=False)
    ranks = sorted({k for c in result.curves for k in c.ranks})
    top = max([*result.envelope.values(), *(a for c in result.curves for a in c.mean)], default=1.0)
    colors = _arm_colors(result)
    for ax, rule in zip(axes[0], rules):
        for arm in result.arms.values():
            c = arm.curves.get(rule)
            if c is None or (arm.method == "lora" and len(c.ranks) == 1):
                continue
            ax.errorbar(c.ranks, c.mean, yerr=c.std if any(c.std) else None, marker="o" if arm.one_run else "v",
                        lw=2 if arm.one_run else 1, capsize=3, alpha=1 if arm.one_run else 0.6, color=colors[arm.name],
                        label=arm.name + ("" if arm.one_run else " cut"))
        if result.envelope:
            ax.plot(list(result.envelope), list(result.envelope.values()), "s--", color=COLORS["lora"], lw=2,
                    label=f"LoRA grid, each at its own rank ({len(result.envelope)} runs)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [str(k) for k in ranks])
        ax.set_xlabel("rank used at inference")
        ax.set_title(f"rule: {rule}")
        ax.set_ylim(0, max(1e-3, top) * 1.1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("accuracy")
    return fig


def _aurac_plot(plt, result: SweepResult):
    curves = [c for c in result.curves if len(c.ranks) > 1]
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(curves) + 2), 4.5))
    x = range(len(curves))
    ax.bar([i - 0.2 for i in x], [c.aurac for c in curves], 0.4, yerr=[c.aurac_std for c in curves], capsize=3,
           label="AURAC", color="#4c72b0")
    ax.bar([i + 0.2 for i in x], [c.aurac_log2 for c in curves], 0.4, label="AURAC (log2 rank)", color="#dd8452")
    if result.envelope_aurac is not None:
        ax.axhline(result.envelope_aurac, color=COLORS["lora"], ls="--", lw=1, label="LoRA grid envelope")
    ax.set_xticks(list(x), [c.label for c in curves], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("area under rank-accuracy curve")
    ax.set_title("AURAC per arm and rule (LoRA-k: over ranks <= k)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _cost_plot(plt, result: SweepResult):
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    pts = result.cost_plot.points
    grid = [p for p in pts if p.kind == "lora-grid"]
    hours = lambda p: f"{p.device_hours:.3g} dev-h"  # noqa: E731  measured, beside the FLOPs
    if grid:
        ax.plot([p.flops for p in grid], [p.aurac for p in grid], "s-", color=COLORS["lora"],
                label="LoRA grid, growing set (" + ", ".join(f"{p.label.removeprefix('LoRA ')}: {hours(p)}"
                                                             for p in grid) + ")")
    for p in pts:
        if p.kind != "lora-grid":
            ax.plot(p.flops, p.aurac, {"truncate": "o", "prefix": "^", "svd": "*"}.get(p.rule, "o"),
                    ms=10, color=COLORS.get(p.kind, "k"), alpha=0.8, label=f"{p.label} (one run, {hours(p)})")
    front = sorted((p for p in pts if p.pareto), key=lambda p: p.flops)
    if front:
        ax.step([p.flops for p in front], [p.aurac for p in front], where="post", color="k",
                alpha=0.4, lw=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set(xlabel="training + eval FLOPs (log)", ylabel="AURAC of the adapters you get", title="What the compute buys")
    return _labelled(fig, ax, below=True)


def _loss_plot(plt, losses: dict[str, list[tuple[int, float]]]):
    fig, ax = plt.subplots(figsize=(7, 4))
    for tid, hist in losses.items():
        if hist:
            steps, vals = zip(*hist)
            ax.plot(steps, vals, lw=1, label=tid)
    ax.set(xlabel="step", ylabel="train loss", title="Training loss")
    return _labelled(fig, ax)


def _labelled(fig, ax, below: bool = False):
    """A grid and the legend (many long labels, `below`: under the plot, not over its points)."""
    ax.grid(alpha=0.3)
    if below:   # many long labels: under the plot, not over its points
        ax.legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    else:
        ax.legend(fontsize=6, ncol=2)
    return fig


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")   # legends placed below an axes stay in the picture
    tmp.replace(path)
    plt.close(fig)
    return path


__all__ = ["COLORS", "plots"]
