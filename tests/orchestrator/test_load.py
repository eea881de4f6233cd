"""Load: a sweep of 60 very short trials, 2 at a time, its driver SIGKILLed once mid-sweep and
resumed: exactly one FINISHED MLflow run per trial, none lost or duplicated, the report complete.

Real local Ray and SQLite MLflow. Trials train 2 steps of a 2-layer model, so what is measured is
the machinery around them: Tune's scheduling, trial start in a reused process, MLflow tracking,
checkpoints, Tuner.restore. The timings it prints are in docs/reliability.md and docs/performance.md.
"""
from __future__ import annotations

import csv
import json
import time

import pytest

from .conftest import kill_when, mlora, runs_by_trial, start_sweep, sweep_log_tail, tiny_experiment, write_yaml

pytestmark = pytest.mark.slow

LRS = [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]
SEEDS = [0, 1, 2, 3]
RANKS = [1, 2, 4]  # 3 ranks x 5 lrs x 4 seeds = 60 LoRA trials


def test_sixty_short_trials_survive_a_driver_kill_and_resume(tiny_model_dir, platypus_files, tmp_path):
    out = tmp_path / "out"
    exp = tiny_experiment(tiny_model_dir, platypus_files, out, arms={"lora": {"ranks": RANKS}}, lrs=LRS, seeds=SEEDS,
                          training={"steps": 2, "batch_size": 4, "max_length": 96, "warmup_steps": 1},
                          resources={"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 2})
    cfg = write_yaml(tmp_path / "exp.yaml", exp)
    n = len(RANKS) * len(LRS) * len(SEEDS)

    def finished_a_third():
        if (out / "sweep.json").is_file():
            done = [r for rs in runs_by_trial(out).values() for r in rs if r.info.status == "FINISHED"]
            return done if len(done) >= n // 3 else None
    t0 = time.monotonic()
    proc = start_sweep(cfg)
    before = kill_when(proc, finished_a_third, timeout=600, poll=1)
    killed_at = time.monotonic() - t0
    assert before, (f"a third of the trials did not finish (exit code {proc.returncode}; -9 = killed at the deadline)\n"
                    + sweep_log_tail(cfg))
    started = runs_by_trial(out)
    assert len(started) < n  # killed mid-sweep

    t1 = time.monotonic()
    proc = mlora("sweep", cfg, "--resume", timeout=900)
    resumed = time.monotonic() - t1
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    runs = runs_by_trial(out)
    planned = [t["trial_id"] for t in json.loads((out / "sweep.json").read_text())["trials"]]
    assert len(planned) == n and sorted(runs) == sorted(planned)  # none lost
    assert all(len(rs) == 1 for rs in runs.values()), {t: len(rs) for t, rs in runs.items() if len(rs) != 1}
    assert {rs[0].info.status for rs in runs.values()} == {"FINISHED"}
    for run in before:  # finished before the kill: not run again
        (now,) = runs[run.data.tags["mlora.trial_id"]]
        assert (now.info.run_id, now.info.end_time) == (run.info.run_id, run.info.end_time)
    for tid, rs in started.items():  # a trial interrupted mid-way continued its own run
        assert runs[tid][0].info.run_id == rs[0].info.run_id

    # the report has every trial: one row each in runs.csv, each rank's group (its best lr) with all seeds
    rows = list(csv.DictReader((out / "report" / "runs.csv").open()))
    assert sorted(r["trial_id"] for r in rows) == sorted(planned) and {r["status"] for r in rows} == {"FINISHED"}
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["failed"] == []
    primary = [c for c in report["curves"] if c["rule"] == report["rules"][0]]
    assert sorted(c["arm"] for c in primary) == sorted(f"lora-r{k}" for k in RANKS)
    assert all(len(c["trial_ids"]) == len(SEEDS) for c in primary)   # at its lr, every seed

    # wall times, for docs/performance.md (run with -s to see them)
    print(f"\nload: {n} trials; killed after {killed_at:.0f} s with {len(before)} finished, "
          f"resume {resumed:.0f} s; {(killed_at + resumed) / n:.2f} s per trial at 2 at a time")
