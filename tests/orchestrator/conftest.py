"""Shared pieces for orchestrator tests: a tiny local model, small task files, config writer,
and the CLI run in a subprocess (each sweep starts and stops its own local Ray)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .services import mlflow_schema, mlflow_server, own_mlflow_server, postgres  # noqa: F401  (PostgreSQL + MLflow)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama + the builtin tokenizer, saved like any HF model."""
    from mlora_core.builtin_model import build_tokenizer
    from tests.core.helpers import tiny_llama

    path = tmp_path_factory.mktemp("model")
    tok = build_tokenizer()
    tiny_llama(tok, hidden=32, max_positions=128).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def platypus_files(tmp_path_factory) -> Path:
    """Open-Platypus-format train/test files: scored by eval loss, so every rank's accuracy
    (exp(-loss)) is a distinct non-zero number and AURAC checks mean something."""
    d = tmp_path_factory.mktemp("platypus")
    for split, n, off in (("train", 48, 0), ("test", 8, 100)):
        rows = [{"instruction": f"Add {i} and {i + 3}.", "output": f"{i}+{i + 3}={2 * i + 3}"}
                for i in range(off, off + n)]
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.fixture(scope="session")
def tiny_sweep(tiny_model_dir, platypus_files, tmp_path_factory):
    """One finished sweep (all three arms, registry on) shared by the end-to-end, report and
    registry tests: (output dir, sweep.json, the CLI's CompletedProcess)."""
    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "out"
    exp = tiny_experiment(tiny_model_dir, platypus_files, out,
                          arms={"matryoshka": {"objectives": ["summed", "stratified"]}, "lora": {"ranks": [1, 4]},
                                "dylora": {}},
                          registry={"enabled": True, "model_name": "tiny-test", "tolerance": 0.5})
    proc = mlora("sweep", write_yaml(tmp / "exp.yaml", exp))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "registered: models:/tiny-test/1" in proc.stdout
    return out, json.loads((out / "sweep.json").read_text()), proc


def tiny_experiment(model_dir: Path, data_dir: Path, out: Path, **overrides) -> dict:
    exp = {
        "name": "t",
        "model": str(model_dir),
        "tasks": {"train": {"name": "platypus", "path": str(data_dir), "split": "train"},
                  "eval": {"name": "platypus", "path": str(data_dir), "split": "test"},
                  "val": {"n": 8}},   # held out of the 48 training rows
        "adapter": {"rank": 4, "target_modules": ["q_proj", "v_proj"]},
        "arms": {"matryoshka": {}, "lora": {"ranks": [1, 4]}},
        "lrs": [1e-2],
        "training": {"steps": 6, "batch_size": 4, "max_length": 96, "warmup_steps": 1, "checkpoint_every": 3},
        "eval": {"batch_size": 8},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 2},
        "cost": {"device": "cpu-core", "price_per_device_hour": 0.05},
        "registry": {"enabled": False},
        "output_dir": str(out),
    }
    for key, value in overrides.items():
        exp[key] = value
    return exp


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    # Ray 2.60 default: token auth for local clusters (the token in ~/.ray/auth_token guards the
    # gRPC ports Ray opens on all interfaces)
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}, **extra)
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def mlora(*args, timeout=600, env=None, cwd=ROOT, **kw) -> subprocess.CompletedProcess:
    """`mlora ARGS` as a user runs it (python -m, so the checkout's code is used; from any cwd:
    cli_env puts the checkout on PYTHONPATH)."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env or cli_env(), cwd=cwd, **kw)


def runs_by_trial(out: Path) -> dict[str, list]:
    """A sweep's MLflow trial runs, grouped by trial id (a list each: duplicates would show)."""
    from orchestrator import tracking
    state = json.loads((out / "sweep.json").read_text())
    by_trial: dict[str, list] = {}
    for r in tracking.trial_runs(state["tracking_uri"], state["parent_run_id"]):
        by_trial.setdefault(r.data.tags["mlora.trial_id"], []).append(r)
    return by_trial


def start_sweep(cfg: Path, *args) -> subprocess.Popen:
    """`mlora sweep CFG` in its own session: os.killpg(proc.pid, SIGKILL) kills the driver and the
    local Ray it started, as a crash of the machine's session would."""
    log = open(sweep_log(cfg), "w")  # the driver writes it; a failing test shows its end (sweep_log_tail)
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(cfg), *map(str, args)], cwd=ROOT,
                            env=cli_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def sweep_log(cfg: Path) -> Path:
    return Path(cfg).with_suffix(".sweep.log")


def sweep_log_tail(cfg: Path, chars: int = 3000) -> str:
    """The end of what a start_sweep driver printed (for a failing test's message)."""
    path = sweep_log(cfg)
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


def kill_when(proc: subprocess.Popen, ready, timeout: float, poll: float = 0.5):
    """SIGKILL proc's whole session as soon as ready() returns something truthy (returned), or at
    the timeout (None). Always kills: no sweep outlives its test."""
    import signal
    import time
    got = None
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            got = ready()
            if got:
                break
            time.sleep(poll)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return got
