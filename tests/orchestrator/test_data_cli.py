"""Your own data through the CLI: a user-style experiment validates and plans; bad data is one line
naming the file and row, exit 2, before anything is written (no Ray, no MLflow, no output dir)."""
import json

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.load import load_experiment

from .conftest import ROOT


def experiment(tmp_path, train: dict, eval_: dict) -> str:
    cfg = {"name": "own", "model": "builtin:tiny", "output_dir": str(tmp_path / "out"),
           "tasks": {"train": train, "val": {"n": 2}, "eval": eval_}, "adapter": {"rank": 4, "eval_ranks": [1, 4]},
           "arms": {"matryoshka": {"objectives": ["stratified"]}}, "lrs": [1.0e-3], "seeds": [0, 1]}
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def rows(tmp_path, name: str, data: list[dict]) -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return str(path)


def test_a_user_experiment_validates_plans_and_resolves(tmp_path, capsys):
    path = rows(tmp_path, "qa.jsonl", [{"q": f"{i} + 1?", "a": str(i + 1)} for i in range(30)])
    task = {"path": path, "format": "prompt_completion", "template": "Q: {q}\nA: ", "columns": {"completion": "a"}}
    cfg = experiment(tmp_path, task, {**task, "n": 10, "metric": {"name": "exact_match", "normalize": ["strip"]}})
    assert main(["validate", cfg]) == 0 and "ok (own: 2 trials)" in capsys.readouterr().out
    assert main(["plan", cfg]) == 0
    from orchestrator.plan import plan, run_config
    exp = load_experiment(cfg)
    rc = run_config(exp, plan(exp)[0])
    assert rc.train_task.format == "prompt_completion" and rc.train_task.holdout == 2
    assert rc.eval_task.resolved().metric.name == "exact_match" and rc.val_task.resolved().metric.normalize == ("strip",)


@pytest.mark.parametrize("bad,message", [
    ("missing", "row 3 has no 'a'"), ("malformed", "line 2 is not JSON"), ("nofile", "does not exist"),
    ("field", "no column q"),
])
def test_bad_data_is_one_line_and_writes_nothing(tmp_path, capsys, bad, message):
    data = [{"q": "1?", "a": "2"}, {"q": "2?", "a": "3"}, {"q": "3?"}, {"q": "4?", "a": "5"}] + \
        [{"q": f"{i}?", "a": "x"} for i in range(10)]
    path = rows(tmp_path, "qa.jsonl", data if bad == "missing" else data[:2] + data[3:])
    if bad == "malformed":
        (tmp_path / "qa.jsonl").write_text('{"q": "1?", "a": "2"}\n{"q": "2?" "a": "3"}\n')
    if bad == "nofile":
        path = str(tmp_path / "nope.jsonl")
    template = "Q: {question}\nA: " if bad == "field" else "Q: {q}\nA: "
    task = {"path": path, "format": "prompt_completion", "template": template, "columns": {"completion": "a"}}
    cfg = experiment(tmp_path, task, task)
    for command in ("validate", "plan", "sweep", "train"):
        assert main([command, cfg]) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith(f"mlora: error: {cfg}: ") and message in "\n".join(err), err
        assert all(line.startswith(("mlora: error:", "  tasks.")) for line in err), err
    assert not (tmp_path / "out").exists()


def test_the_example_of_your_own_data_validates():
    """experiments/own-data-boolq-chat.yaml reads data/boolq-chat/, which `make real` writes."""
    exp = load_experiment(ROOT / "experiments" / "own-data-boolq-chat.yaml")
    assert exp.tasks.train.format == "messages" and exp.tasks.eval.metric.normalize == ["strip", "lower", "punctuation"]
    from orchestrator.data_check import data_problems_of
    assert data_problems_of(exp) == []


def test_chats_on_a_model_without_a_chat_template_need_one(tmp_path, capsys):
    chats = [{"messages": [{"role": "user", "content": f"{i}?"}, {"role": "assistant", "content": "yes"}]}
             for i in range(10)]
    task = {"path": rows(tmp_path, "chat.jsonl", chats), "format": "messages"}
    cfg = experiment(tmp_path, task, task)   # builtin:tiny has no chat template
    assert main(["validate", cfg]) == 2
    err = capsys.readouterr().err
    assert "tasks.train.chat_template: format messages needs a chat template" in err
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    cfg = experiment(tmp_path, {**task, "chat_template": template}, {**task, "chat_template": template})
    assert main(["validate", cfg]) == 0
