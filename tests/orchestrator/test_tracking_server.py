"""The team's deployment (docs/cluster.md): a sweep tracked in an MLflow tracking server on
PostgreSQL that proxies the artifacts (services.py starts both), end to end, and the same trials
tracked in SQLite and in the server read back as the same SweepResult."""
from __future__ import annotations

import dataclasses
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator import tracking
from orchestrator.record import load_output_dir

from .conftest import mlora, runs_by_trial, tiny_experiment, write_yaml

pytestmark = pytest.mark.slow

MODEL = "tiny-server"
# metrics measured with a clock (or the process's memory): the rest of a trial is deterministic
TIMED = {"wall_seconds", "train_seconds", "eval_seconds", "setup_seconds", "device_hours", "cost_usd",
         "peak_memory_mb", "tokens_per_s"}   # and MLflow's system/ metrics: measured, not computed
QUIET = ("Downloading artifacts", "Uploading artifacts")  # MLflow's transfer bars (cli.QUIET_ENV turns them off)


@pytest.fixture(scope="module")
def config(tiny_model_dir, platypus_files, tmp_path_factory) -> Path:
    """One experiment (Matryoshka + LoRA ranks 1 and 4, registry on) for both stores: each sweep
    gets its own --output-dir, the server sweep --tracking-uri too."""
    tmp = tmp_path_factory.mktemp("server-sweep")
    exp = tiny_experiment(tiny_model_dir, platypus_files, tmp / "unused",
                          registry={"enabled": True, "model_name": MODEL, "tolerance": 0.5})
    return write_yaml(tmp / "exp.yaml", exp)


@pytest.fixture(scope="module")
def server_sweep(config, mlflow_server):
    out = config.parent / "out-server"
    proc = mlora("sweep", config, "--output-dir", out, "--tracking-uri", mlflow_server)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def test_sweep_report_register_export_through_the_server(server_sweep, mlflow_server, tmp_path):
    import mlflow
    from safetensors.torch import load_file

    out, proc = server_sweep
    url = mlflow_server
    assert f"MLflow: {url} (parent run" in proc.stdout
    assert f"registered: models:/{MODEL}/1" in proc.stdout
    assert f"MLflow UI: {url}\n" in proc.stdout and "--backend-store-uri http" not in proc.stdout
    assert not any(s in proc.stdout + proc.stderr for s in QUIET)
    state = json.loads((out / "sweep.json").read_text())
    assert state["tracking_uri"] == url
    # the server holds runs and artifacts: no store of its own in the output dir
    assert not {"mlflow.db", "mlartifacts", "mlruns"} & {p.name for p in out.iterdir()}

    client = tracking.client(url)
    by_trial = runs_by_trial(out)
    assert sorted(by_trial) == sorted(t["trial_id"] for t in state["trials"]) and len(by_trial) == 3
    assert client.get_run(state["parent_run_id"]).info.artifact_uri.startswith("mlflow-artifacts:")
    for tid, (run,) in by_trial.items():
        assert run.info.status == "FINISHED", tid
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
        assert run.data.params["arm"] and run.data.params["lr"] == "0.01"
        assert 0 < run.data.metrics["aurac"] <= 1 and run.data.metrics["train_flops"] > 0
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 6
        # the artifacts come back through the server (the proxy), as the trial wrote them
        got = tmp_path / "dl" / tid
        got.mkdir(parents=True)
        curve = json.loads(Path(client.download_artifacts(run.info.run_id, "rank_curve.json", str(got))).read_text())
        result = json.loads((out / "trials" / tid / "result.json").read_text())
        assert curve == result["curves"]
        adapter = Path(client.download_artifacts(run.info.run_id, "adapter", str(got)))
        assert (adapter / "adapter_config.json").is_file()
        weights = load_file(adapter / "adapter_model.safetensors")
        assert weights and all(t.isfinite().all() for t in weights.values())

    # a user elsewhere, with the output dir and the server's URL only: nothing lands in their cwd
    # but what they asked for (no mlflow.db, no mlruns)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    with ThreadPoolExecutor(1) as pool:  # report and register are independent: run side by side
        report = pool.submit(mlora, "report", out, "--tracking-uri", url, cwd=cwd)
        reg = mlora("register", out, "--tracking-uri", url, cwd=cwd)
        rep = report.result()
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]
    assert (out / "report" / "index.html").is_file()
    assert reg.returncode == 0, reg.stdout[-2000:] + reg.stderr[-2000:]
    assert f"registered models:/{MODEL}/2" in reg.stdout
    exp = mlora("export", f"models:/{MODEL}@recommended", "--rank", "1", "peft-r1", "--tracking-uri", url, cwd=cwd)
    assert exp.returncode == 0, exp.stdout[-2000:] + exp.stderr[-2000:]
    config = json.loads((cwd / "peft-r1" / "adapter_config.json").read_text())
    assert config["r"] == 1 and (cwd / "peft-r1" / "adapter_model.safetensors").is_file()
    for p in (rep, reg, exp):
        assert not any(s in p.stdout + p.stderr for s in QUIET)
    assert sorted(os.listdir(cwd)) == ["peft-r1"]

    version = client.get_model_version_by_alias(MODEL, "recommended")
    assert version.version == "2"
    mlflow.set_tracking_uri(url)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@recommended")
        texts = model.predict(["Question: Add 7 and 10.\nAnswer: "], params={"rank": 1, "max_new_tokens": 4})
    finally:
        mlflow.set_tracking_uri(None)
    assert len(texts) == 1 and isinstance(texts[0], str)


