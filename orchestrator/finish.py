"""Finishing a sweep: reconcile what Tune saw with MLflow (a trial whose process died, or that a
scheduler stopped, is marked FAILED), then the summary, the report and the registry from one
SweepResult, and the exit code. A failing report or registration is reported, never fatal: the
trials' results are safe in MLflow already."""
from __future__ import annotations

import sys
from pathlib import Path

from . import tracking
from .config import Experiment
from .load import first_line
from .messages import SweepRef
from .plan import TrialSpec
from .redact import redact_text, redact_uri


def ui_hint(uri: str) -> str:
    """Where to look at the sweep: a tracking server's own URL, or the command that serves a local store."""
    if uri.startswith(("http://", "https://")):
        return redact_uri(uri)
    return f"mlflow ui --backend-store-uri {redact_uri(uri)} --host 127.0.0.1"


def finish_sweep(out: Path, state: dict, tune_results) -> int:
    """Mark stopped trials, print the summary, write the report, register; exit code.
    `tune_results`: Tune's ResultGrid, one Result per trial (its config: the trial's param_space)."""
    uri = state["tracking_uri"]
    runs = {t.spec.trial_id: t for t in tracking.patiently(tracking.read_trials, SweepRef(uri, state["parent_run_id"]))}
    failed = []
    for r in tune_results:
        tid = TrialSpec.from_dict(r.config["spec"]).trial_id
        run = runs.get(tid)
        running = run is not None and run.status == "RUNNING"
        if r.error is not None or (r.metrics or {}).get("failed"):  # raised, or ended without a result
            failed.append(tid)
            if running:  # its process was killed until no retry was left: nothing else marks the run
                tracking.fail_trial(uri, run.run_id, first_line(r.error) or "trial process lost")
        elif running:  # stopped early (ASHA) before its final log
            tracking.fail_trial(uri, run.run_id, "stopped early by the scheduler")
    from .record import load_sweep
    from .registry import register_sweep
    from .report import write_report
    from .summary import print_summary
    result = load_sweep(state, uri)   # computed once: the summary, report and registry share it
    summary = print_summary(result)
    # the trials' results are safe in MLflow already: a failing report or registration is
    # reported, never fatal (`mlora report` / `mlora register` redo them)
    try:
        print(f"report: {write_report(out, result)}")
    except Exception as e:  # noqa: BLE001
        print(f"report: failed ({type(e).__name__}: {redact_text(str(e))}); retry with `mlora report {out}`", file=sys.stderr)
    exp = Experiment.model_validate(state["experiment"])
    if exp.registry.enabled:
        try:
            print(f"registered: {register_sweep(out, result)}")
        except ValueError as e:
            print(f"registry: skipped ({redact_text(str(e))})")
        except Exception as e:  # noqa: BLE001
            print(f"registry: failed ({type(e).__name__}: {redact_text(str(e))}); retry with `mlora register {out}`",
                  file=sys.stderr)
    tracking.end_sweep_run(uri, state["parent_run_id"], len(failed), summary)
    print(f"\nMLflow UI: {ui_hint(uri)}", flush=True)
    if failed:
        print(f"{len(failed)} of {len(tune_results)} trials failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
