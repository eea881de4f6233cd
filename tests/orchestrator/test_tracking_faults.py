"""The team's deployment under faults (docs/reliability.md): a real `mlflow server` on a real
PostgreSQL, SIGKILLed and restarted while trials train; PostgreSQL restarted under it; the server
away when a trial finishes training, for longer than every retry. No mock: the services are real
processes, killed by their own pids."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from orchestrator import tracking
from orchestrator.messages import SweepRef

from .conftest import ROOT, cli_env, mlora, sweep_log_tail, tiny_experiment, write_yaml

pytestmark = pytest.mark.slow


def _sweep(cfg, *args, **env):
    log = open(cfg.with_suffix(".sweep.log"), "a")
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(cfg), *args], cwd=ROOT,
                            env=cli_env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _trials(uri: str, out) -> list:
    state = json.loads((out / "sweep.json").read_text())
    return tracking.read_trials(SweepRef(uri, state["parent_run_id"]))


def _wait(what, timeout: float, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = what()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            return what()
        time.sleep(0.5)
    return None


def _losses(uri: str, run_id: str) -> list[int]:
    return sorted(m.step for m in tracking.client(uri).get_metric_history(run_id, "train_loss"))


def test_server_killed_and_restarted_then_postgres_restarted_mid_sweep_loses_nothing(
        own_mlflow_server, postgres, tiny_model_dir, platypus_files, tmp_path):
    server, out, steps = own_mlflow_server, tmp_path / "out", 300
    cfg = write_yaml(tmp_path / "exp.yaml", tiny_experiment(
        tiny_model_dir, platypus_files, out, arms={"lora": {"ranks": [1, 2, 4]}}, tracking={"uri": server.url},
        training={"steps": steps, "batch_size": 4, "max_length": 96, "warmup_steps": 1, "checkpoint_every": 100}))
    proc = _sweep(cfg)
    try:
        running = lambda: (out / "sweep.json").is_file() and any(t.status == "RUNNING" for t in _trials(server.url, out))  # noqa: E731
        assert _wait(running, 300, proc), sweep_log_tail(cfg)
        server.kill()                       # a crash of the tracking server while trials train
        time.sleep(30)
        server.start()                      # back ~30 s later, on the same port and database
        finished = lambda: any(t.status == "FINISHED" for t in _trials(server.url, out))  # noqa: E731
        assert _wait(finished, 300, proc), sweep_log_tail(cfg)
        # PostgreSQL restarted under the server while the third trial trains (it starts as the first ends)
        assert proc.poll() is None, "the sweep ended before PostgreSQL could be restarted under it"
        postgres.restart()
        assert proc.wait(timeout=600) == 0, sweep_log_tail(cfg)
    finally:
        if proc.poll() is None:
            proc.kill()
    trials = _trials(server.url, out)
    assert sorted(t.spec.trial_id for t in trials) == ["lora-r1-lr1e-02-s0", "lora-r2-lr1e-02-s0", "lora-r4-lr1e-02-s0"]
    client = tracking.client(server.url)
    for t in trials:   # one run each, finished with all its metrics and artifacts
        assert t.status == "FINISHED" and t.metrics["aurac"] > 0 and t.metrics["device_hours"] > 0
        assert _losses(server.url, t.run_id) == list(range(1, steps + 1))
        assert {"rank_curve.json", "result.json", "adapter"} <= {a.path for a in client.list_artifacts(t.run_id)}
        assert client.get_run(t.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    assert mlora("report", out).returncode == 0


def test_server_away_when_a_trial_finishes_keeps_its_result_and_never_trains_it_again(
        own_mlflow_server, tiny_model_dir, platypus_files, tmp_path):
    server, out, steps = own_mlflow_server, tmp_path / "out", 150
    cfg = write_yaml(tmp_path / "exp.yaml", tiny_experiment(
        tiny_model_dir, platypus_files, out, arms={"lora": {"ranks": [4]}}, tracking={"uri": server.url},
        training={"steps": steps, "batch_size": 4, "max_length": 96, "warmup_steps": 1, "checkpoint_every": 50}))
    # MLflow's client gives up at once and the trial waits 3 s (not ~2 + 10 min): the outage outlasts both
    impatient = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
                 "MLORA_TRACKING_PATIENCE_S": "3"}
    trial_dir = out / "trials" / "lora-r4-lr1e-02-s0"
    proc = _sweep(cfg, **impatient)
    try:
        assert _wait(lambda: (trial_dir / "checkpoints" / "step_000050").is_dir(), 300, proc), sweep_log_tail(cfg)
        server.kill()                       # down from mid-training until after the sweep gave up
        assert proc.wait(timeout=600) == 1, sweep_log_tail(cfg)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "the tracking store is unreachable" in sweep_log_tail(cfg)
    result = trial_dir / "result.json"      # written once, when the trial finished training and scoring
    trained = result.stat().st_mtime_ns, json.loads(result.read_text())["losses"]
    assert len(trained[1]) == steps

    server.start()
    proc = _sweep(cfg, "--resume")
    assert proc.wait(timeout=600) == 0, sweep_log_tail(cfg)
    (t,) = _trials(server.url, out)
    assert t.status == "FINISHED" and t.metrics["aurac"] > 0
    assert _losses(server.url, t.run_id) == list(range(1, steps + 1))       # every step, once
    assert (result.stat().st_mtime_ns, json.loads(result.read_text())["losses"]) == trained   # not run again
    assert {"adapter", "rank_curve.json"} <= {a.path for a in tracking.client(server.url).list_artifacts(t.run_id)}
