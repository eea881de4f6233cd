"""The sweep report and the MLflow registry entry, from one real tiny sweep (Ray + SQLite)."""
from __future__ import annotations

import csv
import json
import re

import pytest

from mlora_core import adapter_layers, load_adapter, set_rank
from mlora_core.scoring.generate import generate
from orchestrator import tracking
from orchestrator.record import load_sweep

from .conftest import mlora, runs_by_trial

pytestmark = pytest.mark.slow

PROMPTS = ["Question: Add 7 and 10.\nAnswer:", "Question: Add 12 and 15.\nAnswer:"]


def test_report_holds_every_plot_and_headline_matches_mlflow(tiny_sweep):
    out, state, _ = tiny_sweep
    rep = out / "report"
    page = (rep / "index.html").read_text()
    for name in ("rank_curve", "aurac", "cost", "loss", "frontier"):
        assert (rep / f"{name}.png").stat().st_size > 1000
        assert f'alt="{name}"' in page
    assert page.count("data:image/png;base64,") == 5
    assert "The compute-matched frontier" in page and "| TFLOPs ≤ | / grid |" in (rep / "summary.md").read_text()
    data = json.loads((rep / "report.json").read_text())

    # recompute the headline from MLflow directly
    runs = {tid: r for tid, (r,) in runs_by_trial(out).items()}
    grid = sum(r.data.metrics["device_hours"] for tid, r in runs.items() if tid.startswith("lora-"))
    best = data["best_matryoshka"]
    (source,) = [r for tid, r in runs.items() if tid.startswith(best["arm"])]
    mat = source.data.metrics
    assert best["device_hours"] == pytest.approx(mat["device_hours"])
    assert best["cost_share"] == pytest.approx(mat["device_hours"] / grid)
    assert best["aurac"] == pytest.approx(mat[f"aurac_{best['rule']}"])
    assert data["grid"]["device_hours"] == pytest.approx(grid)
    # every rule was scored and logged for every trial; the primary names are the first rule's
    for r in runs.values():
        m = r.data.metrics
        assert {f"aurac_{rule}" for rule in ("truncate", "prefix", "svd")} <= set(m)
        assert m["aurac"] == m["aurac_truncate"] and m["acc_rank_1"] == m["acc_truncate_rank_1"]
    # summary.md: the envelope, then one row per (arm, rule) with that curve's own AURAC
    curves_table = (rep / "summary.md").read_text().split("\n\n")[0]   # then the frontier's table
    rows = [line for line in curves_table.splitlines() if line.startswith("| ")][1:]
    assert rows[0].startswith("| LoRA grid envelope (2 runs")
    by_label = {r.split(" | ")[0][2:]: r for r in rows[1:]}
    assert len(by_label) == len(data["curves"]) == len(rows) - 1
    row = by_label[f"{best['arm']} [{best['rule']}]"]
    assert f"| {best['aurac']:.3f} |" in row and "±" not in row   # one seed: no "± 0.000"
    result = load_sweep(state)
    assert {int(k): v for k, v in data["envelope"].items()} == pytest.approx(result.envelope)
    assert [c["rank"] for c in data["verdict"]] == [1, 2, 4]
    assert data["recommended"]["rank"] == result.recommended.rank
    # the page shows those numbers: the verdict first, then one run vs the grid
    assert page.index("Verdict") < page.index("One run vs the LoRA grid")
    assert f"{best['aurac']:.3f}" in page and f"{100 * best['cost_share']:.0f}%" in page
    assert re.search(r"recommended: rank \d+, ", page)
    assert "matryoshka-stratified-diag-r4 [svd]" in page
    rows = list(csv.DictReader(open(rep / "runs.csv")))
    assert sorted(r["trial_id"] for r in rows) == sorted(runs)
    assert {r["run_id"] for r in rows} == {r.info.run_id for r in runs.values()}
    assert all(r["acc_svd_rank_1"] for r in rows)


