"""One source per default and per record: the schema's defaults are the core's, every trial logs
the config it ran with whole (config.yaml, a real SQLite MLflow store), the records that cross
Ray's process boundaries survive their plain-data form, and Ray / MLflow are imported only by
the modules that own them."""
from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import yaml

from mlora_core.config import AdapterConfig
from mlora_core.methods import RULES, default_rules
from mlora_core.run import RunConfig
from mlora_core.train import TrainConfig
from orchestrator import tracking
from orchestrator.load import parse_experiment
from orchestrator.messages import SweepRef, TrackingTarget, TrialContext, TrialOutcome, WorkerConfig
from orchestrator.plan import plan, resolved_config, run_config
from orchestrator.record import NewSweep, start_record

ROOT = Path(__file__).resolve().parents[2]
# what a trial sets itself (its TrialSpec, its resources), not a default
PER_TRIAL = {RunConfig: {"adapter", "train", "train_task", "eval_task", "val_task", "cache_dir"},   # cache_dir: the sweep's
             TrainConfig: {"threads"},   # one per CPU of the worker (resources.cpus_per_worker)
             AdapterConfig: {"method", "rank", "train_ranks", "eval_ranks", "objective", "p_schedule"}}


def test_the_default_experiment_trains_with_the_cores_defaults_field_by_field():
    exp = parse_experiment({"name": "d"})
    core = RunConfig()
    assert exp.eval.rules == list(core.eval_rules) == list(default_rules())
    assert set(default_rules()) < set(RULES)     # a rule registered as opt-in is not scored by default
    for spec in plan(exp):
        rc = run_config(exp, spec)
        for want, got in ((core, rc), (core.train, rc.train), (core.adapter, rc.adapter)):
            for f in dataclasses.fields(want):
                if f.name not in PER_TRIAL[type(want)]:
                    assert getattr(got, f.name) == getattr(want, f.name), (spec.trial_id, type(want).__name__, f.name)
        assert rc.eval_task == core.eval_task
        # the training task is the core's, minus the validation examples held out of it
        assert dataclasses.replace(rc.train_task, holdout=0) == core.train_task


def test_every_trial_logs_its_resolved_config_as_config_yaml(tmp_path):
    exp = parse_experiment({"name": "d", "output_dir": str(tmp_path / "out")})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trials = plan(exp)
    (tmp_path / "out").mkdir()
    state = start_record(exp, trials, NewSweep(tmp_path / "out", uri, None, "", False))
    c = tracking.client(uri)
    parent = yaml.safe_load(Path(c.download_artifacts(state["parent_run_id"], "config.yaml", str(tmp_path))).read_text())
    assert parent == {"experiment": exp.model_dump(mode="json")}          # whole: never cut to fit a tag
    assert not any(k.startswith("mlora.config") for k in c.get_run(state["parent_run_id"]).data.tags)

    ctx = TrialContext(exp, str(tmp_path / "out"), SweepRef(uri, state["parent_run_id"]), state["experiment_id"],
                       str(tmp_path / "out" / "ray"))
    spec = trials[0]
    rc = run_config(exp, spec)
    run_id = tracking.trial_run(ctx, spec, {}, {})
    tracking.log_config(uri, run_id, resolved_config(exp, spec, rc))
    got = yaml.safe_load(Path(c.download_artifacts(run_id, "config.yaml", str(tmp_path / "t"))).read_text())
    assert RunConfig.from_dict(got["run_config"]) == rc                     # what the core trained with
    assert got["trial"]["trial_id"] == spec.trial_id and got["trial"]["lr"] == spec.lr
    assert parse_experiment(got["experiment"]) == exp


def test_the_records_ray_carries_survive_their_plain_form():
    exp = parse_experiment({"name": "d"})
    ctx = TrialContext(exp, "/out", SweepRef("sqlite:///x.db", "p1"), "7", "/out/ray", "job-1")
    assert TrialContext.from_dict(json.loads(json.dumps(ctx.to_dict()))) == ctx   # Tune's params.json
    cfg = WorkerConfig(run_config(exp, plan(exp)[0]), "/t", TrackingTarget("sqlite:///x.db", "r1", False))
    assert WorkerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg   # Train's train_loop_config
    ok = TrialOutcome({"losses": [0.5], "adapter_path": "/a"}, {"step": 1, "train_loss": 0.5})
    assert TrialOutcome.from_json(ok.to_json()) == ok and ok.ok and ok.report() == {"final": 1, "step": 1,
                                                                                      "train_loss": 0.5}
    assert ok.with_adapter("/b").adapter_path == "/b" and ok.adapter_path == "/a"
    failed = TrialOutcome(error="Diverged: loss nan")
    assert not failed.ok and failed.report() == {"final": 1, "failed": 1}
    # a final.json written before the records (the payload, flat) is still read back
    legacy = TrialOutcome.from_json(json.dumps({"losses": [0.5], "metrics": {"step": 1}}))
    assert legacy == TrialOutcome({"losses": [0.5]}, {"step": 1})
    assert TrialOutcome.from_json(json.dumps({"error": "x"})) == TrialOutcome(error="x")


def _imports(path: Path) -> set[str]:
    """Top-level packages a module imports, at module or function level."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_ray_only_where_trials_run_and_mlflow_only_in_tracking_and_the_registry():
    where = {"ray": {"sweep.py", "worker.py", "search.py", "ray_cluster.py"},
             "mlflow": {"tracking.py", "registry.py", "pyfunc_model.py"}}
    modules = sorted((ROOT / "orchestrator").glob("*.py"))
    for package, allowed in where.items():
        users = {p.name for p in modules if package in _imports(p)}
        assert users <= allowed, (package, users - allowed)
    for p in (ROOT / "mlora_core").rglob("*.py"):
        assert not {"ray", "mlflow", "orchestrator"} & _imports(p), p
