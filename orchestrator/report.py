"""The sweep report: what does one Matryoshka run buy against the fixed-rank LoRA grid?

`mlora report OUTPUT_DIR` (also run at the end of every sweep) writes OUTPUT_DIR/report/ from
the sweep's SweepResult (results.py; read from MLflow, so it works for partial sweeps and
remote servers):

    index.html        self-contained page (plots embedded): the verdict first
    rank_curve.png    accuracy vs rank, one panel per rank-k rule: every arm, the LoRA grid
                      at each run's own rank (the envelope)
    aurac.png         AURAC per (arm, rule), seed spread as error bars
    cost.png          AURAC vs device-hours with the Pareto front: the LoRA grid as a growing set
                      (r1; r1+r2; ...) against each single run under each rule
    loss.png          training loss per trial
    report.json       every number on the page, for machines
    summary.md        every (arm, rule) curve as a markdown table (mean ± std over seeds)
    runs.csv          one row per trial run
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import html
import json
import math
from pathlib import Path

from mlora_core.io import atomic_write

from .frontier_report import frontier_html, frontier_markdown, frontier_plot
from .metrics import acc_key, aurac_key
from .plan import TrialSpec
from .record import load_output_dir, read_sweep_state
from .results import SweepResult
from .summary import verdict_lines

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
RULE_STYLE = {"truncate": "-", "prefix": "--", "svd": ":"}


# ---- plots ------------------------------------------------------------------------------

def _plots(result: SweepResult, losses: dict[str, list[tuple[int, float]]], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = [("rank_curve", _rank_curve_plot(plt, result)), ("aurac", _aurac_plot(plt, result)),
            ("cost", _cost_plot(plt, result)), ("loss", _loss_plot(plt, losses))]
    if result.compute.get("grids"):
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
        xs, ys = [p["lr"] for p in s["points"]], [p["score"] for p in s["points"]]
        ax.plot(xs, ys, "o" if s["searched"] else "o-", color=COLORS.get(result.arms[s["arm"]].method, "k"))
        best = next(p for p in s["points"] if p["lr"] == s["chosen"])
        ax.plot([best["lr"]], [best["score"]], "*", ms=16, color="gold", mec="k", label=f"chosen {s['chosen']:.1e}")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(xs, [f"{x:.1e}" for x in xs], rotation=45, ha="right", fontsize=6)
        ax.set_title(f"{s['arm']}{' (optuna)' if s['searched'] else ''}", fontsize=8)
        ax.set_xlabel("learning rate", fontsize=8)
        ax.set_ylabel(f"{s['selected_on']} score", fontsize=8)
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
    pts = result.frontier["points"]
    grid = [p for p in pts if p["kind"] == "lora-grid"]
    hours = lambda p: f"{p['device_hours']:.3g} dev-h"  # noqa: E731  measured, beside the FLOPs
    if grid:
        ax.plot([p["flops"] for p in grid], [p["aurac"] for p in grid], "s-", color=COLORS["lora"],
                label="LoRA grid, growing set (" + ", ".join(f"{p['label'].removeprefix('LoRA ')}: {hours(p)}"
                                                             for p in grid) + ")")
    for p in pts:
        if p["kind"] != "lora-grid":
            ax.plot(p["flops"], p["aurac"], {"truncate": "o", "prefix": "^", "svd": "*"}.get(p["rule"], "o"),
                    ms=10, color=COLORS.get(p["kind"], "k"), alpha=0.8, label=f"{p['label']} (one run, {hours(p)})")
    front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["flops"])
    if front:
        ax.step([p["flops"] for p in front], [p["aurac"] for p in front], where="post", color="k",
                alpha=0.4, lw=1, label="Pareto front")
    ax.set_xscale("log")
    return _labelled(fig, ax, "training + eval FLOPs (log)", "AURAC of the adapters you get",
                     "What the compute buys", below=True)


def _loss_plot(plt, losses: dict[str, list[tuple[int, float]]]):
    fig, ax = plt.subplots(figsize=(7, 4))
    for tid, hist in losses.items():
        if hist:
            steps, vals = zip(*hist)
            ax.plot(steps, vals, lw=1, label=tid)
    return _labelled(fig, ax, "step", "train loss", "Training loss")


def _labelled(fig, ax, xlabel: str, ylabel: str, title: str, below: bool = False):
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
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


# ---- page --------------------------------------------------------------------------------

def _fmt(v, spec=".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _verdict_html(result: SweepResult) -> str:
    rows = "".join(f"<tr><td>{c.rank}</td><td>{html.escape(c.label)}</td><td>{_fmt(c.accuracy)}</td>"
                   f"<td>{_fmt(c.flops / 1e12, '.3g')}</td><td>{_fmt(c.device_hours, '.4f')}</td>"
                   f"<td>{_fmt(result.envelope.get(c.rank))}</td></tr>" for c in result.verdict)
    lines = verdict_lines(result)[len(result.verdict):]
    out = [f"<table><tr><th>rank</th><th>deploy (arm [rule])</th><th>accuracy</th><th>TFLOPs a run</th>"
           f"<th>device-h a run</th><th>LoRA-k at its own rank</th></tr>{rows}</table>"
           if rows else "<p>No finished trial.</p>"]
    out += [f"<p class=big>{html.escape(line)}</p>" for line in lines]
    out.append(f"<p class=sub>Per rank: the cheapest adapter within {result.tolerance:g} of the best accuracy "
               "at that rank (cost = the FLOPs of one run of its arm, training + evaluation; device-hours as "
               "measured).</p>")
    if result.failed:
        out.append("<p class=bad>Failed trials: " + ", ".join(
            f"{html.escape(t.trial_id)} ({html.escape(t.error or t.status)})" for t in result.failed) + "</p>")
    return "\n".join(out)


def _one_run_html(result: SweepResult) -> str:
    if not result.one_run:
        return "<p>No one-run arm (Matryoshka, DyLoRA) finished: nothing to compare with the grid.</p>"
    ranks = sorted({k for e in result.one_run for k in e["per_rank"]})
    head = "".join(f"<th>r{k}</th>" for k in ranks)
    env = "".join(f"<td>{_fmt(result.envelope.get(k))}</td>" for k in ranks)
    body = [f"<tr><td>LoRA grid envelope ({result.grid['runs']} runs)</td><td></td><td></td>{env}"
            f"<td>{_fmt(result.envelope_aurac)}</td><td>100%</td><td>100%</td><td>100%</td><td></td></tr>"]
    for e in result.one_run:
        cells = "".join(f"<td>{_fmt(e['per_rank'][k]['accuracy'])}</td>" if k in e["per_rank"] else "<td></td>"
                        for k in ranks)
        body.append(f"<tr><td>{html.escape(e['label'])}</td><td>{e['lr']:.1e}</td><td>{e['seeds']}</td>{cells}"
                    f"<td>{_fmt(e['aurac'])} &plusmn; {_fmt(e['aurac_std'])}</td>"
                    f"<td>{_fmt(e['aurac_share'] and 100 * e['aurac_share'], '.0f')}%</td>"
                    f"<td>{_fmt(e['flops_share'] and 100 * e['flops_share'], '.0f')}%</td>"
                    f"<td>{_fmt(e['cost_share'] and 100 * e['cost_share'], '.0f')}%</td>"
                    f"<td>{html.escape(e['outcome'])}</td></tr>")
    return (f"<table><tr><th>one run [rule]</th><th>lr</th><th>seeds</th>{head}<th>AURAC</th><th>of envelope</th>"
            f"<th>FLOPs of grid</th><th>device-h of grid</th><th>against the grid</th></tr>{''.join(body)}</table>")


def _runs_table(result: SweepResult, ranks: list[int]) -> str:
    primary = result.rules[0] if result.rules else None
    head = "".join(f"<th>r{k}</th>" for k in ranks)
    body = []
    for t in result.trials:
        curve = t.curves.get(primary, {})
        cells = "".join(f"<td>{_fmt(curve.get(k))}</td>" if k in curve else "<td></td>" for k in ranks)
        body.append(f"<tr><td>{html.escape(t.trial_id)}</td><td>{t.status}</td><td>{t.lr:.1e}</td><td>{t.seed}</td>"
                    f"{cells}<td>{_fmt(t.metrics.get('aurac'))}</td>"
                    f"<td>{_fmt(t.metrics.get('device_hours'), '.4f')}</td></tr>")
    return (f"<p class=sub>Accuracy under the primary rule ({html.escape(str(primary))}); every rule is in runs.csv."
            f"</p><table><tr><th>trial</th><th>status</th><th>lr</th><th>seed</th>{head}<th>AURAC</th>"
            f"<th>device-h</th></tr>{''.join(body)}</table>")


def _write_csv(result: SweepResult, ranks: list[int], path: Path) -> None:
    acc = [acc_key(rule, k) for rule in result.rules for k in ranks]
    spec = [f.name for f in dataclasses.fields(TrialSpec)]
    fields = ["trial_id", "run_id", "status", "arm", *spec, *acc, *(aurac_key(rule) for rule in result.rules),
              "device_hours", "total_flops", "cost_usd", "error"]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for t in result.trials:
            row = {"trial_id": t.trial_id, "run_id": t.run_id, "status": t.status, "arm": t.arm,
                   **{k: "" if v is None else v for k, v in dataclasses.asdict(t.spec).items()}}
            row.update({k: t.metrics.get(k, "") for k in fields if k not in row and k != "error"})
            w.writerow({**row, "error": t.error or ""})
    tmp.replace(path)


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222;padding:0 1em}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}.big{font-size:1.1em}.bad{color:#b00}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1em}img{width:100%;border:1px solid #eee}"""


