"""What one Matryoshka run buys against the fixed-rank LoRA grid, over seeds (figure 6).

Runs `mlora sweep CONFIG` with `seeds: [0 .. N-1]` (registry off) and reads the sweep back
from MLflow, as the report does. Two ratios, both from that one sweep:
  compute: the Matryoshka arm's device-hours (and FLOPs) / the LoRA grid's, same seeds
           (= one Matryoshka run / one run per eval rank);
  quality: the Matryoshka arm's AURAC (mean over seeds) / the grid envelope's AURAC (each
           rank's best grid run, mean over seeds).

    python benchmarks/matryoshka_vs_grid.py [CONFIG] [--seeds 3] [--quick] [--keep DIR]
    python benchmarks/matryoshka_vs_grid.py --from OUTPUT_DIR      (an existing sweep, no training)

The default (experiments/tiny.yaml, 3 seeds = 15 trials) takes ~25 min on 2 cores.
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
    from orchestrator.results import headline, load_sweep, read_sweep_state
    state = read_sweep_state(out)
    sweep = load_sweep(state["tracking_uri"], state["parent_run_id"])
    h = headline(sweep)
    seeds = sorted({t.seed for t in sweep.trials})
    if not h["matryoshka"] or not h["envelope"]:
        sys.exit(f"{out}: the sweep needs a Matryoshka arm and a LoRA grid")
    for name, m in h["matryoshka"].items():
        g = sweep.groups[name]
        per_seed = {t.seed: t.metrics.get("aurac") for t in g.trials}
        n = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
        common = dict(seeds=seeds, arm=name, arm_runs=m["arm_runs"], grid_runs=m["grid_runs"], sweep=str(out))
        record("matryoshka_vs_grid", f"6. {name} compute / LoRA grid compute ({n})",
               m["cost_fraction"], "reported", flops_fraction=m["flops_fraction"],
               arm_device_hours=m["arm_device_hours"], grid_device_hours=h["grid_device_hours"], **common)
        if m.get("envelope_ratio") is not None:
            record("matryoshka_vs_grid", f"6. {name} AURAC / grid envelope AURAC ({n})",
                   m["envelope_ratio"], "reported", aurac=m["aurac"], aurac_std=g.aurac_std,
                   aurac_per_seed=per_seed, envelope_aurac=h["envelope_aurac"],
                   per_rank=m["per_rank"], **common)
        print(f"{'   FLOPs fraction':<58} {m['flops_fraction']:8.3f}")
        print(f"{'   AURAC, mean +- std over seeds':<58} {m['aurac']:8.3f} +- {g.aurac_std:.3f}"
              f"   (envelope {h['envelope_aurac']:.3f})")
        for k, v in m["per_rank"].items():
            print(f"{'   rank ' + str(k) + ': Matryoshka / grid envelope':<58} {v['matryoshka']:8.3f} / "
                  f"{v['lora'] if v['lora'] is not None else float('nan'):.3f}")


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