def test_registered_model_serves_any_rank_and_rule_like_mlora_core(tiny_sweep, tiny_model_dir):
    import mlflow
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, state, _ = tiny_sweep
    mlflow.set_tracking_uri(state["tracking_uri"])
    client = tracking.client(state["tracking_uri"])
    version = client.get_model_version_by_alias("tiny-test", "recommended")
    assert client.get_model_version_by_alias("tiny-test", "best-aurac").version == version.version
    assert float(version.tags["mlora.aurac"]) > 0 and "mlora.source_run_id" in version.tags
    # what is registered is the sweep's recommendation
    data = json.loads((out / "report" / "report.json").read_text())
    rec = data["recommended"]
    assert (version.tags["mlora.arm"], version.tags["mlora.rule"]) == (rec["arm"], rec["rule"])
    assert int(version.tags["mlora.recommended_rank"]) == rec["rank"]
    served = mlflow.pyfunc.load_model("models:/tiny-test@recommended")
    params = {p.name: p.default for p in served.metadata.signature.params.params}
    assert (params["rank"], params["rule"]) == (rec["rank"], rec["rule"])   # the defaults serve the recommendation

    # reference: the trial's own adapter, loaded with mlora_core
    src = version.tags["mlora.source_run_id"]
    adapter = client.download_artifacts(src, "adapter", str(out / "ref"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    load_adapter(model, adapter)
    max_rank = next(iter(adapter_layers(model)))[1].config.rank
    for rank, rule in ((1, "truncate"), (1, "svd"), (max_rank, "prefix")):
        set_rank(model, rank, rule)
        expected, _ = generate(model, tok, PROMPTS, max_new_tokens=8)
        assert served.predict(PROMPTS, params={"rank": rank, "rule": rule, "max_new_tokens": 8}) == expected
    set_rank(model, rec["rank"], rec["rule"])
    expected, _ = generate(model, tok, PROMPTS, max_new_tokens=8)
    assert served.predict(PROMPTS, params={"max_new_tokens": 8}) == expected
    with pytest.raises(Exception, match=f"rank must be in 1..{max_rank}"):
        served.predict(PROMPTS, params={"rank": 9})


def test_export_rank_k_loads_in_peft(tiny_sweep, tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, state, _ = tiny_sweep
    client = tracking.client(state["tracking_uri"])
    version = client.get_model_version_by_alias("tiny-test", "recommended")
    ours = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    load_adapter(ours, client.download_artifacts(version.tags["mlora.source_run_id"], "adapter", str(tmp_path / "ref")))
    rank = next(iter(adapter_layers(ours)))[1].config.rank
    dest = tmp_path / "peft-svd"
    proc = mlora("export", "models:/tiny-test@recommended", "--rank", rank, "--rule", "svd", dest,
                 "--tracking-uri", state["tracking_uri"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads((dest / "adapter_config.json").read_text())["r"] == rank
    ids = torch.tensor([[5, 9, 12, 20, 7]])
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), dest).eval()
    set_rank(ours, rank, "svd")
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, ours(ids).logits, rtol=1e-4, atol=1e-5)
    bad = mlora("export", "models:/tiny-test@recommended", "--rank", 64, tmp_path / "x", "--tracking-uri",
                state["tracking_uri"])
    assert bad.returncode == 2 and f"--rank must be in 1..{rank}" in bad.stderr


def test_export_finds_the_sweeps_store_without_flags_and_bad_input_writes_nothing(tiny_sweep, tmp_path):
    """After `make sweep`, the README's `mlora export models:/NAME@recommended ...` finds the store of the
    sweep under ./outputs that registers NAME (or takes the sweep's output dir); a model that does not
    exist exits 2 with one line and leaves the working directory as it was (no new ./mlflow.db)."""
    out, state, _ = tiny_sweep
    rule = tracking.client(state["tracking_uri"]).get_model_version_by_alias("tiny-test", "recommended").tags["mlora.rule"]
    cwd = tmp_path / "work"
    (cwd / "outputs").mkdir(parents=True)
    (cwd / "outputs" / "t").symlink_to(out)
    ok = mlora("export", "models:/tiny-test@recommended", "--rank", 1, "r1", cwd=cwd)
    assert ok.returncode == 0, ok.stderr
    assert f"(rank 1, rule {rule})" in ok.stdout     # the rule actually used, not "recommended"
    assert json.loads((cwd / "r1" / "adapter_config.json").read_text())["r"] == 1
    ok = mlora("export", out, "--rank", 1, "--rule", "svd", tmp_path / "from-dir", cwd=cwd)
    assert ok.returncode == 0 and "models:/tiny-test@recommended (rank 1, rule svd)" in ok.stdout, ok.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (("models:/tiny-test@recommended",), ("models:/nope@recommended", "--tracking-uri", state["tracking_uri"]),
                 ("models:/tiny-test@recommended", "--tracking-uri", "sqlite:///mlflow.db")):
        bad = mlora("export", *args, "--rank", 1, "x", cwd=empty)
        assert bad.returncode == 2, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("mlora: error: "), bad.stderr
        assert list(empty.iterdir()) == [], list(empty.iterdir())
