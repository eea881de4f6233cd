"""`mlora`: validate | plan | train | sweep | report | register | export.

Exit codes: 0 success, 1 some trials failed (the rest finished and were reported),
2 bad input (config, model, paths, ranks): one clear line per problem, no traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlora_core.methods import RULES

from .quiet import quiet

EXIT_OK, EXIT_BAD_INPUT = 0, 2   # 1 (some trials failed) comes from sweep.run_sweep


class UsageError(ValueError):
    """Bad input detected by the CLI itself (paths, flags)."""


def _fail(message: str) -> int:
    from .redact import redact_text  # MLflow's errors quote the tracking URI, password and all
    print(f"mlora: error: {redact_text(message)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def cmd_validate(args) -> int:
    from mlora_core.models import offline_cache_problem

    from .data_check import load_checked
    from .plan import plan, search_groups
    exp = load_checked(args.config)
    if problem := offline_cache_problem(exp.model, exp.model_revision):   # `mlora sweep` and `train` refuse it
        print(f"mlora: warning: {problem}; `mlora sweep` and `mlora train` refuse it here", file=sys.stderr)
    searched = sum(g.max_trials for g in search_groups(exp))
    print(f"{args.config}: ok ({exp.name}: {len(plan(exp))} trials" + (f" + up to {searched} searched" if searched
                                                                       else "") + ")")
    return EXIT_OK


def cmd_plan(args) -> int:
    from .data_check import load_checked
    from .plan import estimate, lora_grid, plan, search_groups
    exp = load_checked(args.config)
    trials = plan(exp)
    est = {e.trial_id: e for e in estimate(exp, trials)}
    width = max([len(t.trial_id) for t in trials] + [len(g.arm) + 11 for g in search_groups(exp)]) + 1
    ow = max([len(t.objective or "") for t in trials] + [10])
    header = f"{'trial':<{width}} {'method':<10} {'objective':<{ow}} {'rank':>4} {'budget':>6} {'lr':>8} {'seed':>4} " \
             f"{'GFLOPs':>10} {'dev-h':>8} {'$':>8}"
    print(header)
    print("-" * len(header))
    fmt = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
    for t in trials:
        e = est[t.trial_id]
        print(f"{t.trial_id:<{width}} {t.method:<10} {t.objective or '':<{ow}} "
              f"{t.rank:>4} {t.budget:>6g} {t.lr:>8.1e} {t.seed:>4} "
              f"{fmt(e.train_flops and e.train_flops / 1e9, '10.1f'):>10} {fmt(e.device_hours, '8.4f'):>8} "
              f"{fmt(e.dollars, '8.2f'):>8}")
    groups = search_groups(exp)
    for g in groups:   # a search's cost before it runs: its upper bound, every sample and repeat
        e = estimate(exp, [g.sample(0, g.low)])[0]
        known_cost = e.train_flops is not None
        if known_cost:
            for i in range(g.max_trials):
                est[f"{g.arm}/{i}"] = e
        print(f"{g.arm + ' (searched)':<{width}} optuna: {g.num_samples} lrs in [{g.low:g}, {g.high:g}]"
              f"{' (log)' if g.log else ''} on seed {g.seeds[0]}"
              + (f", then the best on seeds {list(g.seeds[1:])}" if g.seeds[1:] else "") + f": <= {g.max_trials} trials"
              + (f", <= {e.train_flops * g.max_trials / 1e9:.1f} GFLOPs, {e.device_hours * g.max_trials:.4f} dev-h"
                 if known_cost else ""))
    known = [e for e in est.values() if e.train_flops is not None]
    searched = sum(g.max_trials for g in groups)
    print(f"\n{len(trials)} trials" + (f" + up to {searched} searched (their cost: an upper bound)" if searched else "")
          + f" on {exp.model}; {exp.resources.workers_per_trial} worker(s) x "
          f"{exp.resources.cpus_per_worker:g} CPU / {exp.resources.gpus_per_worker:g} GPU per trial, "
          f"{exp.resources.max_concurrent_trials} at a time")
    if not known:
        print("estimated cost: n/a (the model's config could not be read offline)")
        return EXIT_OK
    print(f"estimated: {sum(e.train_flops for e in known) / 1e12:.3g} TFLOPs, "
          f"{sum(e.device_hours for e in known):.3f} device-hours, ${sum(e.dollars for e in known):.2f} at "
          f"${exp.cost.price_per_device_hour:g}/device-hour ({exp.cost.device}, {exp.cost.effective_tflops:g} "
          f"effective TFLOP/s per device)")
    # one run of each one-run arm against one grid (a run per rank); lr and seed do not change FLOPs
    arms = {t.arm: (t, est[t.trial_id].train_flops) for t in trials if est[t.trial_id].train_flops}
    grid = [arms[t.arm][1] for t in lora_grid(t for t, _ in arms.values())]
    for arm, (t, flops) in arms.items() if grid else ():
        if t.one_run:
            runs = f"{len(grid)} run" + ("s" if len(grid) != 1 else "")
            print(f"one {arm} run = {100 * flops / sum(grid):.0f}% of the LoRA grid's training FLOPs ({runs})")
    return EXIT_OK


def cmd_train(args) -> int:
    """One trial, directly (no Ray, no MLflow): the recipe every sweep trial runs."""
    from mlora_core.models import require_cached
    from mlora_core.run import run

    from .data_check import load_checked
    from .plan import plan, run_config
    exp = load_checked(args.config)
    require_cached(exp.model, exp.model_revision)
    trials = plan(exp)
    pick = [t for t in trials if args.trial in (None, t.trial_id, t.arm, t.method)]
    if not pick:
        raise UsageError(f"--trial {args.trial!r} matches no trial; have: {', '.join(t.trial_id for t in trials)}")
    spec = pick[0]
    out = Path(args.output_dir or exp.out_dir / "train" / spec.trial_id)
    print(f"training {spec.trial_id} -> {out}")
    result = run(run_config(exp, spec), out)
    print(f"\n{spec.trial_id}")
    for rule, curve in result.curves.items():
        print(f"  {rule:<10}  {curve}")
    print(f"  cost        {result.cost}\n  adapter     {result.adapter_path}")
    return EXIT_OK


def cmd_sweep(args) -> int:
    from .data_check import load_checked
    from .sweep import SweepOptions, run_sweep
    exp = load_checked(args.config)
    return run_sweep(exp, SweepOptions(args.config, args.resume, args.overwrite, args.tracking_uri, args.output_dir))


def cmd_report(args) -> int:
    from .report import write_report
    path = write_report(args.output_dir, tracking_uri=args.tracking_uri)
    print(f"report: {path}")
    return EXIT_OK


def cmd_register(args) -> int:
    from .registry import register_sweep
    version = register_sweep(args.output_dir, tracking_uri=args.tracking_uri)
    print(f"registered {version}")
    return EXIT_OK


def cmd_export(args) -> int:
    from .registry import export_peft, resolve_model_source
    model_uri, uri = resolve_model_source(args.source, args.tracking_uri)
    out, rule = export_peft(model_uri, args.rank, args.out, tracking_uri=uri, rule=args.rule)
    print(f"PEFT adapter of {model_uri} (rank {args.rank}, rule {rule}) written to {out}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlora", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    uri = dict(default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the sweep's SQLite file)")

    s = sub.add_parser("validate", help="check an experiment YAML")
    s.add_argument("config")
    s.set_defaults(fn=cmd_validate)
    s = sub.add_parser("plan", help="print the trial table and estimated cost")
    s.add_argument("config")
    s.set_defaults(fn=cmd_plan)
    s = sub.add_parser("train", help="run one trial directly (no Ray, no MLflow)")
    s.add_argument("config")
    s.add_argument("--trial", help="trial id, arm or method (default: the first planned trial)")
    s.add_argument("--output-dir")
    s.set_defaults(fn=cmd_train)
    s = sub.add_parser("sweep", help="run every trial on Ray, track in MLflow, report")
    s.add_argument("config")
    s.add_argument("--resume", action="store_true", help="continue an interrupted sweep in its output dir")
    s.add_argument("--overwrite", action="store_true", help="delete an existing sweep in the output dir first")
    s.add_argument("--tracking-uri", **uri)
    s.add_argument("--output-dir", help="override the config's output_dir")
    s.set_defaults(fn=cmd_sweep)
    s = sub.add_parser("report", help="write the cost-vs-accuracy report of a sweep")
    s.add_argument("output_dir")
    s.add_argument("--tracking-uri", **uri)
    s.set_defaults(fn=cmd_report)
    s = sub.add_parser("register", help="register a sweep's recommended adapter in the MLflow model registry")
    s.add_argument("output_dir")
    s.add_argument("--tracking-uri", **uri)
    s.set_defaults(fn=cmd_register)
    s = sub.add_parser("export", help="write a PEFT adapter at one rank from a registered model")
    s.add_argument("source", help="a registered model (models:/mlora-tiny@recommended; its store: --tracking-uri, "
                                  "else the sweep under ./outputs that registers it) or a sweep's output dir")
    s.add_argument("--rank", type=int, required=True)
    s.add_argument("--rule", choices=list(RULES),
                   help="rank-k rule (default: the one the registered model recommends)")
    s.add_argument("out")
    s.add_argument("--tracking-uri", **uri)
    s.set_defaults(fn=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    from .load import ConfigError, first_line
    args = build_parser().parse_args(argv)
    quiet()   # no third-party progress bars or INFO lines, here or in the sweep's Ray processes
    if getattr(args, "tracking_uri", None) is None and os.environ.get("MLFLOW_TRACKING_URI"):
        args.tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"mlora: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        return _fail(first_line(e))
    except KeyboardInterrupt:
        print("mlora: interrupted; finished trials are kept (resume with `mlora sweep --resume`)", file=sys.stderr)
        return 130
    except Exception as e:
        from .tracking import unreachable
        if not unreachable(e):
            raise
        from .redact import redact_text
        print(f"mlora: error: the tracking store is unreachable ({redact_text(first_line(e))[:300]}); a trial "
              "whose training finished keeps its result in its checkpoint: `mlora sweep --resume` logs it once the "
              "store is back, without training it again", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
