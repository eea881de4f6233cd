"""Per-rank evaluation: the same adapter at every eval rank under every rank-k rule.

Each distinct (rank, rule) function is scored once (two rules that compute the same function, e.g.
every rule at LoRA's full rank, share it). The metric's output type picks the path
(metrics.METRICS): `generate` and `loss` score every function in one pass (each a row of P on the
factors it shares, function_rows; every example under each function, batched longest first, one
row per sequence: the same completions as one function at a time, tests/core/test_evaluate_generate.py);
`choice` scores one function at a time with the packed multiple-choice forward (choice.py).
Under torch.distributed each worker scores its shard and the counts are summed.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from ..aurac import aurac
from ..data.example import Example
from ..functions import distinct_functions, function_rows
from ..inject import set_rank
from ..train import world
from .batching import sum_across_workers
from .choice import choice_scores, packable
from .generate import completion_scores, generate_each
from .loss import eval_loss, loss_terms, mean_loss
from .metrics import MetricConfig


@dataclass(frozen=True)
class RankCurve:
    ranks: tuple[int, ...]
    accuracy: tuple[float, ...]
    eval_loss: tuple[float, ...]
    metric: str                          # the metric's name (metrics.METRICS): exact_match | multiple_choice | loss ...
    n_examples: int
    aurac: float = field(init=False)
    aurac_log2: float = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "aurac", aurac(self.ranks, self.accuracy))
        object.__setattr__(self, "aurac_log2", aurac(self.ranks, self.accuracy, log2=True))

    def as_dict(self) -> dict:
        return {**asdict(self), "aurac": self.aurac, "aurac_log2": self.aurac_log2}

    def __str__(self) -> str:
        rows = "  ".join(f"r{k}={a:.3f}" for k, a in zip(self.ranks, self.accuracy))
        return f"{self.metric}: {rows}  | AURAC {self.aurac:.3f}  AURAC(log2) {self.aurac_log2:.3f}"


@dataclass(frozen=True)
class Scoring:
    """How an evaluation runs: the metric and the batch / length limits (RunConfig's eval settings)."""
    metric: MetricConfig
    batch_size: int = 64
    max_new_tokens: int = 16
    max_length: int = 256


def evaluate_ranks(model, tokenizer, examples: list[Example], ranks, metric: MetricConfig, *,
                   rules=("truncate",), batch_size: int = 64, max_new_tokens: int = 16, max_length: int = 256,
                   device="cpu", log=print, name: str = "eval"
                   ) -> tuple[dict[str, RankCurve], list[tuple[int, int]], float]:
    """({rule: curve}, [(rank, eval tokens on this worker) per distinct function], seconds) under
    `metric` (a task's: TaskConfig.resolved().metric). Leaves the model at rank None."""
    scoring = Scoring(metric, batch_size, max_new_tokens, max_length)
    worker, world_size = world()
    shard = examples[worker::world_size]
    functions, keys = distinct_functions(model, ranks, rules)
    evaluations, t0 = [], time.perf_counter()
    model.eval()
    set_rank(model, None)
    score = _score_one_by_one if metric.entry.output == "choice" else _score_together
    scores = score(model, tokenizer, shard, examples, list(functions.values()), scoring, device, evaluations)
    done = dict(zip(functions, scores))
    if worker == 0:
        for (k, rule), (acc, loss) in zip(functions.values(), scores):
            log(f"{name} rank {k:>4} {rule:<8}: {metric.name} {acc:.3f}  loss {loss:.4f}")
    curves = {rule: RankCurve(tuple(ranks), tuple(done[key][0] for key in ks), tuple(done[key][1] for key in ks),
                              metric.name, len(examples))
              for rule, ks in keys.items()}
    return curves, evaluations, time.perf_counter() - t0


def _accuracy(hits: float, n: float, loss: float, metric: MetricConfig) -> float:
    return float(torch.exp(torch.tensor(-loss))) if metric.entry.output == "loss" else hits / max(n, 1)


def _score_together(model, tokenizer, shard, examples, functions: list[tuple[int, str]], scoring: Scoring, device,
                    evaluations: list) -> list[tuple[float, float]]:
    """[(accuracy, eval loss)] of every function over every worker's shard, each example under
    each function in shared batches (ranks of one basis in one batch)."""
    n, m, metric = len(shard), len(functions), scoring.metric
    loss_sum, loss_count = torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.long)
    hits, tokens = torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.long)
    for basis, idx, rows in function_rows(model, functions) if n else []:
        items = [e for _ in idx for e in shard]             # function idx[0]'s examples, then idx[1]'s, ...
        item_rows = (basis, rows.repeat_interleave(n, 0))
        which = torch.tensor(idx).repeat_interleave(n)      # the function of each item
        sums, counts, seen = loss_terms(model, tokenizer, items, scoring.max_length, scoring.batch_size, device,
                                        item_rows)
        loss_sum.index_add_(0, which, sums)
        loss_count.index_add_(0, which, counts)
        tokens.index_add_(0, which, seen)
        if metric.entry.output == "generate":
            texts, gen_tokens = generate_each(model, tokenizer, [e.prompt for e in items], scoring.max_new_tokens,
                                              device, scoring.batch_size, item_rows)
            scores = completion_scores(texts, items, metric)
            hits.index_add_(0, which, torch.tensor(scores, dtype=torch.float64))
            tokens.index_add_(0, which, torch.tensor(gen_tokens, dtype=torch.long))
    out = []
    for f, (k, _) in enumerate(functions):   # every worker sums the same functions in the same order
        evaluations.append((k, int(tokens[f])))
        total, count, hit, seen_n = sum_across_workers(float(loss_sum[f]), int(loss_count[f]), float(hits[f]), n)
        loss = mean_loss(total, count, scoring.max_length)
        out.append((_accuracy(hit, seen_n, loss, metric), loss))
    return out


def _score_one_by_one(model, tokenizer, shard, examples, functions: list[tuple[int, str]], scoring: Scoring, device,
                      evaluations: list) -> list[tuple[float, float]]:
    """Multiple choice: [(accuracy, eval loss)] of each function in turn (set_rank), over every worker's shard."""
    # ARC: the eval loss's completion is the correct choice, so the multiple-choice forward gives it.
    # Decided on all examples (not the shard), so every worker takes the same collective calls
    shared_loss = packable(model) and all(
        0 <= e.label < len(e.choices) and e.completion == e.choices[e.label] for e in examples)
    batch_size, max_length, out = scoring.batch_size, scoring.max_length, []
    for k, rule in functions:
        set_rank(model, k, rule)
        if shared_loss:
            scored = choice_scores(model, tokenizer, shard, batch_size, device, "packed", loss_max_length=max_length)
            total, count = sum_across_workers(scored.loss_sum, scored.loss_count)
            loss, n_tok = mean_loss(total, count, max_length), scored.tokens
        else:
            loss, loss_tokens = eval_loss(model, tokenizer, shard, max_length, batch_size, device)
            scored = choice_scores(model, tokenizer, shard, batch_size, device)
            n_tok = loss_tokens + scored.tokens
        evaluations.append((k, n_tok))
        correct, total = sum_across_workers(scored.correct(shard, scoring.metric.length_normalized), len(shard))
        out.append((_accuracy(correct, total, loss, scoring.metric), loss))
    set_rank(model, None)
    return out


__all__ = ["RankCurve", "Scoring", "evaluate_ranks"]
