"""End-to-end sweeps on a real local Ray cluster with real MLflow (SQLite): no mocks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlora_core import aurac
from orchestrator import tracking

from .conftest import ROOT, cli_env, mlora, tiny_experiment, write_yaml

pytestmark = pytest.mark.slow


def sweep_state(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


def runs_by_trial(out: Path) -> dict[str, list]:
    state = sweep_state(out)
    by_trial: dict[str, list] = {}
    for r in tracking.trial_runs(state["tracking_uri"], state["parent_run_id"]):
        by_trial.setdefault(r.data.tags["mlora.trial_id"], []).append(r)
    return by_trial


def test_sweep_end_to_end_logs_one_nested_run_per_trial(tiny_sweep):
    out, _, proc = tiny_sweep
    assert "AURAC" in proc.stdout and "matryoshka-summed-diag-r4 [svd]" in proc.stdout  # the summary table
    assert "best Matryoshka: " in proc.stdout and "recommended: rank " in proc.stdout

    state = sweep_state(out)
    planned = [t["trial_id"] for t in state["trials"]]
    assert len(planned) == 5
    by_trial = runs_by_trial(out)
    assert sorted(by_trial) == sorted(planned)
    client = tracking.client(state["tracking_uri"])
    for trial in state["trials"]:
        (run,) = by_trial[trial["trial_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == state["parent_run_id"]
        m = run.data.metrics
        eval_ranks = [k for k in (1, 2, 4) if k <= trial["rank"]] if trial["method"] == "lora" else [1, 2, 4]
        accs = [m[f"acc_rank_{k}"] for k in eval_ranks]
        assert all(0 < a <= 1 for a in accs)  # eval-loss scoring: exp(-loss)
        assert all(f"eval_loss_rank_{k}" in m for k in eval_ranks)
        assert m["aurac"] == pytest.approx(aurac(eval_ranks, accs), rel=1e-9)
        for key in ("train_flops", "eval_flops", "train_tokens", "wall_seconds", "device_hours", "cost_usd"):
            assert m[key] > 0, key
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 6
        assert run.data.params["rank"] == str(trial["rank"])
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"rank_curve.json", "result.json", "adapter"} <= arts
        adapter = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
        assert "adapter/adapter_model.safetensors" in adapter and "adapter/adapter_config.json" in adapter
    parent = client.get_run(state["parent_run_id"])
    assert parent.info.status == "FINISHED"


def test_trial_with_two_ddp_workers(tiny_model_dir, platypus_files, tmp_path):
    out = tmp_path / "out"
    exp = tiny_experiment(tiny_model_dir, platypus_files, out, arms={"lora": {"ranks": [2]}},
                          resources={"workers_per_trial": 2, "cpus_per_worker": 1, "max_concurrent_trials": 1})
    proc = mlora("sweep", write_yaml(tmp_path / "exp.yaml", exp))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    by_trial = runs_by_trial(out)
    assert list(by_trial) == ["lora-r2-lr1e-02-s0"]
    (run,) = by_trial["lora-r2-lr1e-02-s0"]
    assert run.info.status == "FINISHED"
    assert run.data.params["workers"] == "2"
    assert run.data.metrics["devices"] == 2
    # each worker trained on its shard of every batch: 2 workers x 6 steps x 4 rows of tokens

    assert run.data.metrics["train_tokens"] > 0
    result = json.loads(Path(tracking.client(sweep_state(out)["tracking_uri"]).download_artifacts(
        run.info.run_id, "result.json", str(tmp_path))).read_text())
    assert result["world_size"] == 2, result.keys()



def test_interrupted_sweep_resumes_without_rerunning_or_duplicating(tiny_model_dir, platypus_files, tmp_path):
    out = tmp_path / "out"
    exp = tiny_experiment(tiny_model_dir, platypus_files, out, arms={"matryoshka": {}, "lora": {"ranks": [1, 4]}},
                          resources={"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1})
    cfg = write_yaml(tmp_path / "exp.yaml", exp)
    # run the sweep as a user would, and kill it (driver + local Ray) once the first trial finished
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(cfg)], cwd=ROOT,
                            env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    finished: list = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if (out / "sweep.json").is_file():
                finished = [r for rs in runs_by_trial(out).values() for r in rs if r.info.status == "FINISHED"]
                if finished:
                    break
            time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(finished) >= 1, "no trial finished before the deadline"
    before = {tid: [r.info for r in rs] for tid, rs in runs_by_trial(out).items()}
    assert len(before) < 3 or any(i[0].status != "FINISHED" for i in before.values())

    again = mlora("sweep", cfg)  # refuses: a sweep is already there
    assert again.returncode == 2 and "--resume" in again.stderr

    proc = mlora("sweep", cfg, "--resume")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = runs_by_trial(out)
    assert sorted(after) == sorted(t["trial_id"] for t in sweep_state(out)["trials"])
    for tid, runs in after.items():
        assert len(runs) == 1, f"{tid}: {len(runs)} MLflow runs"
        assert runs[0].info.status == "FINISHED"
        if tid in before:  # a resumed trial continues its own run
            assert runs[0].info.run_id == before[tid][0].run_id
    client = tracking.client(sweep_state(out)["tracking_uri"])
    for run in finished:  # finished trials were not run again
        (now,) = after[run.data.tags["mlora.trial_id"]]
        assert now.info.end_time == run.info.end_time
        assert len(client.get_metric_history(now.info.run_id, "train_loss")) == 6
