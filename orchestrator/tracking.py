"""MLflow tracking: the one module that writes and reads runs (registry.py registers models, the
pyfunc serves them). Parent run = sweep, nested run = trial.

A trial's run carries its whole identity, the plan's TrialSpec, as one versioned JSON tag
(`mlora.trial`); `read_trials` gives it back typed, with the run's status and metrics, so no
caller handles MLflow objects or parses params, run names or arm names. The tracking URI is passed
explicitly everywhere (ray#36257) and never through MLFLOW_RUN_ID (mlflow#15713). A trial's run
is found again by its `trial_id` tag under the parent, so a retried or resumed trial continues its
own run: never a duplicate.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from . import metrics as names
from .load import first_line
from .messages import SweepRef, TrialContext, TrialOutcome
from .plan import TrialSpec
from .redact import redact_text
from .results import Trial

# how long a trial waits for a store that is away (a tracking server restarting), beyond MLflow's
# own ~2 min of retries, before its trial fails (its result stays in its checkpoint: see worker.py)
PATIENCE_S = float(os.environ.get("MLORA_TRACKING_PATIENCE_S", "600"))
PARENT_TAG = "mlflow.parentRunId"
RECORD_TAG = "mlora.trial"      # TrialSpec.to_json()


def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def unreachable(e: BaseException) -> bool:
    """Whether `e` says the store is away (connection refused, a server's 5xx), not that a request was bad."""
    import requests
    text = str(e)
    return isinstance(e, requests.exceptions.ConnectionError) or (
        "API request to" in text and ("failed with exception" in text or "error code 5" in text))


def patiently(fn, *args, patience: float | None = None, log=print, **kwargs):
    """fn(*args, **kwargs), tried again every 10 s while the store is unreachable, for up to
    `patience` s (default PATIENCE_S); any other error, or the store still away then, raises."""
    deadline = time.monotonic() + (PATIENCE_S if patience is None else patience)
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not unreachable(e) or time.monotonic() > deadline:
                raise
            log(f"tracking store unreachable ({first_line(e)[:200]}); trying again in 10 s")
            time.sleep(10)


def existing_store(tracking_uri: str) -> str:
    """`tracking_uri`, after checking that a SQLite store it names exists: commands that only read
    a store (report, register, export) must not create an empty one where none was (MLflow would)."""
    if tracking_uri.startswith("sqlite:///"):
        if not Path(tracking_uri.removeprefix("sqlite:///")).is_file():   # sqlite:////abs or sqlite:///rel
            raise FileNotFoundError(f"no MLflow store at {tracking_uri} (no such file)")
    return tracking_uri


def _now_ms() -> int:
    return int(time.time() * 1000)


def experiment_id(c: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return c.create_experiment(name, artifact_location=artifact_location)


@dataclass(frozen=True)
class SweepRun:
    """A sweep's parent run, to create: where, under which MLflow experiment, named what."""
    tracking_uri: str
    experiment: str
    name: str
    params: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    artifact_location: str | None = None   # the experiment's, when it is new


def start_sweep_run(run: SweepRun) -> tuple[str, str]:
    """(experiment id, parent run id)."""
    c = client(run.tracking_uri)
    exp_id = experiment_id(c, run.experiment, run.artifact_location)
    created = c.create_run(exp_id, run_name=run.name, tags={**run.tags, "mlora.kind": "sweep"})
    _log_params(c, created.info.run_id, run.params)
    return exp_id, created.info.run_id


def log_config(tracking_uri: str, run_id: str, config: dict) -> None:
    """`config` (plan.resolved_config: plain data) as the run's artifact config.yaml, whole: what a
    run ran with, never cut to fit a tag or param."""
    import yaml
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "config.yaml")
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        client(tracking_uri).log_artifact(run_id, str(path))


def _log_params(c: MlflowClient, run_id: str, params: dict) -> None:
    """Params are logged once; a resumed run keeps the values it has (MLflow forbids changes)."""
    have = c.get_run(run_id).data.params
    new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in have]
    for i in range(0, len(new), 100):
        c.log_batch(run_id, params=new[i:i + 100])


