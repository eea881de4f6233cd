"""How one micro-batch becomes a loss: the three Matryoshka objectives (docs/method.md).

    summed      L(W + A diag(P) B)                        1 forward   (the paper's; LoRA, DyLoRA too)
    per_rank    sum_t w̄_t L(W + s(t) A[:, :t] B[:t])        |R| forwards, one per train rank t
    stratified  each example b at one rank t_b:            1 forward, an unbiased estimate of
                L_b(W + s(t_b) A[:, :t_b] B[:t_b])                    per_rank's loss and gradient

Each objective's passes are its registry entry's (methods.OBJECTIVES[name].passes); this module
gives them the micro-batch's RNG. w̄_t are the P schedule's weights, normalised
(p_schedule.rank_weights): diag and binary give the plain mean, geometric favours small ranks.
Both nested objectives run the adapter at full rank with P rows s(t) 1[j <= t]
(AdapterLayer.example_p): a mask rather than a slice, so every pass has the same shapes
(torch.compile builds one graph, not one per rank) and the extra matmul work is the adapter's,
~1% of a step.

Why stratified is unbiased: the loss is the mean over the batch's answer tokens, so with each
example at rank t with probability w̄_t its expectation is sum_t w̄_t L_t(batch), per_rank's
loss on the same batch. The assignment is balanced (systematic sampling, methods.assign_ranks:
rank t gets floor or ceil of batch * w̄_t examples, so with uniform weights every micro-batch of
at least |R| examples holds every rank) and a pure function of (seed, worker, micro-batch): DDP
workers draw their own, and a resumed run draws the same ones.
"""
from __future__ import annotations

import random

import torch

from .config import AdapterConfig
from .methods import OBJECTIVES, Pass, assign_ranks, check


def stratified_rng(seed: int, worker: int, micro_batch: int) -> random.Random:
    """The micro-batch's RNG (stratified's assignment): a pure function of its inputs (exact resume,
    independent DDP workers)."""
    return random.Random(f"mlora-stratified/{seed}/{worker}/{micro_batch}")


def passes(config: AdapterConfig, batch: int, *, seed: int, worker: int, micro_batch: int,
           train_rank: int | None = None, dtype: torch.dtype = torch.float32) -> list[Pass]:
    """The forward/backward passes that make up one micro-batch's loss under `config`'s objective.
    `train_rank` is DyLoRA's rank of this step (its forward is truncated, not masked); `dtype`
    is the adapters' (P rows are computed in it)."""
    objective = OBJECTIVES[check("objective", OBJECTIVES, config.objective)]
    return objective.passes(config, batch, stratified_rng(seed, worker, micro_batch), train_rank, dtype)


__all__ = ["Pass", "assign_ranks", "passes", "stratified_rng"]
