"""Register a sweep's recommended adapter in the MLflow model registry; export any rank to PEFT.

One model version per registration: the pyfunc in pyfunc_model.py (models from code, so no
pickles), logged in the sweep's parent run. What is registered is the sweep's recommendation
(results.py): the adapter of the arm and rule that serve the recommended rank most cheaply,
a Matryoshka run or a fixed-rank LoRA run alike. It serves any rank and rule; its defaults are
the recommended ones. The version is tagged with its rank curve, AURAC, cost and source trial run,
and gets two aliases (aliases, not the deprecated stages): `recommended` (this registration) and
`best-aurac` (the highest AURAC among the model's versions).
"""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

from . import tracking
from .load import first_line
from .record import load_output_dir, read_sweep_state
from .results import SweepResult

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
EXAMPLE_PROMPT = "Question: How much is 2 plus 3?\nAnswer: "


def register_sweep(output_dir: str | Path, result: SweepResult | None = None, tracking_uri: str | None = None,
                   model_name: str | None = None) -> str:
    """Log + register the sweep's recommended adapter; returns 'models:/NAME/VERSION'."""
    import mlflow

    state = read_sweep_state(output_dir)
    if result is None:
        state, result = load_output_dir(output_dir, tracking_uri)
    uri = result.tracking_uri
    exp = state["experiment"]
    name = model_name or model_name_of(state)
    rec = result.recommended
    if rec is None:
        raise ValueError("no finished trial in this sweep: nothing to register")
    arm = result.arms[rec.arm]
    curve = arm.curves[rec.rule]
    # the seed (at the curve's lr) that does best where the adapter will serve
    trial = max((t for t in arm.trials if t.trial_id in curve.trial_ids),
                key=lambda t: t.curves[rec.rule].get(rec.rank, 0.0))
    client = tracking.client(uri)
    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(client.download_artifacts(trial.run_id, "adapter", tmp))
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(run_id=result.parent_run_id):
            info = log_adapter_model(adapter, exp["model"], exp.get("model_revision"), rec.rank, arm.rank, rec.rule)
    # register_model print()s "Successfully registered model ..." and "Created version ..." itself (no
    # switch reaches them): kept out of our output, which says the same in one line (cli.cmd_register)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        version = mlflow.register_model(info.model_uri, name, tags=_version_tags(trial, rec, curve, result, exp["model"]))
    client.set_registered_model_alias(name, "recommended", version.version)
    best = max(client.search_model_versions(f"name = '{name}'"),
               key=lambda v: float(v.tags.get("mlora.aurac", "-1")))
    client.set_registered_model_alias(name, "best-aurac", best.version)
    return f"models:/{name}/{version.version}"


def _version_tags(trial, rec, curve, result, base_model: str) -> dict[str, str]:
    """A registered version's tags: what it is and where it came from."""
    return {
        "mlora.source_run_id": trial.run_id, "mlora.trial_id": trial.trial_id, "mlora.sweep_run_id": result.parent_run_id,
        "mlora.arm": rec.arm, "mlora.rule": rec.rule, "mlora.recommended_rank": str(rec.rank),
        "mlora.accuracy": f"{rec.accuracy:.6f}", "mlora.rank_curve": json.dumps(dict(zip(curve.ranks, curve.mean))),
        "mlora.aurac": f"{curve.aurac:.6f}", "mlora.aurac_log2": f"{curve.aurac_log2:.6f}",
        "mlora.device_hours": f"{trial.metrics.get('device_hours', 0):.6g}",
        "mlora.total_flops": f"{trial.metrics.get('total_flops', 0):.6g}",
        "mlora.cost_usd": f"{trial.metrics.get('cost_usd', 0):.6g}", "mlora.base_model": base_model}


