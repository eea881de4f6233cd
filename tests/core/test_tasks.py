import json

import pytest

from mlora_core.builtin_model import build_tokenizer
from mlora_core.data.tasks import TaskConfig, load_examples
from mlora_core.data.tokenize import collate, tokenize
from mlora_core.scoring.metrics import parse_final_number
from mlora_core.synthetic import make_examples


@pytest.mark.parametrize("text,expected", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72"), ("pen 12, cup 31, 12+31=43 #### 43", "43"),
    ("#### 1,234", "1234"), ("the answer is 5 or maybe 7", "7"), ("#### -3", "-3"), ("no number", None),
    ("#### 12.0", "12"),
])
def test_gsm8k_final_number(text, expected):
    assert parse_final_number(text) == expected


def test_prompt_tokens_are_masked_and_answer_tokens_kept():
    tok = build_tokenizer()
    [ex] = load_examples(TaskConfig("synthetic", split="train", n=1))
    data = tokenize(tok, [ex], max_length=512)
    ids, labels = data.input_ids[0], data.labels[0]
    n_prompt = len(tok(ex.prompt, add_special_tokens=False)["input_ids"]) + (tok.bos_token_id is not None)
    assert all(l == -100 for l in labels[:n_prompt])
    assert labels[n_prompt:] == ids[n_prompt:] and labels[-1] == tok.eos_token_id
    assert tok.decode(labels[n_prompt:-1]) == ex.completion
    batch = collate(data.input_ids + [ids[:5]], data.labels + [labels[:5]], tok.pad_token_id)
    assert batch["attention_mask"][1].sum() == 5 and (batch["labels"][1, 5:] == -100).all()
    assert (batch["input_ids"][1, 5:] == tok.pad_token_id).all()


def test_truncation_is_counted():
    tok = build_tokenizer()
    exs = load_examples(TaskConfig("synthetic", split="train", n=4))
    data = tokenize(tok, exs, max_length=10)
    assert data.truncated == 4 and all(len(x) == 10 for x in data.input_ids)


def test_synthetic_splits_are_disjoint_and_deterministic():
    from mlora_core.synthetic import ITEMS, NAMES, split_of
    train, val, test = make_examples("train", 4000), make_examples("val", 207), make_examples("test", 500)
    assert make_examples("train", 50) == train[:50]
    questions = [{e["question"] for e in split} for split in (train, val, test)]
    assert not questions[0] & questions[1] and not questions[0] & questions[2] and not questions[1] & questions[2]
    assert len(questions[1]) == 207   # every val question once: 69 (name, item) pairs x 3 templates
    pairs = {(n, i): split_of(n, i) for n in NAMES for i in ITEMS}
    assert sum(s == "val" for s in pairs.values()) == 69 and sum(s == "test" for s in pairs.values()) == 391
    # the task's held-out part of the training data is the val split
    held = load_examples(TaskConfig("synthetic", split="train", holdout=150, held_out=True))
    assert [e.prompt for e in held] == [e.prompt for e in load_examples(TaskConfig("synthetic", split="val", n=150))]


def test_validation_held_out_of_a_file_is_fixed_and_never_trained_on(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"What is {i} plus 1?", "answer": f"#### {i + 1}"})
                              for i in range(40)))
    val = load_examples(TaskConfig("gsm8k", path=str(path), holdout=10, held_out=True))
    assert len(val) == 10
    for seed in (0, 1, 2):   # every trial seed trains on the same 30 others, in its own order
        train = load_examples(TaskConfig("gsm8k", path=str(path), seed=seed, holdout=10))
        assert len(train) == 30 and not {e.prompt for e in train} & {e.prompt for e in val}
    assert {e.prompt for e in load_examples(TaskConfig("gsm8k", path=str(path), seed=5, holdout=10, held_out=True))} \
        == {e.prompt for e in val}
    with pytest.raises(ValueError, match="leaves nothing"):
        load_examples(TaskConfig("gsm8k", path=str(path), holdout=40))


def test_local_files_in_hub_formats(tmp_path):
    rows = {
        "gsm8k": [{"question": "Tom has 3 pens and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"}],
        "platypus": [{"instruction": "Say hi.", "output": "hi", "input": "", "data_source": "x"}],
        "arc": [{"id": "q1", "question": "Sky color?", "answerKey": "B",
                 "choices": {"text": ["green", "blue", "red"], "label": ["A", "B", "C"]}}],
    }
    for name, data in rows.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in data))
        [ex] = load_examples(TaskConfig(name, path=str(path)))
        assert ex.prompt and ex.completion
    gsm = load_examples(TaskConfig("gsm8k", path=str(tmp_path / "gsm8k.jsonl")))[0]
    assert gsm.prompt == "Question: Tom has 3 pens and buys 4. How many?\nAnswer: " and gsm.answer == "7"
    arc = load_examples(TaskConfig("arc", path=str(tmp_path / "arc.jsonl")))[0]
    assert arc.label == 1 and arc.choices == (" green", " blue", " red") and arc.completion == " blue"


def test_bad_task_input_is_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'mmlu'"):
        TaskConfig("mmlu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_examples(TaskConfig("gsm8k", path=str(tmp_path / "missing.jsonl")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"q": "x", "a": "y"}))
    with pytest.raises(ValueError, match=r"rows lack fields \['question', 'answer'\]"):
        load_examples(TaskConfig("gsm8k", path=str(bad)))
