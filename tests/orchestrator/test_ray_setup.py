"""What each Ray process of a trial has to load: kept small on purpose (README, Performance)."""
from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def test_unpickling_the_worker_loop_does_not_import_mlflow_or_the_orchestrator_config():
    # Ray ships worker_loop by reference (cloudpickle); a Train worker then imports its module
    code = (
        "import sys, ray.cloudpickle as cp\n"
        "from orchestrator.sweep import worker_loop\n"
        "sys.stdout.buffer.write(cp.dumps(worker_loop))\n"
    )
    blob = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=True).stdout
    check = (
        "import sys, ray.cloudpickle as cp\n"
        "fn = cp.loads(sys.stdin.buffer.read())\n"
        "heavy = [m for m in ('mlflow', 'orchestrator.config', 'orchestrator.tracking', 'pydantic') if m in sys.modules]\n"
        "print(fn.__module__, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", check], cwd=ROOT, input=blob, capture_output=True, check=True)
    assert out.stdout.decode().strip() == "orchestrator.worker []"


def test_trainer_drops_only_the_ray_data_callback_when_no_dataset_is_passed():
    import ray.train
    from ray.train.torch import TorchTrainer

    from orchestrator.sweep import _trainer_class

    cls = _trainer_class()
    assert cls is not TorchTrainer, "Ray's private hook moved: the DatasetManager actor is back (README)"

    def names(trainer_cls):
        trainer = trainer_cls(lambda cfg: None, scaling_config=ray.train.ScalingConfig(num_workers=1))
        return [type(cb).__name__ for cb in trainer._create_default_callbacks()]

    plain = names(TorchTrainer)
    assert "DatasetsCallback" in plain
    assert names(cls) == [n for n in plain if n != "DatasetsCallback"]
