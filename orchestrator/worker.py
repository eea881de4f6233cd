"""What trains a trial: `mlora_core.run`, with every metric and checkpoint leaving through a session.

One `worker_loop` serves both ways a trial can train (sweep.py picks one per sweep):
    tune path:  the Tune trial's own process  -> worker_loop(cfg, TuneSession())  (ray.tune.*)
    train path: each TorchTrainer worker (DDP) -> worker_loop(cfg)  = TrainSession (ray.train.*)
A session is `report(metrics, checkpoint_dir=None)`, `get_checkpoint()` and `world_rank`; that
is all that differs. Kept apart from sweep.py on purpose: Ray ships `worker_loop` to Train
workers by reference, so a worker imports this module and what it imports: mlora_core (torch,
transformers), not MLflow or the orchestrator's config: ~3 s less CPU per worker at start-up,
which a 2-core machine otherwise takes from the trial still training beside it.
"""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path

from .messages import TrackingTarget, TrialOutcome, WorkerConfig


class TrainSession:
    """On a Ray Train worker: every rank reports, rank 0's checkpoint is kept (Train's contract)."""

    def __init__(self):
        import ray.train
        self._train = ray.train
        self.world_rank = ray.train.get_context().get_world_rank()

    def report(self, metrics: dict, checkpoint_dir: Path | None = None) -> None:
        ckpt = self._train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        self._train.report(metrics, checkpoint=ckpt)

    def get_checkpoint(self):
        return self._train.get_checkpoint()


class TuneSession:
    """In a Tune function trial (one worker). ray.tune.* only: ray.train.* raises there (ray#49454).
    `report` copies a checkpoint into the trial's storage path (<output_dir>/ray/tune/<trial>/)
    before it returns, and returns once Tune has registered it, so a retried trial's
    `get_checkpoint()` is never older than the last report that returned."""

    world_rank = 0

    def __init__(self):
        from ray import tune
        self._tune = tune

    def report(self, metrics: dict, checkpoint_dir: Path | None = None) -> None:
        ckpt = self._tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        self._tune.report(metrics, checkpoint=ckpt)

    def get_checkpoint(self):
        return self._tune.get_checkpoint()


def write_pid_file(trial_dir: Path, rank: int) -> None:
    """trial_dir/worker-RANK.pid: the process that trains (operators and the fault tests kill it by
    this pid, never by a name match). Written whole (temp + rename): a reader never sees half a pid."""
    tmp = trial_dir / f".worker-{rank}.pid.{os.getpid()}"
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, trial_dir / f"worker-{rank}.pid")


def fresh_trial_state(cfg: WorkerConfig) -> None:
    """What one trial must not inherit from another run earlier in the same process (the tune
    path reuses its process across trials, reuse_actors=True). mlora_core.run seeds torch's
    global RNG itself before its first random draw, and TrainConfig.threads sets torch's thread
    count every run (torch copies it to each new thread), so what is left is: the last trial's
    objects, peak-memory counters (peak_memory_mb is a per-trial metric) and torch.compile's
    graph cache (each trial builds a new model: past its recompile limit dynamo falls back to eager)."""
    gc.collect()
    try:  # Linux: resets the process's peak RSS (VmHWM, getrusage's ru_maxrss) to its current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if cfg.run_config.train.compile:
        torch._dynamo.reset()


def _live_tracking(tracking: TrackingTarget | None, rank: int, resumed: bool):
    """(LiveMetrics, system-metrics monitor) into the trial's MLflow run, on rank 0 when the trial
    has one (a sweep's; `mlora train` has none). Imports MLflow only then."""
    if not tracking or rank != 0:
        return None, None
    from .tracking import LiveMetrics, SystemMetrics
    live = LiveMetrics(tracking.uri, tracking.run_id)
    monitor = SystemMetrics(tracking.uri, tracking.run_id, resumed) if tracking.system_metrics else None
    return live, monitor


