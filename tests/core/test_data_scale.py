"""Data at scale (issue 38): a trial turns only the rows it uses into Python rows, validate names the
bad row of a large file, and the seeded shuffle behind both is random.shuffle's, exactly, at sizes
where it is done on arrays (data/shuffle.py). Timings: benchmarks/data_scale.py."""
import dataclasses
import json
import random

import numpy as np
import pytest

from mlora_core.data import sources
from mlora_core.data.checks import data_problems
from mlora_core.data.formats import FORMATS
from mlora_core.data.shuffle import SMALL, origins, shuffled_at, swaps
from mlora_core.data.tasks import HOLDOUT_SEED, TaskConfig, chosen_indices, load_examples, used_indices

ROWS = 50_000


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """The `datasets` cache of these files in the test's own folder."""
    import datasets
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")


def big_file(tmp_path, lacks: int | None = None) -> str:
    path = tmp_path / "big.jsonl"
    rows = ({"question": f"What is {i} plus 1?", "answer": f"#### {i + 1}"} for i in range(ROWS))
    path.write_text("".join(json.dumps({"question": r["question"], "answr": "typo"} if i == lacks else r) + "\n"
                            for i, r in enumerate(rows)))
    return str(path)


def task(path: str, **kw) -> TaskConfig:
    return TaskConfig(None, format="prompt_completion", path=path, template="Q: {question}\nA: ",
                      columns={"completion": "answer"}, **kw)


def reference(size: int, holdout: int, held_out: bool, seed: int, n: int | None) -> list[int]:
    """What chosen_indices has always returned: the shuffles of the list of indices itself."""
    order = list(range(size))
    if holdout:
        random.Random(HOLDOUT_SEED).shuffle(order)
        order = order[:holdout] if held_out else order[holdout:]
    random.Random(seed).shuffle(order)
    return order[:n] if n else order


def test_only_the_chosen_rows_leave_arrow(tmp_path, monkeypatch):
    """Of 50k rows, load_examples reads exactly the n chosen ones out of the table and builds n
    Examples: the other 49k stay in Arrow."""
    asked, built = [], []
    rows_at = sources.rows_at
    monkeypatch.setattr(sources, "rows_at", lambda table, indices: asked.append(list(indices)) or
                        rows_at(table, indices))
    fmt = FORMATS["prompt_completion"]
    monkeypatch.setitem(FORMATS, "prompt_completion", dataclasses.replace(
        fmt, build=lambda row, spec: built.append(row) or fmt.build(row, spec)))
    t = task(big_file(tmp_path), n=40, holdout=150, seed=3)
    examples = load_examples(t)
    assert asked == [reference(ROWS, 150, False, 3, 40)] and len(built) == len(examples) == 40
    assert [e.prompt for e in examples] == [f"Q: What is {i} plus 1?\nA: " for i in asked[0]]


def test_validate_names_the_one_bad_row_of_a_large_file(tmp_path):
    path = big_file(tmp_path, lacks=40_000)
    problems = data_problems(task(path, n=100), seeds=(0, 1, 2))
    assert len(problems) == 1 and problems[0].startswith(f"{path}: row 40001 has no 'answer'"), problems
    assert "question, answr" in problems[0]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 17, 1000, 4097, 9001])
def test_array_shuffle_is_random_shuffle(size):
    """The draws (blocks of words from numpy's Mersenne Twister) and the traced swaps give the very
    permutation random.Random(seed).shuffle gives, at every position."""
    for seed in (0, 1, 7, 2**40 + 3):
        x = list(range(size))
        random.Random(seed).shuffle(x)
        assert origins(swaps(seed, size), np.arange(size)).tolist() == x


def test_chosen_indices_beyond_the_small_size_are_unchanged():
    """Past SMALL, chosen_indices goes through the arrays: the same indices, in the same order, as
    shuffling the list itself, with a holdout either side and without."""
    size = SMALL + 12_345
    for holdout, held_out, seed, n in ((0, False, 0, 1000), (150, False, 1, 1000), (150, True, 2, 50),
                                       (150, False, 5, None)):
        t = TaskConfig(None, format="text", path="x.jsonl", holdout=holdout, held_out=held_out, seed=seed, n=n)
        assert chosen_indices(t, size) == reference(size, holdout, held_out, seed, n)
    assert shuffled_at(size, 4, [size - 1, 0, 77]) == [reference(size, 0, False, 4, None)[p]
                                                       for p in (size - 1, 0, 77)]


def test_validate_checks_the_rows_of_every_seed():
    """used_indices (validate's rows, the holdout's shuffle read once for all seeds) is the union of
    each seed's chosen_indices."""
    size = SMALL + 999
    for held_out, n in ((False, 500), (True, 100)):
        t = TaskConfig(None, format="text", path="x.jsonl", holdout=300, held_out=held_out, n=n)
        union = set().union(*(reference(size, 300, held_out, s, n) for s in (0, 1, 2)))
        assert used_indices(t, size, (0, 1, 2)) == sorted(union)