def trial_run(ctx: TrialContext, spec: TrialSpec, params: dict, tags: dict) -> str:
    """Create the trial's nested run, or continue the one it already has."""
    c, trial_id, exp_id, parent_run_id = client(ctx.sweep.tracking_uri), spec.trial_id, ctx.experiment_id, \
        ctx.sweep.parent_run_id
    found = c.search_runs([exp_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' "
                                                  f"and tags.`mlora.trial_id` = '{trial_id}'")
    if found and found[0].info.status == "FINISHED":  # nothing to continue: leave it untouched
        return found[0].info.run_id
    if found:
        run_id = found[0].info.run_id
        c.update_run(run_id, status="RUNNING")
        c.set_tag(run_id, "mlora.restarts", str(int(found[0].data.tags.get("mlora.restarts", "0")) + 1))
    else:
        run = c.create_run(exp_id, run_name=trial_id, tags={PARENT_TAG: parent_run_id, "mlora.trial_id": trial_id,
                                                            RECORD_TAG: spec.to_json(), "mlora.kind": "trial", **tags})
        run_id = run.info.run_id
    _log_params(c, run_id, params)
    for k, v in tags.items():
        c.set_tag(run_id, k, str(v))
    return run_id


def _last_step(c: MlflowClient, run_id: str, key: str = "train_loss") -> int:
    return max((m.step for m in c.get_metric_history(run_id, key)), default=0)


class LiveMetrics:
    """A trial's training metrics into its MLflow run while it trains, as MLflow users expect to
    watch them: `log(metrics)` (every step, from the training loop) only appends to a buffer; a
    background thread sends it as one log_batch every `every` steps or `seconds`, whichever comes
    first. A store that is away (a server restarting) costs training nothing: the batch stays
    buffered and is sent again later. A resumed run starts after the last step its run already
    has, so no step is logged twice. What is still unsent at the end the final log fills
    (log_trial_result logs the loss of every step the run lacks)."""

    KEYS = ("train_loss", "lr", "tokens_per_s", "val_loss")

    def __init__(self, tracking_uri: str, run_id: str, every: int = 100, seconds: float = 30.0):
        self._client, self._run_id, self._every, self._seconds = client(tracking_uri), run_id, every, seconds
        self._buffer: list[Metric] = []
        self._lock, self._wake, self._stop = threading.Lock(), threading.Event(), threading.Event()
        self._after: int | None = None           # the last step the run had when this started
        self.sent = 0
        self._thread = threading.Thread(target=self._loop, name="mlora-live-metrics", daemon=True)
        self._thread.start()

    def log(self, metrics: dict) -> None:
        ts, step = _now_ms(), int(metrics["step"])
        with self._lock:
            self._buffer += [Metric(k, float(metrics[k]), ts, step) for k in self.KEYS
                             if k in metrics and math.isfinite(metrics[k])]
            # every `every` steps: the buffer holds the steps logged since the last send (and what failed)
            due = step - self._buffer[0].step + 1 >= self._every if self._buffer else False
        if due:
            self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._seconds)
            self._wake.clear()
            if not self._flush():   # the store is away: not again before `seconds` (no busy retrying)
                self._stop.wait(self._seconds)

    def _flush(self) -> bool:
        try:
            if self._after is None:
                self._after = _last_step(self._client, self._run_id)
            with self._lock:
                batch, self._buffer = [m for m in self._buffer if m.step > self._after], []
            for i in range(0, len(batch), 1000):
                try:
                    self._client.log_batch(self._run_id, metrics=batch[i:i + 1000])
                except Exception:
                    with self._lock:   # keep what was not sent, in order, ahead of what came since
                        self._buffer[:0] = batch[i:]
                    raise
                self.sent += len(batch[i:i + 1000])
            return True
        except Exception:  # noqa: BLE001  the store is away: try again at the next flush
            return False

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and send what is left, waiting at most `timeout` s for the store."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._flush()


class SystemMetrics:
    """MLflow's system metrics (CPU, memory, disk, network; GPU with nvidia-ml-py) on a trial's run
    while it trains, from the process that trains: `system/...` metrics every
    MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL s (MLflow's default 10). Never fails training."""

    def __init__(self, tracking_uri: str, run_id: str, resumed: bool):
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
            self._monitor = SystemMetricsMonitor(run_id, resume_logging=resumed, tracking_uri=tracking_uri)
            self._monitor.start()
        except Exception:  # noqa: BLE001  e.g. psutil missing or the store away: training goes on
            self._monitor = None

    def close(self) -> None:
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception:  # noqa: BLE001
                pass


