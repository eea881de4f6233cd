"""The sweep report: what does one Matryoshka run buy against the fixed-rank LoRA grid?

`mlora report OUTPUT_DIR` (also run at the end of every sweep) reads the sweep back from
MLflow -- the source of truth, so it works for partial sweeps and remote servers -- and
writes into OUTPUT_DIR/report/:

    index.html        self-contained page (plots embedded), headline numbers first
    rank_curve.png    accuracy vs rank (log2 x): Matryoshka per schedule, DyLoRA, the LoRA
                      grid at each run's own rank (envelope), the largest LoRA truncated
    aurac.png         AURAC (linear, log2) per arm, seed spread as error bars
    cost.png          AURAC vs device-hours with the Pareto front: the LoRA grid as a growing
                      set (r1; r1+r2; ...) against the single Matryoshka run
    loss.png          training loss per trial
    report.json       every number on the page, for machines
    runs.csv          one row per trial run

"Usable curve" of a set of adapters (cost plot): at deployment rank j, the best accuracy any
adapter in the set reaches at a rank <= j (its own rank, or a larger adapter truncated to j).
"""
from __future__ import annotations

import base64
import csv
import html
import json
import math
from pathlib import Path

from mlora_core.aurac import aurac
from mlora_core.io import atomic_write

from . import tracking
from .results import Sweep, best_matryoshka, envelope, headline, load_sweep, read_sweep_state, recommended_rank

COLORS = {"matryoshka": "#d62728", "dylora": "#9467bd", "lora": "#1f77b4", "trunc": "#7f7f7f"}


def _usable(curves: list[dict[int, float]], ranks: list[int]) -> list[float]:
    out = []
    for j in ranks:
        best = 0.0
        for c in curves:
            below = [k for k in c if k <= j]
            if below:
                best = max(best, c[j] if j in c else c[max(below)])
        out.append(best)
    return out


def cost_frontier(sweep: Sweep, ranks: list[int]) -> dict:
    """Points (device-hours, AURAC) for the LoRA grid grown rank by rank, and for each
    Matryoshka / DyLoRA arm alone; plus which points are Pareto-optimal."""
    lora = sorted((g for g in sweep.groups.values() if g.method == "lora"), key=lambda g: g.rank)
    points, spent, chosen = [], 0.0, []
    for g in lora:
        spent += g.cost["device_hours"]
        chosen.append(dict(zip(g.ranks, g.mean)))
        points.append({"label": "LoRA " + "+".join(f"r{x.rank}" for x in lora[:len(chosen)]) if len(chosen) < 3
                       else f"LoRA r{lora[0].rank}..r{g.rank}", "kind": "lora", "device_hours": spent,
                       "aurac": aurac(ranks, _usable(chosen, ranks))})
    for g in sweep.groups.values():
        if g.method in ("matryoshka", "dylora"):
            points.append({"label": g.name, "kind": g.method, "device_hours": g.cost["device_hours"],
                           "aurac": aurac(ranks, _usable([dict(zip(g.ranks, g.mean))], ranks))})
    for p in points:  # Pareto: no other point is at most as costly and at least as good, one strictly
        p["pareto"] = not any(q is not p and q["device_hours"] <= p["device_hours"] and q["aurac"] >= p["aurac"]
                              and (q["device_hours"] < p["device_hours"] or q["aurac"] > p["aurac"]) for q in points)
    return {"ranks": ranks, "points": points}


# ---- plots ------------------------------------------------------------------------------