def log_adapter_model(adapter: Path, model_id: str, revision: str | None, recommended_rank: int, max_rank: int,
                      recommended_rule: str = "truncate"):
    """Log the pyfunc (pyfunc_model.py) in the active MLflow run; returns its ModelInfo."""
    import mlflow

    import mlora_core
    from mlora_core.models import check_model_id, is_packaged_model, model_provenance, resolve_model_path

    artifacts = {"adapter": str(adapter)}
    config = {"base_model_id": model_id, "base_model_revision": revision, "recommended_rank": recommended_rank,
              "recommended_rule": recommended_rule, "max_rank": max_rank}
    if is_packaged_model(model_id):  # referenced, not copied (540 MB): rebuilt from the package it names
        config["base_model_source"] = model_provenance(model_id)["model_source"]
    elif check_model_id(model_id) in ("builtin", "local"):  # self-contained: the base weights travel with it
        artifacts["base_model"] = resolve_model_path(model_id, log=lambda *_: None)
    # the example is served once while logging (MLflow runs it to check the model), which also
    # makes the signature carry the params and their defaults: the recommended rank and rule
    example = ([EXAMPLE_PROMPT], {"rank": recommended_rank, "rule": recommended_rule, "max_new_tokens": 8})
    return mlflow.pyfunc.log_model(
        name="adapter", python_model=str(PYFUNC_CODE), artifacts=artifacts,
        code_paths=[str(Path(mlora_core.__file__).parent)], model_config=config, input_example=example,
        pip_requirements=["torch", "transformers", "safetensors", "mlflow"]
        + (["gguf"] if is_packaged_model(model_id) else []))


def model_name_of(state: dict) -> str:
    """The registered model name of a sweep (its sweep.json): registry.model_name, else mlora-<name>."""
    exp = state["experiment"]
    return exp.get("registry", {}).get("model_name") or f"mlora-{exp['name']}"


def resolve_model_source(source: str, tracking_uri: str | None, search_root: Path = Path("outputs")) -> tuple[str, str]:
    """(model URI, tracking URI) for `mlora export SOURCE`. SOURCE is a sweep's output dir (its
    recommended adapter, in its own store) or a models:/ URI; without a tracking URI, a models:/
    URI is looked up in the stores of the sweeps under ./outputs that register that name, so the
    README's command works after `make sweep` with no flags."""
    if Path(source, "sweep.json").is_file():
        state = read_sweep_state(source)
        return f"models:/{model_name_of(state)}@recommended", tracking_uri or state["tracking_uri"]
    if not source.startswith("models:/"):
        raise ValueError(f"{source}: neither a models:/ URI nor a sweep's output dir (no sweep.json)")
    if tracking_uri:
        return source, tracking_uri
    name = source.removeprefix("models:/").split("@")[0].split("/")[0]
    stores = sorted({read_sweep_state(p.parent)["tracking_uri"] for p in search_root.glob("*/sweep.json")
                     if model_name_of(read_sweep_state(p.parent)) == name})
    if len(stores) != 1:
        found = f"several sweeps under {search_root}/ register {name}" if stores else \
            f"no sweep under {search_root}/ registers {name}"
        raise ValueError(f"{source}: {found}; pass --tracking-uri URI (or $MLFLOW_TRACKING_URI) or the sweep's output dir")
    return source, stores[0]


def export_peft(model_uri: str, rank: int, out: str | Path, tracking_uri: str,
                rule: str | None = None) -> tuple[Path, str]:
    """Write a PEFT adapter (adapter_config.json + adapter_model.safetensors) at `rank` under `rule`
    (default: the rule the registered model recommends); returns (out, the rule used). Nothing is
    written, anywhere, unless the model exists and the rank fits it."""
    import mlflow

    from mlora_core import load_adapter, save_adapter
    from mlora_core.export import read_adapter_config
    from mlora_core.models import load_registered_base

    mlflow.set_tracking_uri(tracking.existing_store(tracking_uri))
    mlflow.set_registry_uri(tracking_uri)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty directory")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp))
        except Exception as e:  # noqa: BLE001  unknown model/alias/version: one line
            raise ValueError(f"cannot fetch {model_uri} from {tracking_uri}: {first_line(e)}") from None
        artifacts = local / "artifacts"
        adapter = artifacts / "adapter"
        config, _ = read_adapter_config(adapter)
        if not 1 <= rank <= config.rank:
            raise ValueError(f"--rank must be in 1..{config.rank}, got {rank}")
        mlmodel_cfg = _model_config(local)
        carried = artifacts / "base_model"
        model, _ = load_registered_base(str(carried) if carried.is_dir() else None, mlmodel_cfg["base_model_id"],
                                        mlmodel_cfg.get("base_model_source"), mlmodel_cfg.get("base_model_revision"))
        load_adapter(model, adapter)
        rule = rule or mlmodel_cfg.get("recommended_rule", "truncate")
        save_adapter(model, out, rank=rank, rule=rule, base_model_name_or_path=mlmodel_cfg["base_model_id"])
    return out, rule


def _model_config(local: Path) -> dict:
    import yaml
    meta = yaml.safe_load((local / "MLmodel").read_text())
    return meta.get("flavors", {}).get("python_function", {}).get("config", {}) or {}
