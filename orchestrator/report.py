"""The sweep report: what does one Matryoshka run buy against the fixed-rank LoRA grid?

`mlora report OUTPUT_DIR` (also run at the end of every sweep) writes OUTPUT_DIR/report/ from
the sweep's SweepResult (results.py; read from MLflow, so it works for partial sweeps and
remote servers):

    index.html        self-contained page (plots embedded): the verdict first
    rank_curve.png    accuracy vs rank, one panel per rank-k rule: every arm, the LoRA grid
                      at each run's own rank (the envelope)
    aurac.png         AURAC per (arm, rule), seed spread as error bars
    cost.png          the cost plot: AURAC vs FLOPs (device-hours in the legend) with the Pareto
                      front: the LoRA grid as a growing set (r1; r1+r2; ...) against each single
                      run under each rule
    frontier.png      the compute-matched frontier (frontier_report.py)
    search.png        per searched arm: each lr's selection score
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

from .frontier_report import frontier_html, frontier_markdown
from .metrics import acc_key, aurac_key
from .plan import TrialSpec
from .record import load_output_dir, read_sweep_state
from .redact import redact_text, redact_uri
from .report_plots import plots
from .results import SweepResult
from .summary import outcome, verdict_lines

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
            f"{html.escape(t.trial_id)} ({html.escape(redact_text(t.error) or t.status)})" for t in result.failed) + "</p>")
    return "\n".join(out)


def _one_run_html(result: SweepResult) -> str:
    if not result.one_run:
        return "<p>No one-run arm (Matryoshka, DyLoRA) finished: nothing to compare with the grid.</p>"
    ranks = sorted({k for e in result.one_run for k in e.per_rank})
    head = "".join(f"<th>r{k}</th>" for k in ranks)
    env = "".join(f"<td>{_fmt(result.envelope.get(k))}</td>" for k in ranks)
    body = [f"<tr><td>LoRA grid envelope ({result.grid.runs} runs)</td><td></td><td></td>{env}"
            f"<td>{_fmt(result.envelope_aurac)}</td><td>100%</td><td>100%</td><td>100%</td><td></td></tr>"]
    for e in result.one_run:
        cells = "".join(f"<td>{_fmt(e.per_rank[k].accuracy)}</td>" if k in e.per_rank else "<td></td>"
                        for k in ranks)
        body.append(f"<tr><td>{html.escape(e.label)}</td><td>{e.lr:.1e}</td><td>{e.seeds}</td>{cells}"
                    f"<td>{_fmt(e.aurac)} &plusmn; {_fmt(e.aurac_std)}</td>"
                    f"<td>{_fmt(e.aurac_share and 100 * e.aurac_share, '.0f')}%</td>"
                    f"<td>{_fmt(e.flops_share and 100 * e.flops_share, '.0f')}%</td>"
                    f"<td>{_fmt(e.cost_share and 100 * e.cost_share, '.0f')}%</td>"
                    f"<td>{html.escape(outcome(e))}</td></tr>")
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
            w.writerow({**row, "error": redact_text(t.error) or ""})
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
        lines.append(f"| LoRA grid envelope ({result.grid.runs} runs, own rank) | | | " +
                     " | ".join(f"{result.envelope[k]:.3f}" if k in result.envelope else "" for k in ranks) +
                     f" | {result.envelope_aurac:.3f} | 1.00 | |")
    for arm in sorted(result.arms.values(), key=lambda a: (a.method != "lora", a.method, a.name)):
        share = f"{arm.run_cost['total_flops'] / result.grid.flops:.2f}" if result.grid.flops else ""
        for c in arm.curves.values():
            n = len(c.trial_ids)
            cells = " | ".join(pm(c.mean[c.ranks.index(k)], c.std[c.ranks.index(k)], n) if k in c.ranks else ""
                               for k in ranks)
            lines.append(f"| {c.label} | {c.lr:.0e} ({c.selected_on}) | {n} | {cells} | "
                         f"{pm(c.aurac, c.aurac_std, n)} | {share} | {c.test_score:.3f} / {c.best_on_test:.3f} |")
    return "\n".join(lines) + "\n"


def _data(result: SweepResult, state: dict) -> dict:
    """report.json: every record of the SweepResult as plain data (dataclasses.asdict), in one place;
    each comparison with its sentence (summary.outcome) beside it."""
    plain = lambda x: dataclasses.asdict(x) if x is not None else None  # noqa: E731
    compared = lambda c: {**plain(c), "outcome": outcome(c)}  # noqa: E731
    return {"experiment": state.get("experiment", {}).get("name"), "tracking_uri": redact_uri(result.tracking_uri),
            "parent_run_id": result.parent_run_id, "tolerance": result.tolerance, "rules": list(result.rules),
            "verdict": [plain(c) for c in result.verdict], "recommended": plain(result.recommended),
            "best_matryoshka": result.best_matryoshka and compared(result.best_matryoshka),
            "one_run": [compared(c) for c in result.one_run],
            "envelope": result.envelope, "envelope_aurac": result.envelope_aurac,
            "envelope_aurac_log2": result.envelope_aurac_log2, "grid": plain(result.grid),
            "curves": [plain(c) for c in result.curves], "cost_plot": plain(result.cost_plot),
            "compute_frontier": plain(result.compute_frontier), "searches": [plain(s) for s in result.searches],
            "arms": {n: {**{k: v for k, v in dataclasses.asdict(a.spec).items() if k not in ("lr", "seed", "sample")},
                         "run_cost": a.run_cost, "total_cost": a.total_cost,
                         "trials": len(a.trials)} for n, a in result.arms.items()},
            "failed": [{"trial_id": t.trial_id, "status": t.status, "error": redact_text(t.error)} for t in result.failed]}


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
    pngs = plots(result, losses, rep) if result.trials else []
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
{html.escape(redact_uri(result.tracking_uri))} (parent run {html.escape(result.parent_run_id)})</p>
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
