"""Shared by the benchmarks: interleaved timing (A, B, A, B, ...) so machine noise hits both
sides alike, a machine description, and one JSON line per figure in benchmarks/results/."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def machine() -> dict:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def interleaved(fns: dict[str, Callable[[], None]], repeats: int = 7, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each fn, measured round-robin (on CUDA, each call is timed up to
    the end of its kernels, not of their launch)."""
    import torch
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def record(bench: str, figure: str, ratio: float, goal: str, **extra) -> None:
    """Print one figure and append it as a JSON line to benchmarks/results/<bench>.jsonl."""
    RESULTS.mkdir(exist_ok=True)
    row = {"bench": bench, "figure": figure, "ratio": round(ratio, 4), "goal": goal,
           "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), **extra}
    with open(RESULTS / f"{bench}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{figure:<58} {ratio:8.3f}   (goal {goal})", flush=True)
