"""What runs on every Ray Train worker of a trial: `mlora_core.run`, reporting through Ray Train.

Kept apart from sweep.py on purpose: Ray ships `worker_loop` by reference, so a worker
imports this module and what it imports. Here that is mlora_core (torch, transformers),
not MLflow or the orchestrator's config: ~3 s less CPU per trial at start-up, which a
2-core machine otherwise takes from the trial still training beside it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def worker_loop(cfg: dict) -> None:
    """Runs mlora_core.run; every metric and checkpoint leaves through ray.train.report."""
    import ray.train

    from mlora_core.run import RunConfig, run
    from mlora_core.train import Diverged, latest_checkpoint

    from .metrics import report_every, search_score, trial_metrics

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    trial_dir = Path(cfg["trial_dir"])
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / f"worker-{rank}.pid").write_text(str(os.getpid()))  # for operators (and fault tests)
    resume_from = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # Ray restarted this worker group: continue from the last checkpoint
        resume_from = Path(checkpoint.to_directory(str(trial_dir / f"restore-{rank}")))
    log_every = report_every(cfg["run_config"]["train"].get("steps") or 0)

    def progress(metrics: dict) -> None:
        if metrics["step"] % log_every == 0:
            ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    def on_checkpoint(path: Path | None, metrics: dict) -> None:
        flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        ray.train.report(flat, checkpoint=ray.train.Checkpoint.from_directory(str(path)) if path else None)

    def final(payload: dict, extra_dir: Path | None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                Path(tmp, "final.json").write_text(json.dumps(payload))
                if extra_dir is not None:
                    for f in extra_dir.iterdir():  # the last training checkpoint, so a restart is a no-op
                        shutil.copy2(f, tmp)
                if payload.get("adapter_path"):
                    shutil.copytree(payload["adapter_path"], Path(tmp, "adapter"))
            metrics = {"final": 1, **{k: v for k, v in payload.get("metrics", {}).items()}}
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)

    try:
        result = run(RunConfig.from_dict(cfg["run_config"]), trial_dir, callback=progress,
                     on_checkpoint=on_checkpoint, resume_from=resume_from, log=lambda m: print(m, flush=True))
    except (Diverged, ValueError, FileNotFoundError) as e:  # not worth a retry: report and stop
        final({"error": f"{type(e).__name__}: {e}"}, None)
        return
    summary, rc = trial_metrics(result.as_dict()), cfg["run_config"]
    progress_keys = ("aurac", *(k for k in summary if k.startswith("acc_rank_")))  # what Tune's table shows
    score = search_score(summary, rc["adapter"]["method"], rc["adapter"]["rank"], rc["eval_rules"][0])
    payload = {**result.as_dict(), "metrics": {"step": len(result.losses), "train_loss": result.losses[-1],
                                               **{k: summary[k] for k in progress_keys},
                                               **({"search_score": score} if score is not None else {})}}
    final(payload, latest_checkpoint(trial_dir / "checkpoints") if rank == 0 else None)
