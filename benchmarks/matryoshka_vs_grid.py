"""What one Matryoshka run buys against the fixed-rank LoRA grid, over seeds (figure 6).

Runs `mlora sweep CONFIG` with `seeds: [0 .. N-1]` (registry off) and reads the sweep back
from MLflow, as the report does. Two ratios, both from that one sweep:
  compute: one run of each one-run arm (Matryoshka objective, DyLoRA) / one LoRA grid (a run
           per eval rank), device-hours (and FLOPs), mean over seeds;
  quality: its AURAC under each rank-k rule (mean over seeds) / the grid envelope's AURAC
           (each LoRA-k at its own rank, mean over seeds).

    python benchmarks/matryoshka_vs_grid.py [CONFIG] [--seeds 3] [--quick] [--keep DIR]
    python benchmarks/matryoshka_vs_grid.py --from OUTPUT_DIR      (an existing sweep, no training)

The default (experiments/tiny.yaml, 3 seeds = 15 trials, 18 one-LoRA-run equivalents of training) took ~40 min on 2
cores with 21 (stratified at x3 before it became top at x2); expect ~35.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import record

ROOT = Path(__file__).resolve().parents[1]


def run_sweep(config: Path, seeds: int, quick: bool, out: Path) -> None:
    data = yaml.safe_load(config.read_text())
    data["seeds"] = list(range(seeds))
    data["registry"] = {"enabled": False}
    data["output_dir"] = str(out)
    if quick:
        data.setdefault("training", {})["steps"] = 30
        data.setdefault("tasks", {})["eval"] = {**data.get("tasks", {}).get("eval", {}), "n": 50}
    cfg = out.parent / f"{out.name}.yaml"
    cfg.write_text(yaml.safe_dump(data))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "sweep", str(cfg)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({proc.returncode})")
    print(f"sweep of {seeds} seed(s): {time.perf_counter() - t0:.0f} s", flush=True)


def report(out: Path) -> None:
    from orchestrator.record import load_output_dir
    _, result = load_output_dir(out)
    seeds = sorted({t.seed for t in result.trials})
    if not result.one_run or not result.envelope:
        sys.exit(f"{out}: the sweep needs a one-run arm (Matryoshka, DyLoRA) and a LoRA grid")
    n = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    print(f"{'LoRA grid envelope':<58} AURAC {result.envelope_aurac:.3f} ({result.grid['runs']} runs)")
    for e in result.one_run:
        common = dict(seeds=seeds, arm=e["arm"], rule=e["rule"], lr=e["lr"], grid_runs=result.grid["runs"],
                      sweep=str(out))
        record("matryoshka_vs_grid", f"6. {e['label']} compute / LoRA grid compute ({n})", e["cost_share"],
               "reported", flops_share=e["flops_share"], device_hours=e["device_hours"],
               grid_device_hours=result.grid["device_hours"], **common)
        if e["aurac_share"] is not None:
            record("matryoshka_vs_grid", f"6. {e['label']} AURAC / grid envelope AURAC ({n})", e["aurac_share"],
                   "reported", aurac=e["aurac"], aurac_std=e["aurac_std"], envelope_aurac=result.envelope_aurac,
                   per_rank=e["per_rank"], **common)
        per_rank = " / ".join(f"{v['accuracy']:.3f}" for v in e["per_rank"].values())
        print(f"{e['label']:<58} AURAC {e['aurac']:.3f} +- {e['aurac_std']:.3f}  ({per_rank}); "
              f"{e['aurac_share'] or float('nan'):.0%} of the envelope for {e['cost_share'] or float('nan'):.0%} "
              f"of the grid's compute")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(ROOT / "experiments" / "tiny.yaml"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="30 steps, 50 eval questions: checks the plumbing only")
    ap.add_argument("--keep", help="run the sweep into this directory and keep it")
    ap.add_argument("--from", dest="source", help="read an existing sweep's output dir; trains nothing")
    args = ap.parse_args()
    if args.source:
        report(Path(args.source).resolve())
        return
    if args.keep:
        out = Path(args.keep).resolve()
        run_sweep(Path(args.config), args.seeds, args.quick, out)
        report(out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "sweep")
        run_sweep(Path(args.config), args.seeds, args.quick, out)
        report(out)


if __name__ == "__main__":
    main()