def _markdown(result: SweepResult) -> str:
    """Every (arm, rule) curve as one markdown table (what docs/findings.md quotes): test numbers at
    the chosen lr, mean ± std over seeds, training FLOPs of one run as a share of one LoRA grid, and
    the selection bias avoided (the score at the lr chosen on validation vs the best lr on test)."""
    ranks = sorted({k for a in result.arms.values() for c in a.curves.values() for k in c.ranks})
    pm = lambda m, s, n: f"{m:.3f}" + (f" ± {s:.3f}" if n > 1 else "")  # noqa: E731  one seed: no spread
    lines = ["| arm [rule] | lr (chosen on) | seeds | " + " | ".join(f"r{k}" for k in ranks) +
             " | AURAC | FLOPs / grid | score: chosen / best on test |",
             "|---" * (len(ranks) + 6) + "|"]
    if result.envelope:
        lines.append(f"| LoRA grid envelope ({result.grid['runs']} runs, own rank) | | | " +
                     " | ".join(f"{result.envelope[k]:.3f}" if k in result.envelope else "" for k in ranks) +
                     f" | {result.envelope_aurac:.3f} | 1.00 | |")
    for arm in sorted(result.arms.values(), key=lambda a: (a.method != "lora", a.method, a.name)):
        share = f"{arm.run_cost['total_flops'] / result.grid['flops']:.2f}" if result.grid["flops"] else ""
        for c in arm.curves.values():
            n = len(c.trial_ids)
            cells = " | ".join(pm(c.mean[c.ranks.index(k)], c.std[c.ranks.index(k)], n) if k in c.ranks else ""
                               for k in ranks)
            lines.append(f"| {c.label} | {c.lr:.0e} ({c.selected_on}) | {n} | {cells} | "
                         f"{pm(c.aurac, c.aurac_std, n)} | {share} | {c.test_score:.3f} / {c.best_on_test:.3f} |")
    return "\n".join(lines) + "\n"


