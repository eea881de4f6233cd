"""The tokenized training set is built once per sweep and reused by every trial that needs the
same one (mlora_core/data/token_cache.py): the same tokens as tokenizing afresh, a new key when
the data file, the task or max_length changes."""
import json

from mlora_core.data.tasks import TaskConfig, load_examples
from mlora_core.data.token_cache import training_tokens
from mlora_core.data.tokenize import tokenize


def test_built_once_then_reused_with_identical_tokens(tmp_path, tok):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} plus 1?", "answer": f"#### {i + 1}"}) + "\n"
                            for i in range(50)))
    task = TaskConfig("gsm8k", path=str(path), n=20, seed=3, holdout=5)
    lines = []
    built, n = training_tokens(task, tok, "builtin:tiny", 64, str(tmp_path / "cache"), log=lines.append)
    fresh = tokenize(tok, load_examples(task), 64)
    assert n == 20 and built.input_ids == fresh.input_ids and built.labels == fresh.labels
    assert lines[-1].startswith("training tokens: built train-")
    reused, n = training_tokens(task, tok, "builtin:tiny", 64, str(tmp_path / "cache"), log=lines.append)
    assert lines[-1].startswith("training tokens: reused train-") and n == 20
    assert (reused.input_ids, reused.labels, reused.truncated) == (fresh.input_ids, fresh.labels, fresh.truncated)
    short, _ = training_tokens(task, tok, "builtin:tiny", 16, str(tmp_path / "cache"), log=lines.append)
    assert lines[-1].startswith("training tokens: built") and short.truncated == 20   # max_length is in the key
    training_tokens(TaskConfig("gsm8k", path=str(path), n=20, seed=4, holdout=5), tok, "builtin:tiny", 64,
                    str(tmp_path / "cache"), log=lines.append)
    assert lines[-1].startswith("training tokens: built")   # another seed: other rows, another key
    with path.open("a") as f:   # the file changed: its fingerprint is in the key
        f.write(json.dumps({"question": "What is 99 plus 1?", "answer": "#### 100"}) + "\n")
    training_tokens(task, tok, "builtin:tiny", 64, str(tmp_path / "cache"), log=lines.append)
    assert lines[-1].startswith("training tokens: built")
    assert len(list((tmp_path / "cache").glob("train-*.safetensors"))) == 4
