"""The cluster path: cluster.yaml against Ray's own launcher schema, every experiment YAML
through `mlora validate` + `mlora plan`, and (slow) a real 2-node local Ray cluster running
`ray job submit -- mlora sweep` through scripts/local_cluster_demo.sh."""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from orchestrator import tracking

from .conftest import ROOT, cli_env, tiny_experiment, write_yaml

CLUSTER_YAML = ROOT / "cluster.yaml"
DEMO = ROOT / "scripts" / "local_cluster_demo.sh"
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))


# ---- cluster.yaml ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(cluster) -> dict:
    """cluster.yaml as `ray up` sees it before any cloud call: merged with Ray's AWS defaults,
    setup commands merged per node kind, per-type worker bounds filled in."""
    from ray.autoscaler._private.util import prepare_config
    return prepare_config(copy.deepcopy(cluster))


def test_cluster_yaml_passes_rays_launcher_validation(cluster, prepared):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import validate_config

    validate_config(prepared)  # Ray's ray-schema.json + its own consistency checks
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)  # the file as written, not only after defaults
    assert cluster["provider"]["type"] == "aws"
    assert cluster["head_node_type"] in cluster["available_node_types"]


def test_cluster_node_types_declare_gpus_and_autoscale(prepared):
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert sorted(t["resources"]["GPU"] for t in gpu_types.values()) == [1, 8]
    for name, t in gpu_types.items():
        assert t["resources"]["CPU"] >= 1, name
        assert 0 <= t["min_workers"] < t["max_workers"], f"{name}: must be able to scale"
        assert t["node_config"]["InstanceType"], name
    assert {t["node_config"]["InstanceType"] for t in gpu_types.values()} == {"g5.xlarge", "p4de.24xlarge"}
    assert sum(t["min_workers"] for t in types.values()) <= prepared["max_workers"]
    # the paper YAMLs' trials (1 GPU + 8 CPUs) must fit the 8-GPU node type
    for path in EXPERIMENTS:
        res = yaml.safe_load(path.read_text()).get("resources", {})
        if res.get("gpus_per_worker"):
            assert any(t["resources"]["GPU"] >= res["gpus_per_worker"] * res.get("max_concurrent_trials", 1)
                       and t["resources"]["CPU"] >= res["cpus_per_worker"] * res.get("max_concurrent_trials", 1)
                       for t in gpu_types.values()), path.name


def test_cluster_setup_installs_cuda_torch_then_the_synced_project(prepared):
    remote = [r for r, local in prepared["file_mounts"].items() if local == "."]
    assert len(remote) == 1, "the project dir (.) must be synced to the nodes"
    for kind in ("head_setup_commands", "worker_setup_commands"):
        cmds = prepared[kind]
        torch = [i for i, c in enumerate(cmds) if re.search(r"pip install .*\btorch\b.*--index-url https://download"
                                                            r"\.pytorch\.org/whl/cu\d+", c)]
        project = [i for i, c in enumerate(cmds) if re.search(rf"pip install .*-e {re.escape(remote[0])}\b", c)]
        assert torch and project and torch[0] < project[0], kind
    # the same token-auth mode on every node, and MLflow's URI for the job driver on the head
    assert any("RAY_AUTH_MODE=token" in c for c in prepared["setup_commands"])
    assert any("MLFLOW_TRACKING_URI" in c for c in prepared["head_setup_commands"])
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "ray start --head" in head_start and "--dashboard-host=" in head_start
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(prepared["worker_start_ray_commands"])


# ---- experiments/ ------------------------------------------------------------------------

@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.name for p in EXPERIMENTS])
def test_every_experiment_validates_and_plans(path, capsys):
    """`mlora validate` + `mlora plan` (in-process: the same exit codes, ~10x faster than a
    subprocess each). Offline (the suite sets HF_HUB_OFFLINE=1): a hub model's cost is n/a."""
    from orchestrator.cli import main

    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    m = re.search(r": ok \(.+: (\d+) trials( \+ up to \d+ searched)?\)", out)
    assert m, out
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"\n{m.group(1)} trials{m.group(2) or ''}" in out
    assert "estimated" in out  # a cost line, or "estimated cost: n/a" for a hub model offline


