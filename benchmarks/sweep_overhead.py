"""Ray sweep wall time / the same trials run directly at the same concurrency (figure 5).

Every side runs in this one invocation, one after the other: first every planned trial of CONFIG
through `mlora_core.run` in a process pool of `max_concurrent_trials` processes (no Ray, no
MLflow), then the same trials as one `mlora train CONFIG --trial ID` process each,
`max_concurrent_trials` at a time (how a user runs a grid without Ray: every process pays Python,
torch and transformers imports), then `mlora sweep CONFIG` (local Ray, MLflow on SQLite, report,
registry off) as configured (`resources.execution: auto`: one-worker trials train in their Tune
trial's own process), then the same sweep with `execution: train` (a TorchTrainer per trial, as
every trial ran before; skip with --no-train-path). Goal <= 1.15 against the pool.

Per trial, from the MLflow runs (the figures' extra fields):
  start-up = time in the trial's MLflow run outside mlora_core.run's own load/train/eval
             + the gap from the previous trial's end in the same slot to this trial's run
             (Tune starting or reusing the trial process); goal <= 5 s
  fixed    = sweep wall - the span of the trials' runs (CLI, MLflow set-up, Ray start, first
             trial processes, report, shutdown)

    python benchmarks/sweep_overhead.py [CONFIG] [--quick] [--no-train-path]   (default experiments/tiny.yaml)
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import yaml
from _common import record

ROOT = Path(__file__).resolve().parents[1]


def _direct(args):
    rc_dict, out = args
    from mlora_core.run import RunConfig, run
    t = time.perf_counter()
    run(RunConfig.from_dict(rc_dict), out, log=lambda *_: None)
    return time.perf_counter() - t


def trial_timings(out: Path, conc: int) -> dict:
    """Per-trial start-up (inside the run + the slot gap before it) and the span of all runs."""
    from orchestrator import tracking
    state = json.loads((out / "sweep.json").read_text())
    runs = sorted(tracking.trial_runs(state["tracking_uri"], state["parent_run_id"]), key=lambda r: r.info.start_time)
    inside, gaps, slots = [], [], []  # slots: when each slot's last trial ended
    for r in runs:
        start, end = r.info.start_time / 1000, r.info.end_time / 1000
        own = r.data.metrics.get("wall_seconds", 0) + r.data.metrics.get("setup_seconds", 0)
        inside.append(end - start - own)
        if len(slots) < conc:  # the first wave: its start is the sweep's fixed cost
            slots.append(end)
            continue
        freed = [s for s in slots if s <= start]
        prev = max(freed) if freed else min(slots)  # the slot freed last before this trial started
        if freed:
            gaps.append(start - prev)
        slots[slots.index(prev)] = end
    span = max(r.info.end_time for r in runs) / 1000 - runs[0].info.start_time / 1000
    gap = statistics.fmean(gaps) if gaps else 0.0
    return {"startup_per_trial_s": statistics.fmean(inside) + gap, "inside_run_s": statistics.fmean(inside),
            "slot_gap_s": gap, "runs_span_s": span}


def ray_sweep(cfg: Path, env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "sweep", str(cfg)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


def main() -> None:
    argv = [a for a in sys.argv[1:] if not a.startswith("--")]
    config = Path(argv[0] if argv else ROOT / "experiments" / "tiny.yaml")
    data = yaml.safe_load(config.read_text())
    if "--quick" in sys.argv:
        data.setdefault("training", {})["steps"] = 30
        data.setdefault("tasks", {})["eval"] = {**data.get("tasks", {}).get("eval", {}), "n": 50}
    data["registry"] = {"enabled": False}
    from orchestrator.load import parse_experiment
    from orchestrator.plan import plan, run_config
    from orchestrator.sweep import execution

    with tempfile.TemporaryDirectory() as tmp:
        data["output_dir"] = str(Path(tmp, "sweep"))
        cfg = Path(tmp, "exp.yaml")
        cfg.write_text(yaml.safe_dump(data))
        train_data = {**data, "output_dir": str(Path(tmp, "sweep-train")),
                      "resources": {**data.get("resources", {}), "execution": "train"}}
        train_cfg = Path(tmp, "exp-train.yaml")
        train_cfg.write_text(yaml.safe_dump(train_data))
        exp = parse_experiment(data)
        trials = plan(exp)
        conc = exp.resources.max_concurrent_trials
        from mlora_core.models import resolve_model_path
        resolve_model_path(exp.model)  # build/cache a builtin model before timing either side
        print(f"{len(trials)} trials of {config.name}, {conc} at a time; load {os.getloadavg()[0]:.2f}", flush=True)

        t0 = time.perf_counter()
        with ProcessPoolExecutor(conc, mp_context=get_context("spawn")) as pool:
            direct_each = list(pool.map(_direct, [(run_config(exp, t).to_dict(), str(Path(tmp, "direct", t.trial_id)))
                                                  for t in trials]))
        direct = time.perf_counter() - t0
        print(f"direct: {direct:.1f} s", flush=True)

        env = {**os.environ, "PYTHONPATH": str(ROOT)}

        def one_process(trial_id: str) -> None:
            subprocess.run([sys.executable, "-m", "orchestrator.cli", "train", str(cfg), "--trial", trial_id,
                            "--output-dir", str(Path(tmp, "processes", trial_id))],
                           cwd=ROOT, env=env, check=True, capture_output=True)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(conc) as pool:
            list(pool.map(one_process, [t.trial_id for t in trials]))
        processes = time.perf_counter() - t0
        print(f"one process per trial: {processes:.1f} s", flush=True)

        path = execution(exp.resources)
        ray_wall = ray_sweep(cfg, env)
        timing = trial_timings(Path(data["output_dir"]), conc)
        print(f"ray sweep (execution {exp.resources.execution} -> {path}): {ray_wall:.1f} s; load "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        train = None
        if "--no-train-path" not in sys.argv and path != "train":
            train_wall = ray_sweep(train_cfg, env)
            train = {"seconds": train_wall, **trial_timings(Path(train_data["output_dir"]), conc)}
            print(f"ray sweep (execution train): {train_wall:.1f} s; load {os.getloadavg()[0]:.2f}", flush=True)

        common = dict(trials=len(trials), concurrency=conc, load_after=round(os.getloadavg()[0], 2))
        record("sweep_overhead", "5. Ray sweep wall / direct wall (same concurrency)", ray_wall / direct, "<= 1.15",
               execution=path, ray_seconds=ray_wall, direct_seconds=direct, direct_trial_seconds=direct_each,
               ray_startup_per_trial_s=timing["startup_per_trial_s"], fixed_s=ray_wall - timing["runs_span_s"],
               **timing, **common)
        print(f"{'   start-up per trial (s): in the run + slot gap':<58} {timing['startup_per_trial_s']:8.1f}"
              f"   ({timing['inside_run_s']:.1f} + {timing['slot_gap_s']:.1f}; goal <= 5)")
        print(f"{'   fixed (s): sweep wall - span of the trial runs':<58} {ray_wall - timing['runs_span_s']:8.1f}")
        if train:
            record("sweep_overhead", "5. Ray sweep wall, execution: train (TorchTrainer) / direct wall",
                   train["seconds"] / direct, "reported", execution="train", ray_seconds=train["seconds"],
                   direct_seconds=direct, ray_startup_per_trial_s=train["startup_per_trial_s"],
                   fixed_s=train["seconds"] - train["runs_span_s"],
                   **{k: v for k, v in train.items() if k != "seconds"},
                   **common)
            print(f"{'   start-up per trial, execution: train (s)':<58} {train['startup_per_trial_s']:8.1f}"
                  f"   ({train['inside_run_s']:.1f} + {train['slot_gap_s']:.1f})")
        record("sweep_overhead", "5. Ray sweep wall / one `mlora train` process per trial", ray_wall / processes,
               "reported", execution=path, ray_seconds=ray_wall, processes_seconds=processes, **common)


if __name__ == "__main__":
    main()
