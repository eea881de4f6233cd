"""The sweep report and the MLflow registry entry, from one real tiny sweep (Ray + SQLite)."""
from __future__ import annotations

import csv
import json
import re

import pytest

from mlora_core import load_adapter, set_rank
from mlora_core.evaluate import generate
from orchestrator import tracking
from orchestrator.results import envelope, load_sweep

from .conftest import mlora

pytestmark = pytest.mark.slow

PROMPTS = ["Question: Add 7 and 10.\nAnswer:", "Question: Add 12 and 15.\nAnswer:"]


def test_report_holds_every_plot_and_headline_matches_mlflow(tiny_sweep):
    out, state, _ = tiny_sweep
    rep = out / "report"
    page = (rep / "index.html").read_text()
    for name in ("rank_curve", "aurac", "cost", "loss"):
        assert (rep / f"{name}.png").stat().st_size > 1000
        assert f'alt="{name}"' in page
    assert page.count("data:image/png;base64,") == 4
    data = json.loads((rep / "report.json").read_text())

    # recompute the headline from MLflow directly
    client = tracking.client(state["tracking_uri"])
    runs = {r.data.tags["mlora.trial_id"]: r for r in tracking.trial_runs(state["tracking_uri"],
                                                                          state["parent_run_id"])}
    mat = runs["matryoshka-diag-r4-lr1e-02-s0"].data.metrics
    grid = sum(r.data.metrics["device_hours"] for tid, r in runs.items() if tid.startswith("lora-"))
    head = data["headline"]["matryoshka"]["matryoshka-diag"]
    assert head["device_hours"] == pytest.approx(mat["device_hours"])
    assert head["cost_fraction"] == pytest.approx(mat["device_hours"] / grid)
    assert head["aurac"] == pytest.approx(mat["aurac"])
    assert data["headline"]["grid_device_hours"] == pytest.approx(grid)
    env = envelope(load_sweep(state["tracking_uri"], state["parent_run_id"]))
    assert {int(k): v for k, v in data["headline"]["envelope"].items()} == pytest.approx(env)
    assert head["per_rank"]["1"]["matryoshka"] == pytest.approx(mat["acc_rank_1"])
    # the page shows those numbers
    assert f"{head['aurac']:.3f}" in page and f"{100 * head['cost_fraction']:.0f}%" in page
    assert re.search(r"Recommended rank: <b>\d+</b>", page)
    rows = list(csv.DictReader(open(rep / "runs.csv")))
    assert sorted(r["trial_id"] for r in rows) == sorted(runs)
    assert {r["run_id"] for r in rows} == {r.info.run_id for r in runs.values()}



def test_registered_model_serves_any_rank_like_mlora_core(tiny_sweep, tiny_model_dir):
    import mlflow
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, state, _ = tiny_sweep
    mlflow.set_tracking_uri(state["tracking_uri"])
    client = tracking.client(state["tracking_uri"])
    version = client.get_model_version_by_alias("tiny-test", "recommended")
    assert client.get_model_version_by_alias("tiny-test", "best-aurac").version == version.version
    assert float(version.tags["mlora.aurac"]) > 0 and "mlora.source_run_id" in version.tags
    served = mlflow.pyfunc.load_model("models:/tiny-test@recommended")

    # reference: the trial's own adapter, loaded with mlora_core
    src = version.tags["mlora.source_run_id"]
    adapter = client.download_artifacts(src, "adapter", str(out / "ref"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    load_adapter(model, adapter)
    outputs = {}
    for rank in (1, 4):
        set_rank(model, rank)
        expected, _ = generate(model, tok, PROMPTS, max_new_tokens=8)
        outputs[rank] = served.predict(PROMPTS, params={"rank": rank, "max_new_tokens": 8})
        assert list(outputs[rank]) == expected
    with pytest.raises(Exception, match="rank must be in 1..4"):
        served.predict(PROMPTS, params={"rank": 9})


def test_export_rank_k_loads_in_peft(tiny_sweep, tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, state, _ = tiny_sweep
    dest = tmp_path / "peft-r2"
    proc = mlora("export", "models:/tiny-test@recommended", "--rank", 2, dest, "--tracking-uri",
                 state["tracking_uri"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads((dest / "adapter_config.json").read_text())["r"] == 2
    ids = torch.tensor([[5, 9, 12, 20, 7]])
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), dest).eval()
    ours = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    client = tracking.client(state["tracking_uri"])
    src = client.get_model_version_by_alias("tiny-test", "recommended").tags["mlora.source_run_id"]
    load_adapter(ours, client.download_artifacts(src, "adapter", str(tmp_path / "ref")))
    set_rank(ours, 2)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, ours(ids).logits, rtol=1e-4, atol=1e-5)
    bad = mlora("export", "models:/tiny-test@recommended", "--rank", 64, tmp_path / "x", "--tracking-uri",
                state["tracking_uri"])
    assert bad.returncode == 2 and "--rank must be in 1..4" in bad.stderr