def test_sqlite_and_server_give_the_same_sweep_result(server_sweep, config, mlflow_server):
    """The same trials tracked in the sweep's SQLite file and in the server: the same curves under
    every rule, verdict and recommendation, to the bit (trials are deterministic on one machine at
    a fixed thread count; metrics travel as exact decimal floats through REST and PostgreSQL)."""
    out_server, _ = server_sweep
    out_sqlite = config.parent / "out-sqlite"
    proc = mlora("sweep", config, "--output-dir", out_sqlite)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _, local = load_output_dir(out_sqlite)
    _, remote = load_output_dir(out_server)
    assert local.tracking_uri.startswith("sqlite:") and remote.tracking_uri == mlflow_server

    assert local.rules == remote.rules == ("truncate", "prefix", "svd")
    assert list(local.arms) == list(remote.arms)
    for name, arm in local.arms.items():
        assert list(arm.curves) == list(remote.arms[name].curves) == list(local.rules), name
        for rule, curve in arm.curves.items():
            assert dataclasses.asdict(curve) == dataclasses.asdict(remote.arms[name].curves[rule]), (name, rule)
    trials = {t.trial_id: t for t in remote.trials}
    for t in local.trials:
        r = trials[t.trial_id]
        assert (t.curves, t.val_curves) == (r.curves, r.val_curves), t.trial_id
        computed = lambda m: {k: v for k, v in m.items() if k not in TIMED and not k.startswith("system/")}  # noqa: E731
        assert computed(t.metrics) == computed(r.metrics), t.trial_id

    def deterministic(c):  # a candidate without its measured device-hours (the choice is made on FLOPs)
        return c and (c.rank, c.arm, c.rule, c.accuracy, c.flops)
    assert [deterministic(c) for c in local.verdict] == [deterministic(c) for c in remote.verdict]
    assert deterministic(local.recommended) == deterministic(remote.recommended) is not None
    assert (local.envelope, local.envelope_aurac, local.envelope_aurac_log2) == \
        (remote.envelope, remote.envelope_aurac, remote.envelope_aurac_log2)
    untimed = lambda e: {k: v for k, v in dataclasses.asdict(e).items()  # noqa: E731
                         if k not in ("device_hours", "cost_share")}
    assert [untimed(e) for e in local.one_run] == [untimed(e) for e in remote.one_run]
