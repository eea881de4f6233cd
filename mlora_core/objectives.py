"""How one micro-batch becomes a loss: the three Matryoshka objectives (docs/method.md).

    summed      L(W + A diag(P) B)                        1 forward   (the paper's; LoRA, DyLoRA too)
    per_rank    sum_t w̄_t L(W + s(t) A[:, :t] B[:t])        |R| forwards, one per train rank t
    stratified  each example b at one rank t_b:            1 forward, an unbiased estimate of
                L_b(W + s(t_b) A[:, :t_b] B[:t_b])                    per_rank's loss and gradient
    stratified_share  stratified, and the optimizer's update of component j x 1/share_j
                (update_scales: components that fewer examples train move as far per step)

w̄_t are the P schedule's weights, normalised (p_schedule.rank_weights): diag and binary give
the plain mean, geometric favours small ranks. Both nested objectives run the adapter at full
rank with P rows s(t) 1[j <= t] (AdapterLayer.example_p): a mask rather than a slice, so every
pass has the same shapes (torch.compile builds one graph, not one per rank) and the extra
matmul work is the adapter's, ~1% of a step.

Why stratified is unbiased: the loss is the mean over the batch's answer tokens, so with each
example at rank t with probability w̄_t its expectation is sum_t w̄_t L_t(batch), per_rank's
loss on the same batch. The assignment is balanced (systematic sampling: rank t gets
floor or ceil of batch * w̄_t examples, so with uniform weights every micro-batch of at least
|R| examples holds every rank) and a pure function of (seed, worker, micro-batch): DDP workers
draw their own, and a resumed run draws the same ones.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import torch

from .config import AdapterConfig
from .methods import OBJECTIVES
from .p_schedule import nested_p, rank_weights


@dataclass(frozen=True)
class Pass:
    """One forward/backward of a micro-batch: its loss weight and per-example P rows."""
    weight: float
    p_rows: torch.Tensor | None     # (batch, r); None = the layer's own P (summed, LoRA, DyLoRA)
    flop_rank: int                  # the adapter rank its matmuls run at (cost.py)


def assign_ranks(batch: int, weights: dict[int, float], rng: random.Random) -> list[int]:
    """One train rank per example: rank t gets floor or ceil of batch * w̄_t examples and each
    example is at t with probability exactly w̄_t (systematic sampling, then shuffled)."""
    offset, ranks = rng.random(), list(weights)
    bounds = list(itertools.accumulate(weights.values()))
    bounds[-1] = 1.0  # rounding must not leave the last position unassigned
    out = [next(t for t, b in zip(ranks, bounds) if (i + offset) / batch < b) for i in range(batch)]
    rng.shuffle(out)
    return out


def stratified_rng(seed: int, worker: int, micro_batch: int) -> random.Random:
    """The assignment's RNG: a pure function of its inputs (exact resume, independent DDP workers)."""
    return random.Random(f"mlora-stratified/{seed}/{worker}/{micro_batch}")


def passes(config: AdapterConfig, batch: int, *, seed: int, worker: int, micro_batch: int,
           train_rank: int | None = None, dtype: torch.dtype = torch.float32) -> list[Pass]:
    """The forward/backward passes that make up one micro-batch's loss under `config`'s objective.
    `train_rank` is DyLoRA's rank of this step (its forward is truncated, not masked); `dtype`
    is the adapters' (P rows are computed in it)."""
    objective = config.objective
    if objective == "summed":
        return [Pass(1.0, None, train_rank or config.rank)]
    weights = rank_weights(config)
    if objective == "per_rank":
        return [Pass(w, nested_p(config, t, dtype).expand(batch, -1), config.rank) for t, w in weights.items()]
    if objective in ("stratified", "stratified_share"):
        ranks = assign_ranks(batch, weights, stratified_rng(seed, worker, micro_batch))
        return [Pass(1.0, torch.stack([nested_p(config, t, dtype) for t in ranks]), config.rank)]
    raise ValueError(f"objective: unknown objective {objective!r}")


def update_scales(config: AdapterConfig) -> torch.Tensor | None:
    """stratified_share: component j's optimizer update x 1/share_j, share_j = sum_{t in R, t >= j} w̄_t
    (the share of examples whose rank uses it); None for every other objective. Under Adam a
    gradient's scale cancels, so the update, not the gradient, is scaled. R = {1, 4, 16}, thirds:
    component 1 x1, 2-4 x1.5, 5-16 x3; components above max(R) (trained by none) x1."""
    if not OBJECTIVES[config.objective].share_scaled:
        return None
    weights = rank_weights(config)
    share = [sum(w for t, w in weights.items() if t >= j) for j in range(1, config.rank + 1)]
    return torch.tensor([1.0 / s if s > 0 else 1.0 for s in share])


__all__ = ["Pass", "assign_ranks", "passes", "stratified_rng", "update_scales"]
