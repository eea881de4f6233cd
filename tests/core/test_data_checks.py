"""Bad data is found before any trial starts, one line each (data.checks.data_problems, what
`mlora validate` runs), naming the file, the row and what it lacks."""
import json

import pytest

from mlora_core.data.checks import data_problems
from mlora_core.data.tasks import TaskConfig, chosen_indices, load_examples
from mlora_core.scoring.metrics import MetricConfig


def jsonl(tmp_path, name, rows, raw: str | None = None) -> str:
    path = tmp_path / name
    path.write_text(raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def pc(path, **kw):
    return TaskConfig(None, format="prompt_completion", path=path, template="Q: {question}\nA: ",
                      columns={"completion": "answer"}, **kw)


def one(problems: list[str]) -> str:
    assert len(problems) == 1 and "\n" not in problems[0], problems
    return problems[0]


def test_good_data_has_no_problem(tmp_path):
    path = jsonl(tmp_path, "ok.jsonl", [{"question": f"q{i}", "answer": f"a{i}"} for i in range(20)])
    assert data_problems(pc(path, n=5), seeds=(0, 1, 2)) == []
    assert data_problems(TaskConfig("synthetic")) == []   # generated in code: nothing to read


def test_a_row_that_lacks_a_column_is_named(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)]
    rows[6] = {"question": "q6", "answr": "typo"}
    path = jsonl(tmp_path, "rows.jsonl", rows)
    line = one(data_problems(pc(path)))
    assert line.startswith(f"{path}: row 7 has no 'answer'") and "question, answr" in line


def test_a_template_field_the_rows_lack(tmp_path):
    path = jsonl(tmp_path, "t.jsonl", [{"prompt": "x", "answer": "y"}])
    line = one(data_problems(pc(path)))
    assert "no column question" in line and "its columns: prompt, answer" in line


def test_an_empty_file_and_a_malformed_line(tmp_path):
    assert "is empty" in one(data_problems(pc(jsonl(tmp_path, "empty.jsonl", [], raw=""))))
    raw = '{"question": "a", "answer": "b"}\n{"question": "c", "answer": "d"}\n{"question": "e", answer: f}\n'
    line = one(data_problems(pc(jsonl(tmp_path, "bad.jsonl", [], raw=raw))))
    assert "bad.jsonl: line 3 is not JSON" in line
    with pytest.raises(ValueError, match="line 3 is not JSON"):   # and a trial that reads it says the same
        load_examples(pc(str(tmp_path / "bad.jsonl")))


def test_a_missing_file_or_split(tmp_path):
    assert "does not exist" in one(data_problems(pc(str(tmp_path / "nope.jsonl"))))
    (tmp_path / "d").mkdir()
    jsonl(tmp_path / "d", "train.jsonl", [{"question": "q", "answer": "a"}])
    assert "no test* file" in one(data_problems(pc(str(tmp_path / "d"), split="test")))
    assert data_problems(pc(str(tmp_path / "d"), split="train")) == []


def test_a_label_outside_the_choices(tmp_path):
    rows = [{"question": "sky?", "choices": ["green", "blue"], "label": i % 2} for i in range(6)] + \
        [{"question": "sea?", "choices": ["red", "blue"], "label": 2}]
    path = jsonl(tmp_path, "mc.jsonl", rows)
    task = TaskConfig(None, format="multiple_choice", path=path, template="{question}")
    assert "row 7: label 2 names none of the 2 choices" in one(data_problems(task))


def test_a_conversation_without_an_assistant_turn(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {"messages": [{"role": "user", "content": "hi"}]}]
    task = TaskConfig(None, format="messages", path=jsonl(tmp_path, "chat.jsonl", rows))
    assert "row 2: no assistant turn" in one(data_problems(task))


def test_only_the_rows_a_sweep_uses_are_built(tmp_path):
    """Row-level format checks run on the rows any of the sweep's seeds will read."""
    rows = [{"question": "sky?", "choices": ["green", "blue"], "label": 1} for _ in range(50)]
    rows[0]["label"] = 5
    path = jsonl(tmp_path, "mc.jsonl", rows)
    task = TaskConfig(None, format="multiple_choice", path=path, template="{question}", n=3)
    used = {i for s in (0, 1) for i in chosen_indices(
        TaskConfig(None, format="multiple_choice", path=path, template="{question}", n=3, seed=s), 50)}
    assert bool(data_problems(task, seeds=(0, 1))) == (0 in used)
    assert data_problems(TaskConfig(None, format="multiple_choice", path=path, template="{question}"))


def test_a_function_metric_that_does_not_import():
    with pytest.raises(ValueError, match="does not import"):
        MetricConfig("function", function="no_such_module:score")


def test_a_hub_dataset_that_cannot_be_reached_is_one_line():
    """Hub datasets are read through `datasets` (offline here: HF_DATASETS_OFFLINE=1, no cache)."""
    task = TaskConfig(None, format="alpaca", dataset="no-such-owner/no-such-dataset", split="train")
    assert data_problems(task) == []   # not read at validate time: that needs the network
    with pytest.raises(ValueError, match=r"^task: could not load no-such-owner/no-such-dataset \(train\) from the hub"):
        load_examples(task)
