"""Where a trial trains (`resources.execution`) and the one worker_loop both paths share, in-process.

The sweeps themselves (real Ray, real MLflow) are in test_sweep.py / test_reliability.py; here
worker_loop runs against a session that records what it is handed, the same three members as
TrainSession and TuneSession, so reporting, checkpoints and failures are checked in seconds.
"""
from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path

import pytest
import torch

from mlora_core.run import RunConfig
from orchestrator.cli import main
from orchestrator.load import parse_experiment
from orchestrator.messages import TrialOutcome, WorkerConfig
from orchestrator.plan import plan, run_config
from orchestrator.sweep import execution, trial_resources
from orchestrator.worker import fresh_trial_state, worker_loop

from .conftest import tiny_experiment, write_yaml


class RecordingSession:
    """Records each report; a reported checkpoint dir is copied (worker_loop deletes its temp dirs)."""
    world_rank = 0

    def __init__(self, keep: Path, checkpoint=None):
        self.keep, self.checkpoint, self.reports = keep, checkpoint, []

    def report(self, metrics: dict, checkpoint_dir: Path | None = None) -> None:
        kept = None
        if checkpoint_dir is not None:
            kept = Path(shutil.copytree(checkpoint_dir, self.keep / f"report-{len(self.reports)}"))
        self.reports.append((metrics, kept))

    def get_checkpoint(self):
        return self.checkpoint


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()  # run() sets the trial's thread count in this process
    yield
    torch.set_num_threads(threads)


def _cfg(tiny_model_dir, platypus_files, tmp_path, **overrides) -> WorkerConfig:
    exp = parse_experiment(tiny_experiment(tiny_model_dir, platypus_files, tmp_path / "out",
                                           arms={"lora": {"ranks": [2]}}, **overrides))
    return WorkerConfig(run_config(exp, plan(exp)[0]), str(tmp_path / "trial"))


@pytest.mark.parametrize("res, path, request_", [
    ({}, "tune", {"CPU": 1}),
    ({"cpus_per_worker": 2, "gpus_per_worker": 1}, "tune", {"CPU": 2, "GPU": 1}),
    ({"workers_per_trial": 2}, "train", {"CPU": 0, "memory": 1}),
    ({"execution": "train"}, "train", {"CPU": 0, "memory": 1}),
    ({"execution": "tune", "cpus_per_worker": 4}, "tune", {"CPU": 4}),
])
def test_execution_picks_the_path_and_what_the_trial_holds(res, path, request_):
    exp = parse_experiment({"name": "x", "resources": res})
    assert execution(exp.resources) == path
    assert trial_resources(exp.resources) == request_


def test_tune_execution_with_ddp_workers_is_a_one_line_error(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "x.yaml", {"name": "x", "resources": {"execution": "tune", "workers_per_trial": 2}})
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "resources.execution" in err and "workers_per_trial is 2" in err


def test_worker_loop_reports_checkpoints_and_a_final_payload(tiny_model_dir, platypus_files, tmp_path, keep_threads):
    cfg = _cfg(tiny_model_dir, platypus_files, tmp_path)
    session = RecordingSession(tmp_path)
    outcome = worker_loop(cfg.to_dict(), session)   # as a Train worker gets it: plain data

    trial = Path(cfg.trial_dir)
    assert (trial / "worker-0.pid").read_text() == str(os.getpid())
    # checkpoint_every 3 of 6 steps: two training checkpoints, then the final report
    (m3, c3), (m6, c6), (final, cf) = session.reports
    assert (m3["step"], m6["step"]) == (3, 6)
    assert sorted(p.name for p in c3.iterdir()) == ["adapter.safetensors", "optimizer.safetensors",
                                                    "trainer_state.json"]
    assert final["final"] == 1 and "failed" not in final
    assert final["aurac"] == outcome.progress["aurac"] == outcome.result["curve"]["aurac"]
    assert TrialOutcome.from_json((cf / "final.json").read_text()) == outcome
    assert (cf / "trainer_state.json").is_file()  # a restart from the final checkpoint trains no further
    assert (cf / "adapter" / "adapter_model.safetensors").is_file()
    assert outcome.adapter_path == str(trial / "adapter") and len(outcome.result["losses"]) == 6


def test_worker_loop_resumes_from_the_checkpoint_its_session_hands_back(tiny_model_dir, platypus_files, tmp_path,
                                                                       keep_threads):
    from ray.tune import Checkpoint

    whole = RecordingSession(tmp_path / "a")
    full = worker_loop(_cfg(tiny_model_dir, platypus_files, tmp_path / "a"), whole)
    step3 = whole.reports[0][1]  # the checkpoint at step 3, as Ray would hand it back to a retry
    resumed = worker_loop(_cfg(tiny_model_dir, platypus_files, tmp_path / "b"),
                          RecordingSession(tmp_path, checkpoint=Checkpoint.from_directory(str(step3))))
    assert resumed.result["resumed_from_step"] == 3
    assert resumed.result["losses"] == full.result["losses"]  # resume is exact (mlora_core.train)
    assert resumed.result["curve"]["accuracy"] == full.result["curve"]["accuracy"]


def test_worker_loop_reports_a_non_retriable_failure_instead_of_raising(tiny_model_dir, platypus_files, tmp_path,
                                                                        keep_threads):
    cfg = _cfg(tiny_model_dir, platypus_files, tmp_path, adapter={"rank": 4, "target_modules": ["no_such_proj"]})
    session = RecordingSession(tmp_path)
    outcome = worker_loop(cfg, session)
    assert not outcome.ok and outcome.result is None and "no_such_proj" in outcome.error
    ((final, kept),) = session.reports
    assert final == {"final": 1, "failed": 1}  # finish_sweep counts it; Tune sees a trial that ended
    assert TrialOutcome.from_json((kept / "final.json").read_text()) == outcome


def test_fresh_trial_state_resets_the_process_peak_memory():
    """peak_memory_mb is per trial though the tune path runs many trials in one process."""
    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    block = bytearray(300 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    del block
    high = peak_mb()
    fresh_trial_state(WorkerConfig(RunConfig(), "unused"))
    assert peak_mb() < high - 200
