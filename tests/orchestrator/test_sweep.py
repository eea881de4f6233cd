"""End-to-end sweeps on a real local Ray cluster with real MLflow (SQLite): no mocks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mlora_core import aurac
from orchestrator import tracking

from .conftest import kill_when, mlora, runs_by_trial, start_sweep, sweep_log_tail, tiny_experiment, write_yaml

pytestmark = pytest.mark.slow


def sweep_state(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


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

    # one worker per trial (execution: auto): each trial trained in its own Tune trial process,
    # which Ray reused for the next trial (4 trials, 2 at a time), with no Ray Train run at all
    pids = {(out / "trials" / tid / "worker-0.pid").read_text() for tid in planned}
    assert 1 <= len(pids) < len(planned), pids
    assert not (out / "ray" / "train").exists()
    # its checkpoints went to the sweep's storage path, as safetensors + JSON only (never a pickle)
    stored = list((out / "ray" / "tune").glob("*/checkpoint_*"))
    assert len(stored) >= len(planned)
    files = [f for c in stored for f in c.rglob("*") if f.is_file()]
    assert {f.suffix for f in files} == {".safetensors", ".json"}, sorted({f.name for f in files})


def test_trials_sharing_a_process_equal_direct_runs(tiny_sweep, tmp_path):
    """A trial that trained in a process an earlier trial had used (reuse_actors) inherits
    nothing from it: its loss curve and rank curve equal a fresh direct run's, exactly."""
    from mlora_core.run import run
    from orchestrator.config import Experiment
    from orchestrator.plan import TrialSpec, run_config

    out, state, _ = tiny_sweep
    pid = lambda tid: (out / "trials" / tid / "worker-0.pid").read_text()  # noqa: E731
    by_start = sorted(((r.info.start_time, tid) for tid, (r,) in runs_by_trial(out).items()))
    first_in_process = {}
    for _, tid in by_start:
        first_in_process.setdefault(pid(tid), tid)
    later = [tid for _, tid in by_start if first_in_process[pid(tid)] != tid]
    assert later, "no trial reused a process"
    exp = Experiment.model_validate(state["experiment"])
    specs = {t["trial_id"]: TrialSpec.from_dict(t) for t in state["trials"]}
    threads = torch.get_num_threads()  # run() sets the trial's thread count in this process
    try:
        directs = {tid: run(run_config(exp, specs[tid]), tmp_path / tid, log=lambda *_: None) for tid in later}
    finally:
        torch.set_num_threads(threads)
    for tid, direct in directs.items():
        swept = json.loads((out / "trials" / tid / "result.json").read_text())
        assert swept["losses"] == list(direct.losses), tid
        assert swept["curve"]["accuracy"] == list(direct.curve.accuracy), tid


@pytest.mark.parametrize("workers", [1, 2], ids=["tune-path", "train-path-ddp"])
def test_interrupted_sweep_resumes_without_rerunning_or_duplicating(workers, tiny_model_dir, platypus_files,
                                                                     tmp_path):
    """Both paths (execution: auto): one worker per trial trains in the Tune trial's process; two
    DDP workers per trial train as a Ray Train worker group (the DDP checks are at the end)."""
    out = tmp_path / "out"
    # DDP: two trials (a Ray Train worker group starts in ~25 s on 2 cores: one finishes before the
    # kill, one is resumed); one worker: three, the Matryoshka arm among them
    arms = {"matryoshka": {}, "lora": {"ranks": [1, 4]}} if workers == 1 else {"lora": {"ranks": [1, 4]}}
    exp = tiny_experiment(tiny_model_dir, platypus_files, out, arms=arms,
                          resources={"workers_per_trial": workers, "cpus_per_worker": 1, "max_concurrent_trials": 1})
    cfg = write_yaml(tmp_path / "exp.yaml", exp)

    def first_finished():
        if (out / "sweep.json").is_file():
            return [r for rs in runs_by_trial(out).values() for r in rs if r.info.status == "FINISHED"]
    # run the sweep as a user would, and kill it (driver + local Ray) once the first trial finished
    proc = start_sweep(cfg)
    finished = kill_when(proc, first_finished, timeout=300, poll=1)
    assert finished, (f"no trial finished (the sweep's exit code: {proc.returncode}; -9 = killed at the deadline)\n"
                      + sweep_log_tail(cfg))
    before = {tid: [r.info for r in rs] for tid, rs in runs_by_trial(out).items()}
    assert len(before) < len(sweep_state(out)["trials"]) or any(i[0].status != "FINISHED" for i in before.values())

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

    trial_dirs = [out / "trials" / tid for tid in after]
    if workers == 1:  # trained in the Tune trial's own process; checkpoints in Tune's storage
        assert not (out / "ray" / "train").exists() and any((out / "ray" / "tune").glob("*/checkpoint_*"))
        assert all(not (d / "worker-1.pid").exists() for d in trial_dirs)
        return
    # DDP: a Ray Train worker group of two processes per trial, each on its shard of every batch
    for tid, (run,) in after.items():
        assert run.data.params["workers"] == "2" and run.data.metrics["devices"] == 2
        trial_dir = out / "trials" / tid
        assert json.loads((trial_dir / "result.json").read_text())["world_size"] == 2
        assert (trial_dir / "worker-0.pid").read_text() != (trial_dir / "worker-1.pid").read_text()
        assert any((out / "ray" / "train" / tid).glob("checkpoint_*"))
