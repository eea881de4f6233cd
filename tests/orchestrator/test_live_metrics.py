"""Live metrics: a trial's training loss, lr and throughput reach its MLflow run while it trains,
from a background thread that never blocks training, with no step logged twice on resume; and
MLflow's system metrics on every trial run. Real SQLite MLflow and a real local Ray sweep."""
from __future__ import annotations

import socket
import time

import pytest

from orchestrator import tracking
from orchestrator.messages import TrialOutcome

from .conftest import cli_env, runs_by_trial, sweep_log_tail, tiny_experiment, write_yaml

STEPS = 1000   # a first batch goes out at ~step 100: ~10x that leaves the test seconds to see it live


def _history(uri: str, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in tracking.client(uri).get_metric_history(run_id, key))


def test_live_metrics_batch_in_the_background_and_a_resumed_run_logs_no_step_twice(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, parent = tracking.start_sweep_run(tracking.SweepRun(uri, "live", "sweep"))
    run_id = tracking.client(uri).create_run(tracking.client(uri).get_run(parent).info.experiment_id).info.run_id
    live = tracking.LiveMetrics(uri, run_id, every=20, seconds=60)
    for step in range(1, 121):
        live.log({"step": step, "train_loss": 1 / step, "lr": 1e-3, "tokens_per_s": 100.0, "tokens": 5})
    deadline = time.time() + 30
    while not _history(uri, run_id, "train_loss") and time.time() < deadline:
        time.sleep(0.2)   # sent by the thread, before close(): 120 steps >= every
    assert _history(uri, run_id, "train_loss"), "nothing arrived while 'training'"
    live.close()
    assert _history(uri, run_id, "train_loss") == list(range(1, 121))
    assert _history(uri, run_id, "lr") == list(range(1, 121)) and not _history(uri, run_id, "tokens")
    # resumed from a checkpoint at step 80: steps 81..120 come again, then new ones; each is kept once
    again = tracking.LiveMetrics(uri, run_id, every=20, seconds=60)
    for step in range(81, 151):
        again.log({"step": step, "train_loss": 1 / step, "lr": 1e-3})
    again.close()
    assert _history(uri, run_id, "train_loss") == list(range(1, 151))
    # the final log fills only what the run lacks
    tracking.log_trial_result(uri, run_id, TrialOutcome({"losses": [1 / s for s in range(1, 161)], "curve": {
        "ranks": [1], "accuracy": [0.5], "eval_loss": [1.0], "aurac": 0.5, "aurac_log2": 0.5}, "cost": {}}), None)
    assert _history(uri, run_id, "train_loss") == list(range(1, 161))


def test_a_store_that_is_away_never_blocks_training():
    with socket.socket() as s:   # a port nothing listens on: every request is refused, then retried by MLflow
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    live = tracking.LiveMetrics(f"http://127.0.0.1:{port}", "0" * 32, every=10, seconds=0.1)
    t0 = time.time()
    for step in range(1, 2001):
        live.log({"step": step, "train_loss": 0.5})
    logged = time.time() - t0
    live.close(timeout=1)
    assert logged < 5 and time.time() - t0 < 10, (logged, time.time() - t0)
    assert live.sent == 0


@pytest.mark.slow
def test_a_running_trial_shows_its_loss_in_mlflow_and_every_trial_has_system_metrics(tiny_model_dir, platypus_files,
                                                                                      tmp_path):
    import subprocess
    import sys

    from .conftest import ROOT
    out = tmp_path / "out"
    cfg = write_yaml(tmp_path / "exp.yaml", tiny_experiment(
        tiny_model_dir, platypus_files, out, arms={"lora": {"ranks": [4]}},
        training={"steps": STEPS, "batch_size": 4, "max_length": 96, "warmup_steps": 1, "checkpoint_every": 500}))
    env = cli_env(MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1")
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(cfg)], cwd=ROOT, env=env,
                            stdout=open(tmp_path / "exp.sweep.log", "w"), stderr=subprocess.STDOUT)
    seen_running = None
    try:
        deadline = time.time() + 420
        while proc.poll() is None and time.time() < deadline and seen_running is None:
            if (out / "sweep.json").is_file():
                for (run,) in runs_by_trial(out).values():
                    steps = _history(f"sqlite:///{out / 'mlflow.db'}", run.info.run_id, "train_loss")
                    if run.info.status == "RUNNING" and steps:
                        seen_running = steps
            time.sleep(1)
        assert proc.wait(timeout=420) == 0, sweep_log_tail(cfg)
    finally:
        proc.kill()
    assert seen_running and max(seen_running) < STEPS, "the loss reached MLflow only when the trial ended"
    ((run,),) = runs_by_trial(out).values()
    uri = f"sqlite:///{out / 'mlflow.db'}"
    assert _history(uri, run.info.run_id, "train_loss") == list(range(1, STEPS + 1))
    assert _history(uri, run.info.run_id, "tokens_per_s") and _history(uri, run.info.run_id, "lr")
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), sorted(run.data.metrics)