def log_trial_result(tracking_uri: str, run_id: str, outcome: TrialOutcome, adapter_dir: str | None) -> None:
    """A finished trial's outcome: per-rank accuracy and AURAC under every rule, cost, the loss of
    every step the run does not have yet (LiveMetrics sent the others), adapter + rank curve +
    result artifacts (metrics.py names them); then FINISHED."""
    result = outcome.result
    c = client(tracking_uri)
    ts = _now_ms()
    logged = _last_step(c, run_id)
    metrics = [Metric("train_loss", v, ts, i + 1) for i, v in enumerate(result["losses"])
               if i + 1 > logged and math.isfinite(v)]
    metrics += [Metric(k, v, ts, 0) for k, v in names.trial_metrics(result).items()]
    for i in range(0, len(metrics), 1000):
        c.log_batch(run_id, metrics=metrics[i:i + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "rank_curve.json").write_text(json.dumps(result.get("curves") or result["curve"], indent=2))
        Path(tmp, "result.json").write_text(json.dumps({**result, "metrics": outcome.progress}, indent=2))
        c.log_artifact(run_id, str(Path(tmp, "rank_curve.json")))
        c.log_artifact(run_id, str(Path(tmp, "result.json")))
    if adapter_dir and Path(adapter_dir).is_dir():
        c.log_artifacts(run_id, adapter_dir, artifact_path="adapter")
    c.set_tag(run_id, "mlora.status", "finished")
    c.set_terminated(run_id, status="FINISHED")


def fail_trial(tracking_uri: str, run_id: str, reason: str) -> None:
    c = client(tracking_uri)
    c.set_tag(run_id, "mlora.status", "failed")
    c.set_tag(run_id, "mlora.error", redact_text(reason)[:4000])   # MLflow errors quote the URI
    c.set_terminated(run_id, status="FAILED")


def end_sweep_run(tracking_uri: str, run_id: str, failed: int, summary: dict | None = None) -> None:
    c = client(tracking_uri)
    if summary:
        ts = _now_ms()
        c.log_batch(run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in summary.items()
                                     if isinstance(v, (int, float)) and math.isfinite(v)])
    c.set_tag(run_id, "mlora.failed_trials", str(failed))
    c.set_terminated(run_id, status="FINISHED" if not failed else "FAILED")


def trial_runs(tracking_uri: str, parent_run_id: str) -> list:
    """Every nested trial run of a sweep (mlflow Run objects)."""
    c = client(tracking_uri)
    parent = c.get_run(parent_run_id)
    return c.search_runs([parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                         max_results=10_000)


def read_trials(sweep: SweepRef, rules: tuple[str, ...] = ()) -> list[Trial]:
    """Every trial of a sweep, typed: the one reader of trial runs; its curves (test and validation)
    read by name under `rules` (the sweep's, in its order; none: no curves, metrics only)."""
    out = []
    for r in trial_runs(sweep.tracking_uri, sweep.parent_run_id):
        if RECORD_TAG in r.data.tags:
            spec, m = TrialSpec.from_json(r.data.tags[RECORD_TAG]), dict(r.data.metrics)
            out.append(Trial(spec, r.info.run_id, r.info.status, r.data.tags.get("mlora.error"),
                             names.curves(m, rules, spec.rank), m, names.curves(m, rules, spec.rank, "val")))
    return out


def finished_metrics(tracking_uri: str, run_id: str) -> dict[str, float] | None:
    """A run's metrics if it is FINISHED, else None."""
    run = client(tracking_uri).get_run(run_id)
    return dict(run.data.metrics) if run.info.status == "FINISHED" else None


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client(tracking_uri).get_metric_history(run_id, key)]


__all__ = ["RECORD_TAG", "LiveMetrics", "SweepRun", "SystemMetrics", "client", "end_sweep_run", "existing_store",
           "fail_trial", "finished_metrics", "log_config", "log_trial_result", "metric_history", "patiently", "read_trials",
           "start_sweep_run", "trial_run", "trial_runs", "unreachable"]