def test_paper_experiments_follow_method_md():
    """The paper's setup (docs/method.md): the two Llama models, all seven projections, powers-of-two ranks,
    lrs inside 5e-6..1e-3, seeds 42/666/2408, 3 epochs, 4 x 8 batch, GPU resources and prices."""
    from orchestrator.load import load_experiment
    from orchestrator.plan import plan, search_groups

    # smollm2-*: test_real_config.py; own-data-*: test_data_cli.py
    paper = [p for p in EXPERIMENTS if not p.name.startswith(("tiny", "smollm2", "own-data"))]
    assert {p.name for p in paper} >= {"gsm8k-llama-3.2-1b.yaml", "gsm8k-llama-3.1-8b.yaml",
                                       "platypus-arc-llama-3.2-1b.yaml", "p-schedule-ablation.yaml"}
    models = set()
    for path in paper:
        exp = load_experiment(path)
        models.add(exp.model)
        assert set(exp.adapter.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj"}, path.name
        r = exp.adapter.rank
        assert r & (r - 1) == 0 and exp.adapter.eval_rank_list == [2 ** i for i in range(r.bit_length())]
        groups = search_groups(exp)
        if groups:   # searched: the range, else a grid of at least 3 lrs, inside docs/method.md's
            assert all(5e-6 <= g.low < g.high <= 1e-3 and g.num_samples >= 3 for g in groups), path.name
        else:
            assert all(5e-6 <= lr <= 1e-3 for lr in exp.lrs) and len(exp.lrs) >= 3, path.name
        assert exp.seeds == [42, 666, 2408], path.name
        assert exp.training.epochs == 3 and exp.training.batch_size == 4 and exp.training.grad_accum == 8
        assert exp.resources.gpus_per_worker >= 1 and exp.resources.max_concurrent_trials * \
            exp.resources.gpus_per_worker * exp.resources.workers_per_trial <= 8, path.name
        assert exp.cost.price_per_device_hour > 0 and exp.cost.effective_tflops >= 10 and exp.cost.device != "cpu"
        trials = plan(exp)
        assert {t.seed for t in trials} | {s for g in groups for s in g.seeds} == {42, 666, 2408}
    assert models == {"meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"}

    from mlora_core.p_schedule import SCHEDULES
    ablation = load_experiment(ROOT / "experiments" / "p-schedule-ablation.yaml")
    assert set(ablation.arms.matryoshka.p_schedules) == set(SCHEDULES)
    assert ablation.arms.lora is not None
    arc = load_experiment(ROOT / "experiments" / "platypus-arc-llama-3.2-1b.yaml")
    assert (arc.tasks.train.name, arc.tasks.eval.name) == ("platypus", "arc")


# ---- the local `ray job submit` demo (slow) ---------------------------------------------

def _pids_with(entry: str) -> list[int]:
    """Processes whose environment holds `entry` (KEY=VALUE), by /proc: the demo's own marker."""
    mark = entry.encode()
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if mark in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _marked_pids(base: str) -> list[int]:
    """Processes of the demo's cluster (every node)."""
    return _pids_with(f"MLORA_DEMO_CLUSTER={base}")


def _node_pids(node: str) -> list[int]:
    """Processes of one node of the demo."""
    return _pids_with(f"MLORA_DEMO_NODE={node}")


def _free_ports(n: int) -> list[int]:
    import socket
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("0.0.0.0", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_cluster_job_survives_its_worker_node_killed_mid_trial(tiny_model_dir, platypus_files, mlflow_server,
                                                               tmp_path):
    """The deployment docs/cluster.md describes, rehearsed by scripts/local_cluster_demo.sh: two Ray
    nodes, `ray job submit -- mlora sweep`, tracking into the team's server (MLflow on PostgreSQL,
    artifacts through the server). Every trial runs on the worker node (the head offers no CPU);
    that node is SIGKILLed (raylet, agent, the trial's process) after the trial's third checkpoint
    and a new worker node joins (what the autoscaler does): Tune retries the trial there from its
    last checkpoint, in its own MLflow run, and the job succeeds. Every process stopped after."""
    import signal
    import sys
    import threading
    jobdir, out = tmp_path / "job", tmp_path / "out"
    jobdir.mkdir()
    trial, steps = "lora-r2-lr1e-02-s0", 60
    exp = tiny_experiment(tiny_model_dir, platypus_files, out, arms={"lora": {"ranks": [2]}},
                          training={"steps": steps, "batch_size": 4, "max_length": 96, "warmup_steps": 1,
                                    "checkpoint_every": 5},
                          resources={"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1,
                                     "max_failures": 2},
                          tracking={"uri": mlflow_server, "experiment": f"node-{tmp_path.name}"})
    cfg = write_yaml(jobdir / "exp.yaml", exp)
    # the GCS declares a node dead after 3 missed 1 s health checks (default 5 x 3 s)
    env = cli_env(MLORA_DEMO_SUBMISSION_ID="mlora-node-kill", MLORA_DEMO_KEEP="0", MLORA_DEMO_HEAD_CPUS="0",
                  RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3")
    proc = subprocess.Popen(["bash", str(DEMO), str(cfg), str(out)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    trial_dir = out / "trials" / trial
    pid_file, ckpts = trial_dir / "worker-0.pid", trial_dir / "checkpoints"
    killed, new_node, t0 = None, None, time.monotonic()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if pid_file.is_file() and len(list(ckpts.glob("step_*/trainer_state.json"))) >= 3:
                log = "".join(lines)
                base = re.search(r"temp (/tmp/mlrd-\w+)/head", log).group(1)
                gcs = re.search(r"ray start --head \(127\.0\.0\.1:(\d+)", log).group(1)
                node = f"{base}/worker"
                killed = int(pid_file.read_text())
                killed_at = sorted(ckpts.glob("step_*/trainer_state.json"))[-1].parent.name
                assert killed in _node_pids(node), "the trial must run on the worker node"
                for pid in _node_pids(node):
                    os.kill(pid, signal.SIGKILL)
                # a replacement worker node, as the autoscaler would start: same token, same marker
                # (the demo's exit stops it), fresh ports
                ports = dict(zip(["dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
                                  "metrics-export-port", "node-manager-port", "object-manager-port"], _free_ports(6)))
                new_node = f"{base}/worker2"
                start = subprocess.run(
                    [str(Path(sys.executable).parent / "ray"), "start", f"--address=127.0.0.1:{gcs}",
                     "--node-ip-address=127.0.0.1", "--num-cpus=1", f"--object-store-memory={200 * 1024 * 1024}",
                     f"--temp-dir={new_node}", "--disable-usage-stats", *(f"--{k}={v}" for k, v in ports.items())],
                    env={**env, "MLORA_DEMO_CLUSTER": base, "MLORA_DEMO_NODE": new_node, "RAY_AUTH_MODE": "token",
                         "RAY_AUTH_TOKEN_PATH": f"{base}/token",
                         "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"},
                    capture_output=True, text=True, timeout=120)
                assert start.returncode == 0, start.stdout + start.stderr
                break
            time.sleep(0.05)
        proc.wait(timeout=420)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)   # the script's EXIT trap stops every node it and we started
            proc.wait(timeout=60)
    reader.join(timeout=10)
    log = "".join(lines)
    assert killed is not None, "never saw the trial's third checkpoint\n" + log[-4000:]
    base = re.search(r"temp (/tmp/mlrd-\w+)/head", log).group(1)
    assert not _marked_pids(base), "Ray processes of the demo (or the new node) still running"
    assert not Path(base).exists(), "the demo's temp dirs must be removed"
    assert proc.returncode == 0, log[-5000:]
    # two nodes at the start (head 0 CPUs + worker 1 CPU, from `ray status`), the job ran the sweep
    assert len(re.findall(r"^\s*1 node_[0-9a-f]+$", log, re.M)) == 2 and "/1.0 CPU" in log, log[:3000]
    assert "Job 'mlora-node-kill' succeeded" in log, log[-3000:]
    assert "sweep t: 1 trials" in log
    state = json.loads((out / "sweep.json").read_text())
    assert state["tracking_uri"] == mlflow_server and not (out / "mlflow.db").exists()
    runs = tracking.trial_runs(state["tracking_uri"], state["parent_run_id"])
    (run,) = runs                                           # one run, continued, not two
    assert run.data.tags["mlora.trial_id"] == trial
    assert run.info.status == "FINISHED" and run.data.tags["mlora.restarts"] == "1"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    assert run.data.tags["mlflow.parentRunId"] == state["parent_run_id"] and run.data.tags.get("ray.trial_id")
    # sweep.py tags RAY_JOB_ID: inside a Ray worker that is the core job id (hex), set under job submit
    assert re.fullmatch(r"[0-9a-f]{8}", run.data.tags.get("ray.job_id", "")), run.data.tags
    assert "ray.job_id=" in log and "report:" in log  # the demo's MLflow summary + `mlora report`
    assert f"browse: {mlflow_server}" in log
    assert int(pid_file.read_text()) != killed
    assert (trial_dir / "restore-0" / "trainer_state.json").is_file()   # Ray handed back its checkpoint
    result = json.loads((trial_dir / "result.json").read_text())
    assert 0 < result["resumed_from_step"] < steps    # from a checkpoint: not from scratch, not retrained
    print(f"killed at checkpoint {killed_at}, resumed from step {result['resumed_from_step']}, "
          f"the retry's set-up {result.get('setup_seconds', float('nan')):.1f} s, "
          f"the test {time.monotonic() - t0:.0f} s")
