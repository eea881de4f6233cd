"""A sweep's record: OUTPUT_DIR/sweep.json (its MLflow store and parent run, the resolved
experiment, the planned trials), written once when the sweep starts, and the SweepResult it
points at, read back from MLflow through tracking.read_trials.

Layout of an output dir: sweep.json, experiment.yaml, mlflow.db + mlartifacts/ (default
tracking), ray/ (Tune + Train storage, checkpoints), trials/ (worker scratch), report/.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from mlora_core.io import read_json, write_json

from . import tracking
from .config import Experiment
from .messages import SweepRef
from .plan import TrialSpec
from .redact import MASK, redact_state, redact_uri
from .results import SweepResult, aggregate

SWEEP_FILE = "sweep.json"


# what a sweep (or `mlora train` into its output dir) creates there: --overwrite removes only these
SWEEP_ENTRIES = frozenset({SWEEP_FILE, "experiment.yaml", "mlflow.db", "mlflow.db-journal", "mlflow.db-wal",
                           "mlflow.db-shm", "mlartifacts", "ray", "trials", "report", "cache", "train", ".write-test"})


def foreign_entries(out: Path) -> list[str]:
    """What `out` holds that no sweep created (an output dir of `.` holds a whole checkout)."""
    return sorted(p.name for p in out.iterdir() if p.name not in SWEEP_ENTRIES) if out.is_dir() else []


def prepare_output_dir(out: Path, resume: bool, overwrite: bool) -> tuple[dict | None, Path | None]:
    """(the existing sweep.json when resuming, where --overwrite moved the old sweep aside). Refuses
    to clobber a sweep by accident (ray#35812) and an output dir holding files no sweep made; the old
    sweep is only moved aside here: discard_old deletes it once the new sweep.json is written."""
    existing = (out / SWEEP_FILE).is_file()
    if resume:
        if not existing:
            raise ValueError(f"--resume: {out} holds no sweep to resume (no {SWEEP_FILE})")
        return read_json(out / SWEEP_FILE), None
    if existing and not overwrite:
        raise ValueError(f"{out} already holds a sweep; pass --resume to continue it or --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output dir {out} is a file")
    if foreign := foreign_entries(out):
        raise ValueError(f"output dir {out} holds files no sweep created ({', '.join(foreign[:5])}"
                         f"{', ...' if len(foreign) > 5 else ''}): pick an empty or new directory")
    aside = None
    if existing:   # --overwrite: kept beside it until the new sweep is recorded
        aside = out.with_name(f".{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        out.rename(aside)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"\0" * 1024 * 1024)  # 1 MiB: catches read-only and full disks before training
        probe.unlink()
    except OSError as e:
        restore_old(out, aside)
        raise ValueError(f"output dir {out} is not writable: {e.strerror or e}") from None
    return None, aside


def discard_old(aside: Path | None) -> None:
    """Delete the sweep --overwrite moved aside: called once the new sweep.json is written."""
    if aside is not None and aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)


def restore_old(out: Path, aside: Path | None) -> None:
    """Put the sweep --overwrite moved aside back, when the new one failed before its sweep.json."""
    if aside is None or not aside.is_dir() or (out / SWEEP_FILE).is_file():
        return
    if out.exists():
        shutil.rmtree(out)
    aside.rename(out)


def tracking_uri_of(state: dict, explicit: str | None = None) -> str:
    """The store a recorded sweep is read from: an explicit URI (--tracking-uri, MLFLOW_TRACKING_URI)
    over the one in sweep.json, which holds it without its password (redact.py)."""
    uri = explicit or state["tracking_uri"]
    if MASK in uri and not explicit:
        raise ValueError(f"{SWEEP_FILE} holds the tracking URI without its secret ({uri}): pass --tracking-uri "
                         "or set MLFLOW_TRACKING_URI (with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)")
    return uri


@dataclass(frozen=True)
class NewSweep:
    """Where a new sweep is recorded and how it was started."""
    out: Path                     # its output dir
    tracking_uri: str
    config_path: str | None       # the YAML it was started from (copied to experiment.yaml)
    submission_id: str            # the `ray job submit` id, or ''
    default_store: bool           # the output dir's own SQLite store: its artifacts go beside it


def start_record(exp: Experiment, trials: list[TrialSpec], new: NewSweep) -> dict:
    """A new sweep: its MLflow parent run (with the resolved experiment as config.yaml), then
    sweep.json (what --resume reads back)."""
    resolved = redact_state({"experiment": exp.model_dump(mode="json")})["experiment"]   # no password in any file
    exp_id, parent = tracking.start_sweep_run(tracking.SweepRun(
        new.tracking_uri, exp.tracking.experiment or exp.name, f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
        params={"model": exp.model, "trials": len(trials), "config": new.config_path or "-"},
        tags={"ray.submission_id": new.submission_id},
        artifact_location=(new.out / "mlartifacts").as_uri() if new.default_store else None))
    tracking.log_config(new.tracking_uri, parent, {"experiment": resolved})
    state = {"tracking_uri": new.tracking_uri, "experiment_id": exp_id, "parent_run_id": parent,
             "experiment": resolved, "trials": [t.as_dict() for t in trials]}
    write_json(new.out / SWEEP_FILE, redact_state(state))
    if new.config_path:
        text = Path(new.config_path).read_text()
        (new.out / "experiment.yaml").write_text(
            text.replace(exp.tracking.uri, redact_uri(exp.tracking.uri)) if exp.tracking.uri else text)
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
    sweep = SweepRef(tracking.existing_store(tracking_uri_of(state, tracking_uri)), state["parent_run_id"])
    rules = tuple(exp.eval.rules)
    return aggregate(tracking.read_trials(sweep, rules), exp.registry.tolerance, rules, sweep)


def load_output_dir(output_dir, tracking_uri: str | None = None) -> tuple[dict, SweepResult]:
    """(sweep.json, SweepResult) of a sweep's output dir."""
    state = read_sweep_state(output_dir)
    return state, load_sweep(state, tracking_uri)
