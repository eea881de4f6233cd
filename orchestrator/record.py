"""A sweep's record: OUTPUT_DIR/sweep.json (its MLflow store and parent run, the resolved
experiment, the planned trials), written once when the sweep starts, and the SweepResult it
points at, read back from MLflow through tracking.read_trials.

Layout of an output dir: sweep.json, experiment.yaml, mlflow.db + mlartifacts/ (default
tracking), ray/ (Tune + Train storage, checkpoints), trials/ (worker scratch), report/.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from mlora_core.io import read_json, write_json

from . import metrics, tracking
from .config import Experiment
from .plan import TrialSpec
from .results import SweepResult, Trial, aggregate

SWEEP_FILE = "sweep.json"


def prepare_output_dir(out: Path, resume: bool, overwrite: bool) -> dict | None:
    """The existing sweep.json when resuming; refuses to clobber a sweep by accident (ray#35812)."""
    existing = (out / SWEEP_FILE).is_file()
    if resume:
        if not existing:
            raise ValueError(f"--resume: {out} holds no sweep to resume (no {SWEEP_FILE})")
        return read_json(out / SWEEP_FILE)
    if existing and not overwrite:
        raise ValueError(f"{out} already holds a sweep; pass --resume to continue it or --overwrite to replace it")
    if existing and overwrite:
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"\0" * 1024 * 1024)  # 1 MiB: catches read-only and full disks before training
        probe.unlink()
    except OSError as e:
        raise ValueError(f"output dir {out} is not writable: {e.strerror or e}") from None
    return None


def start_record(exp: Experiment, out: Path, uri: str, trials: list[TrialSpec], config_path: str | None,
                 job: str, default_store: bool) -> dict:
    """A new sweep: its MLflow parent run, then sweep.json (what --resume reads back)."""
    exp_id, parent = tracking.start_sweep_run(
        uri, exp.tracking.experiment or exp.name, f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
        params={"model": exp.model, "trials": len(trials), "config": config_path or "-"},
        tags={"mlora.config": json.dumps(exp.model_dump(mode="json"))[:5000], "ray.submission_id": job},
        artifact_location=(out / "mlartifacts").as_uri() if default_store else None)
    state = {"tracking_uri": uri, "experiment_id": exp_id, "parent_run_id": parent,
             "experiment": exp.model_dump(mode="json"), "trials": [t.as_dict() for t in trials]}
    write_json(out / SWEEP_FILE, state)
    if config_path:
        shutil.copy2(config_path, out / "experiment.yaml")
    return state


def read_sweep_state(output_dir) -> dict:
    """OUTPUT_DIR/sweep.json (tracking URI, parent run, resolved experiment), or a clear error."""
    path = Path(output_dir) / SWEEP_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{output_dir} holds no sweep (no {SWEEP_FILE})")
    return read_json(path)


def load_sweep(state: dict, tracking_uri: str | None = None) -> SweepResult:
    """The SweepResult of a sweep's record: its trials from MLflow, its rules (their order: the
    primary first) and tolerance from the record, never from the order a store returns keys in."""
    exp = Experiment.model_validate(state["experiment"])
    uri = tracking.existing_store(tracking_uri or state["tracking_uri"])
    rules = tuple(exp.eval.rules)
    trials = [Trial(t.spec, t.run_id, t.status, t.error, metrics.curves(t.metrics, rules, t.spec.rank), t.metrics,
                    metrics.curves(t.metrics, rules, t.spec.rank, "val"))
              for t in tracking.read_trials(uri, state["parent_run_id"])]
    return aggregate(trials, exp.registry.tolerance, uri, state["parent_run_id"], rules)


def load_output_dir(output_dir, tracking_uri: str | None = None) -> tuple[dict, SweepResult]:
    """(sweep.json, SweepResult) of a sweep's output dir."""
    state = read_sweep_state(output_dir)
    return state, load_sweep(state, tracking_uri)