def worker_loop(cfg: WorkerConfig | dict, session: TrainSession | TuneSession | None = None) -> TrialOutcome:
    """Runs mlora_core.run; every metric and checkpoint leaves through `session` (default: this
    Ray Train worker's, whose config arrives as WorkerConfig.to_dict()). Returns the trial's
    outcome: its result, or the error of a failure that a retry cannot fix (rank 0's counts)."""
    from mlora_core.checkpoint import latest_checkpoint
    from mlora_core.run import run
    from mlora_core.train import Diverged

    from .metrics import report_every

    cfg = WorkerConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
    session = session or TrainSession()
    fresh_trial_state(cfg)
    rank = session.world_rank
    trial_dir = Path(cfg.trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    write_pid_file(trial_dir, rank)
    resume_from = None
    checkpoint = session.get_checkpoint()
    if checkpoint is not None:  # Ray restarted this trial or worker group: continue from its last checkpoint
        resume_from = Path(checkpoint.to_directory(str(trial_dir / f"restore-{rank}")))
    log_every = report_every(cfg.run_config.train.steps or 0)

    def progress(metrics: dict) -> None:
        if live is not None:
            live.log(metrics)
        if metrics["step"] % log_every == 0:
            session.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    def on_checkpoint(path: Path | None, metrics: dict) -> None:
        session.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, checkpoint_dir=path)

    if resume_from is not None and (resume_from / "final.json").is_file():
        # finished before, its result not logged (the store was away): that result, never a re-run
        outcome = TrialOutcome.from_json((resume_from / "final.json").read_text())
        if (resume_from / "adapter").is_dir():
            outcome = outcome.with_adapter(str(resume_from / "adapter"))
        return _final(session, outcome, None)
    live, monitor = _live_tracking(cfg.tracking, rank, resumed=checkpoint is not None)
    try:
        result = run(cfg.run_config, trial_dir, callback=progress,
                     on_checkpoint=on_checkpoint, resume_from=resume_from, log=lambda m: print(m, flush=True))
    except (Diverged, ValueError, FileNotFoundError) as e:  # not worth a retry: report and stop
        return _final(session, TrialOutcome(error=f"{type(e).__name__}: {e}"), None)
    finally:
        for closing in (live, monitor):
            if closing is not None:
                closing.close()
    return _final(session, _outcome(result, cfg.run_config),
                  latest_checkpoint(trial_dir / "checkpoints") if rank == 0 else None)


def _outcome(result, rc) -> TrialOutcome:
    """A finished run's outcome: its result, plus the metrics Tune's table and a search read."""
    from .metrics import search_score, trial_metrics
    summary = trial_metrics(result.as_dict())
    progress_keys = ("aurac", *(k for k in summary if k.startswith("acc_rank_")))  # what Tune's table shows
    score = search_score(summary, rc.adapter.method, rc.adapter.rank, rc.eval_rules[0])
    return TrialOutcome(result.as_dict(), {"step": len(result.losses), "train_loss": result.losses[-1],
                                           **{k: summary[k] for k in progress_keys},
                                           **({"search_score": score} if score is not None else {})})


def _final(session, outcome: TrialOutcome, extra_dir: Path | None) -> TrialOutcome:
    """The last report: rank 0's checkpoint holds final.json (the outcome), the last training
    checkpoint (so a restart is a no-op) and the adapter; returns the outcome as read back (the
    same lists and floats on both paths)."""
    text = outcome.to_json()
    rank = session.world_rank
    with tempfile.TemporaryDirectory() as tmp:
        if rank == 0:
            Path(tmp, "final.json").write_text(text)
            if extra_dir is not None:
                for f in extra_dir.iterdir():
                    shutil.copy2(f, tmp)
            if outcome.adapter_path:
                shutil.copytree(outcome.adapter_path, Path(tmp, "adapter"))
        session.report(outcome.report(), checkpoint_dir=Path(tmp) if rank == 0 else None)
    return TrialOutcome.from_json(text)
