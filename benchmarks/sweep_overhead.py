"""Ray sweep wall time / the same trials run directly at the same concurrency (figure 5).

All three sides run in this one invocation: first every planned trial of CONFIG through
`mlora_core.run` in a process pool of `max_concurrent_trials` processes (no Ray, no MLflow),
then the same trials as one `mlora train CONFIG --trial ID` process each, `max_concurrent_trials`
at a time (how a user runs a grid without Ray: every process pays Python, torch and
transformers imports, as every Ray trial does), then `mlora sweep CONFIG` (local Ray, MLflow on
SQLite, reports, registry off). Goal <= 1.10 against the pool; the other ratio is reported.
Ray's per-trial start-up = each trial's MLflow run duration minus the time mlora_core.run
itself spent (load + train + eval), averaged.

    python benchmarks/sweep_overhead.py [CONFIG] [--quick]    (default experiments/tiny.yaml)
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


def main() -> None:
    argv = [a for a in sys.argv[1:] if not a.startswith("--")]
    config = Path(argv[0] if argv else ROOT / "experiments" / "tiny.yaml")
    data = yaml.safe_load(config.read_text())
    if "--quick" in sys.argv:
        data.setdefault("training", {})["steps"] = 30
        data.setdefault("tasks", {})["eval"] = {**data.get("tasks", {}).get("eval", {}), "n": 50}
    data["registry"] = {"enabled": False}
    from orchestrator.config import parse_experiment
    from orchestrator.plan import plan, run_config

    with tempfile.TemporaryDirectory() as tmp:
        data["output_dir"] = str(Path(tmp, "sweep"))
        cfg = Path(tmp, "exp.yaml")
        cfg.write_text(yaml.safe_dump(data))
        exp = parse_experiment(data)
        trials = plan(exp)
        conc = exp.resources.max_concurrent_trials
        from mlora_core.models import resolve_model_path
        resolve_model_path(exp.model)  # build/cache a builtin model before timing either side
        print(f"{len(trials)} trials of {config.name}, {conc} at a time", flush=True)

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

        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "sweep", str(cfg)], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        ray_wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        print(f"ray sweep: {ray_wall:.1f} s", flush=True)

        from orchestrator import tracking
        state = json.loads(Path(data["output_dir"], "sweep.json").read_text())
        startup = []
        for r in tracking.trial_runs(state["tracking_uri"], state["parent_run_id"]):
            own = r.data.metrics.get("wall_seconds", 0) + r.data.metrics.get("setup_seconds", 0)
            startup.append((r.info.end_time - r.info.start_time) / 1000 - own)
        record("sweep_overhead", "5. Ray sweep wall / direct wall (same concurrency)", ray_wall / direct, "<= 1.10",
               ray_seconds=ray_wall, direct_seconds=direct, trials=len(trials), concurrency=conc,
               direct_trial_seconds=direct_each, ray_startup_per_trial_s=statistics.fmean(startup))
        print(f"{'   Ray start-up + tracking per trial (s)':<58} {statistics.fmean(startup):8.1f}")
        record("sweep_overhead", "5. Ray sweep wall / one `mlora train` process per trial", ray_wall / processes,
               "reported", ray_seconds=ray_wall, processes_seconds=processes, trials=len(trials), concurrency=conc)


if __name__ == "__main__":
    main()
