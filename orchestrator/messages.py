"""What the stages of a sweep hand each other across Ray's process boundaries, as records:

    TrialContext   sweep.py -> every Tune trial (trial_driver) and the searcher: the sweep's
                   experiment, output dir and MLflow parent run
    WorkerConfig   trial_driver -> worker_loop (on the Tune trial's process, or each Train worker)
    TrialOutcome   worker_loop -> trial_driver -> tracking.log_trial_result: its result or its error,
                   kept as final.json in the trial's last checkpoint

Ray carries plain data (Tune stores its param_space in params.json and grid-searches over it; Train
ships train_loop_config), so each record turns into and back from plain data here, in one place
(to_dict / from_dict, to_json / from_json); everything else handles the records. Import-light: the
worker imports this, not the orchestrator's config (pydantic) or MLflow.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlora_core.records import from_plain, to_plain
from mlora_core.run import RunConfig

if TYPE_CHECKING:
    from .config import Experiment


@dataclass(frozen=True)
class SweepRef:
    """Where a sweep's trials live: its MLflow store and parent run."""
    tracking_uri: str = ""
    parent_run_id: str = ""


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares, from sweep.py."""
    experiment: Experiment           # resolved (sweep.json's)
    output_dir: str
    sweep: SweepRef
    experiment_id: str               # MLflow's
    storage_path: str                # Ray's (Tune and Train runs, checkpoints)
    submission_id: str = ""          # the `ray job submit` id, or ''

    def to_dict(self) -> dict:
        """Plain JSON data, for Tune's param_space."""
        return {**to_plain(dataclasses.replace(self, experiment=None)),
                "experiment": self.experiment.model_dump(mode="json")}

    @classmethod
    def from_dict(cls, d: dict) -> TrialContext:
        from .config import Experiment
        rest = {k: v for k, v in d.items() if k not in ("experiment", "sweep")}
        return cls(experiment=Experiment.model_validate(d["experiment"]), sweep=SweepRef(**d["sweep"]), **rest)


@dataclass(frozen=True)
class TrackingTarget:
    """The trial's MLflow run, which its worker logs live metrics into (rank 0 only)."""
    uri: str
    run_id: str
    system_metrics: bool = True


@dataclass(frozen=True)
class WorkerConfig:
    run_config: RunConfig
    trial_dir: str
    tracking: TrackingTarget | None = None   # None: no MLflow (`mlora train`, tests)

    def to_dict(self) -> dict:
        return to_plain(self)

    @classmethod
    def from_dict(cls, d: dict) -> WorkerConfig:
        return from_plain(cls, d, "worker config")


@dataclass(frozen=True)
class TrialOutcome:
    """A trial's end: its run's result (mlora_core RunResult.as_dict(), what metrics.trial_metrics
    names) and the few metrics Tune's table and a search read from its last report; or the error
    of a failure that a retry cannot fix (diverged, bad input)."""
    result: dict | None = None
    progress: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def adapter_path(self) -> str | None:
        return (self.result or {}).get("adapter_path")

    def with_adapter(self, path: str) -> TrialOutcome:
        """The same outcome, its adapter read from `path` (a restored checkpoint's copy)."""
        return dataclasses.replace(self, result={**(self.result or {}), "adapter_path": path})

    def report(self) -> dict[str, float]:
        """The trial's last report to Ray: failed=1 marks a trial that ended without a result (the
        sweep counts it: exit code 1)."""
        return {"final": 1, **({"failed": 1} if not self.ok else {}), **self.progress}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrialOutcome:
        d = json.loads(text)
        if not set(d) <= {"result", "progress", "error"}:   # final.json before records: the payload, flat
            result = {k: v for k, v in d.items() if k not in ("metrics", "error")} if "error" not in d else None
            return cls(result, d.get("metrics", {}), d.get("error"))
        return cls(**d)


__all__ = ["SweepRef", "TrackingTarget", "TrialContext", "TrialOutcome", "WorkerConfig"]