def _plots(sweep: Sweep, frontier: dict, losses: dict[str, list[tuple[int, float]]], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    ranks = frontier["ranks"]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    env = envelope(sweep)
    lora = sorted((g for g in sweep.groups.values() if g.method == "lora"), key=lambda g: g.rank)
    for g in sweep.groups.values():
        if g.method in ("matryoshka", "dylora"):
            ax.errorbar(g.ranks, g.mean, yerr=g.std if any(g.std) else None, marker="o", lw=2, capsize=3,
                        color=COLORS[g.method] if g.method == "dylora" or g.name.endswith("diag") else None,
                        label=f"{g.name} (one run)")
    if lora:
        own = [(g.rank, dict(zip(g.ranks, g.mean)).get(g.rank)) for g in lora]
        own = [(k, a) for k, a in own if a is not None]
        ax.plot([k for k, _ in own], [a for _, a in own], "s--", color=COLORS["lora"], lw=2,
                label=f"LoRA grid, each at its own rank ({len(lora)} runs)")
        top = lora[-1]
        if len(top.ranks) > 1:
            ax.plot(top.ranks, top.mean, "v:", color=COLORS["trunc"], label=f"LoRA r{top.rank} truncated")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks, [str(k) for k in ranks])
    ax.set_xlabel("rank used at inference")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, max(1e-3, max([*env.values(), *[a for g in sweep.groups.values() for a in g.mean]], default=1)) * 1.1)
    ax.set_title("Accuracy vs rank")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    files.append(_save(fig, out / "rank_curve.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(sweep.groups)
    x = range(len(names))
    groups = [sweep.groups[n] for n in names]
    ax.bar([i - 0.2 for i in x], [g.aurac for g in groups], 0.4, yerr=[g.aurac_std for g in groups], capsize=3,
           label="AURAC", color="#4c72b0")
    ax.bar([i + 0.2 for i in x], [g.aurac_log2 for g in groups], 0.4, label="AURAC (log2 rank)", color="#dd8452")
    ax.set_xticks(list(x), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("area under rank-accuracy curve")
    ax.set_title("AURAC per arm (LoRA-k: over ranks <= k)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    files.append(_save(fig, out / "aurac.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = frontier["points"]
    lp = [p for p in pts if p["kind"] == "lora"]
    if lp:
        ax.plot([p["device_hours"] for p in lp], [p["aurac"] for p in lp], "s-", color=COLORS["lora"],
                label="LoRA grid, growing set (r1, r1+r2, ...)")
    for p in pts:
        if p["kind"] != "lora":
            ax.plot(p["device_hours"], p["aurac"], "*" if p["kind"] == "matryoshka" else "D", ms=14 if
                    p["kind"] == "matryoshka" else 8, color=COLORS[p["kind"]], label=p["label"] + " (one run)")
    front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["device_hours"])
    if front:
        ax.step([p["device_hours"] for p in front], [p["aurac"] for p in front], where="post", color="k",
                alpha=0.4, lw=1, label="Pareto front")
        ax.scatter([p["device_hours"] for p in front], [p["aurac"] for p in front], s=160, facecolors="none",
                   edgecolors="k", zorder=5)
    ax.set_xlabel("training + eval cost (device-hours)")
    ax.set_ylabel("AURAC of the adapters you get")
    ax.set_title("What the compute buys")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    files.append(_save(fig, out / "cost.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for tid, hist in losses.items():
        if hist:
            steps, vals = zip(*hist)
            ax.plot(steps, vals, lw=1, label=tid)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    files.append(_save(fig, out / "loss.png"))
    return files


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


# ---- page --------------------------------------------------------------------------------

def _fmt(v, spec=".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _headline_html(data: dict) -> str:
    h, rows = data["headline"], []
    for name, m in h["matryoshka"].items():
        pct = _fmt(m["cost_fraction"] and 100 * m["cost_fraction"], ".0f")
        ratio = _fmt(m.get("envelope_ratio") and 100 * m["envelope_ratio"], ".0f")
        rows.append(f"<p class=big><b>{html.escape(name)}</b> ({m['arm_runs']} run(s), "
                    f"<b>{_fmt(m['device_hours'], '.4f')}</b> device-hours each): <b>{pct}%</b> of the compute of "
                    f"the LoRA grid's {m['grid_runs']} runs ({_fmt(h['grid_device_hours'], '.4f')} device-hours, "
                    f"<b>{_fmt(m['flops_fraction'] and 100 * m['flops_fraction'], '.0f')}%</b> of its FLOPs); "
                    f"AURAC <b>{_fmt(m['aurac'])}</b> vs grid envelope {_fmt(h['envelope_aurac'])} "
                    f"(<b>{ratio}%</b>).</p>")
        cells = "".join(f"<tr><td>{k}</td><td>{_fmt(v['matryoshka'])}</td><td>{_fmt(v['lora'])}</td></tr>"
                        for k, v in m["per_rank"].items())
        rows.append(f"<table><tr><th>rank</th><th>{html.escape(name)}</th><th>fixed-rank LoRA (best at that "
                    f"rank)</th></tr>{cells}</table>")
    rec = data.get("recommended")
    if rec:
        rows.append(f"<p>Recommended rank: <b>{rec['rank']}</b> (smallest rank of {html.escape(rec['arm'])} within "
                    f"{rec['tolerance']:g} of its best accuracy {_fmt(rec['best'])}).</p>")
    if h["failed"]:
        rows.append("<p class=bad>Failed trials: " + ", ".join(
            f"{html.escape(t['trial_id'])} ({html.escape(t['error'] or t['status'])})" for t in data["failed"]) + "</p>")
    return "\n".join(rows) or "<p>No Matryoshka arm finished: nothing to compare.</p>"


def _runs_table(sweep: Sweep, ranks: list[int]) -> str:
    head = "".join(f"<th>r{k}</th>" for k in ranks)
    body = []
    for t in sweep.trials:
        cells = "".join(f"<td>{_fmt(t.curve.get(k))}</td>" if k in t.curve else "<td></td>" for k in ranks)
        body.append(f"<tr><td>{html.escape(t.trial_id)}</td><td>{t.status}</td><td>{t.lr:.1e}</td><td>{t.seed}</td>"
                    f"{cells}<td>{_fmt(t.metrics.get('aurac'))}</td>"
                    f"<td>{_fmt(t.metrics.get('device_hours'), '.4f')}</td></tr>")
    return (f"<table><tr><th>trial</th><th>status</th><th>lr</th><th>seed</th>{head}<th>AURAC</th>"
            f"<th>device-h</th></tr>{''.join(body)}</table>")


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}.big{font-size:1.15em}.bad{color:#b00}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1em}img{width:100%;border:1px solid #eee}"""


def write_report(output_dir: str | Path, tracking_uri: str | None = None, tolerance: float | None = None) -> Path:
    out = Path(output_dir)
    state = read_sweep_state(out)
    uri = tracking_uri or state["tracking_uri"]
    exp = state.get("experiment", {})
    if tolerance is None:
        tolerance = exp.get("registry", {}).get("tolerance", 0.01)
    sweep = load_sweep(uri, state["parent_run_id"])
    ranks = sorted({k for t in sweep.trials for k in t.curve})
    h = headline(sweep)
    frontier = cost_frontier(sweep, ranks) if ranks else {"ranks": [], "points": []}
    losses = {t.trial_id: tracking.metric_history(uri, t.run_id, "train_loss") for t in sweep.trials}
    rec = None
    best_arm = best_matryoshka(sweep)
    if best_arm is not None:
        rec = {"arm": best_arm.name, "rank": recommended_rank(best_arm.ranks, best_arm.mean, tolerance),
               "best": max(best_arm.mean), "tolerance": tolerance}
    data = {
        "experiment": exp.get("name"), "tracking_uri": uri, "parent_run_id": state["parent_run_id"],
        "headline": h, "recommended": rec, "cost_frontier": frontier,
        "groups": {n: {"method": g.method, "rank": g.rank, "lr": g.lr, "seeds": len(g.trials), "ranks": g.ranks,
                       "mean": g.mean, "std": g.std, "aurac": g.aurac, "aurac_log2": g.aurac_log2,
                       "aurac_std": g.aurac_std, "cost": g.cost} for n, g in sweep.groups.items()},
        "failed": [{"trial_id": t.trial_id, "status": t.status, "error": t.error} for t in sweep.failed],
    }
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    pngs = _plots(sweep, frontier, losses, rep) if sweep.trials else []
    atomic_write(rep / "report.json", lambda p: p.write_text(json.dumps(data, indent=2, default=str)))

    fields = ["trial_id", "run_id", "status", "arm", "method", "rank", "p_schedule", "lr", "seed",
              *[f"acc_rank_{k}" for k in ranks], "aurac", "aurac_log2", "device_hours", "total_flops", "cost_usd",
              "error"]
    tmp = rep / "runs.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for t in sweep.trials:
            w.writerow({"trial_id": t.trial_id, "run_id": t.run_id, "status": t.status, "arm": t.arm,
                        "method": t.method, "rank": t.rank, "p_schedule": t.p_schedule, "lr": t.lr, "seed": t.seed,
                        **{f"acc_rank_{k}": t.curve.get(k, "") for k in ranks},
                        **{k: t.metrics.get(k, "") for k in ("aurac", "aurac_log2", "device_hours", "total_flops",
                                                             "cost_usd")}, "error": t.error or ""})
    tmp.replace(rep / "runs.csv")

    imgs = "".join(f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode()}"></figure>' for p in pngs)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>mlora report: {html.escape(str(exp.get('name')))}</title>
<style>{CSS}</style></head><body>
<h1>mlora sweep report: {html.escape(str(exp.get('name')))}</h1>
<p class=sub>model {html.escape(str(exp.get('model')))} &middot; {len(sweep.trials)} trials &middot; MLflow
{html.escape(uri)} (parent run {html.escape(state['parent_run_id'])})</p>
<h2>Headline</h2>
{_headline_html(data)}
<h2>Plots</h2><div class=grid>{imgs}</div>
<h2>Runs</h2>{_runs_table(sweep, ranks)}
<p class=sub>Per arm: best learning rate by AURAC (LoRA-k: by accuracy at rank k), mean &plusmn; std over seeds.
Envelope = best fixed-rank LoRA accuracy at each rank. Machine-readable: report.json, runs.csv.</p>
</body></html>"""
    atomic_write(rep / "index.html", lambda p: p.write_text(page))
    return rep / "index.html"


__all__ = ["write_report", "cost_frontier"]