def _data(result: SweepResult, state: dict) -> dict:
    exp = state.get("experiment", {})
    as_dict = lambda x: dataclasses.asdict(x) if x is not None else None  # noqa: E731
    return {"experiment": exp.get("name"), "tracking_uri": result.tracking_uri,
            "parent_run_id": result.parent_run_id, "tolerance": result.tolerance, "rules": list(result.rules),
            "verdict": [as_dict(c) for c in result.verdict], "recommended": as_dict(result.recommended),
            "best_matryoshka": result.best_matryoshka, "one_run": list(result.one_run),
            "envelope": result.envelope, "envelope_aurac": result.envelope_aurac,
            "envelope_aurac_log2": result.envelope_aurac_log2, "grid": result.grid,
            "curves": [as_dict(c) for c in result.curves], "cost_frontier": result.frontier, "compute_frontier": result.compute,
            "arms": {n: {**{k: v for k, v in dataclasses.asdict(a.spec).items() if k not in ("lr", "seed", "sample")},
                         "run_cost": a.run_cost, "total_cost": a.total_cost,
                         "trials": len(a.trials)} for n, a in result.arms.items()},
            "failed": [{"trial_id": t.trial_id, "status": t.status, "error": t.error} for t in result.failed]}


def write_report(output_dir: str | Path, result: SweepResult | None = None, tracking_uri: str | None = None) -> Path:
    from . import tracking

    out = Path(output_dir)
    state = read_sweep_state(out)
    if result is None:
        state, result = load_output_dir(out, tracking_uri)
    exp = state.get("experiment", {})
    ranks = sorted({k for t in result.trials for c in t.curves.values() for k in c})
    losses = {t.trial_id: tracking.metric_history(result.tracking_uri, t.run_id, "train_loss") for t in result.trials}
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    pngs = _plots(result, losses, rep) if result.trials else []
    atomic_write(rep / "report.json", lambda p: p.write_text(json.dumps(_data(result, state), indent=2, default=str)))
    _write_csv(result, ranks, rep / "runs.csv")
    atomic_write(rep / "summary.md", lambda p: p.write_text(_markdown(result) + "\n" + frontier_markdown(result)))
    imgs = "".join(f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode()}"></figure>' for p in pngs)
    name = html.escape(str(exp.get("name")))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>mlora report: {name}</title>
<style>{CSS}</style></head><body>
<h1>mlora sweep report: {name}</h1>
<p class=sub>model {html.escape(str(exp.get('model')))} &middot; {len(result.trials)} trials &middot; MLflow
{html.escape(result.tracking_uri)} (parent run {html.escape(result.parent_run_id)})</p>
<h2>Verdict</h2>
{_verdict_html(result)}
<h2>One run vs the LoRA grid</h2>
{_one_run_html(result)}
<p class=sub>Per arm and rule: the learning rate with the best mean over seeds (AURAC; LoRA-k: accuracy at rank k),
mean &plusmn; std over seeds there. Envelope = each fixed-rank LoRA at its own rank. Cost share = one run of the
arm / one run of every grid rank. Rules: truncate = s(k) A[:k] B[:k] (the paper's), prefix = the trained
function cut at k, svd = best rank-k approximation of the trained update.</p>
<h2>The compute-matched frontier</h2>{frontier_html(result)}
<h2>Plots</h2><div class=grid>{imgs}</div>
<h2>Runs</h2>{_runs_table(result, ranks)}
</body></html>"""
    atomic_write(rep / "index.html", lambda p: p.write_text(page))
    return rep / "index.html"


__all__ = ["write_report"]
