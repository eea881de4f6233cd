"""The fixed diagonal P that turns one LoRA layer into LoRA, DyLoRA or MatryoshkaLoRA.

    x A diag(P) B,   P_j (1-based j)
    lora        P_j = s(r)
    dylora      P_j = s(t) if j <= t else 0      (t sampled from R every step)
    matryoshka  P_j = sum_{t in R, t >= j} w_t s(t)
                => x A diag(P) B = sum_{t in R} w_t s(t) x A[:, :t] B[:t, :]

The nested-sum weights w_t are the P schedule: diag (w=1, the paper's), binary
(w=1/|R|, the reference code's variant) and geometric (w = 2^-i for the i-th smallest
train rank: emphasises small ranks, one more decay for the schedule ablation).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .config import AdapterConfig

SCALING_RULES: dict[str, Callable[[int, float], float]] = {
    "none": lambda t, alpha: 1.0,
    "rank": lambda t, alpha: alpha / t,            # classic LoRA alpha/r
    "sqrt": lambda t, alpha: alpha / math.sqrt(t),  # rsLoRA
}

# weight w_i of the i-th smallest train rank (i = 0..n-1) in Matryoshka's nested sum
SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "diag": lambda i, n: 1.0,
    "binary": lambda i, n: 1.0 / n,
    "geometric": lambda i, n: 0.5 ** i,
}


def scale(config: AdapterConfig, t: int) -> float:
    """s(t): the scale of the rank-t sub-adapter."""
    return SCALING_RULES[config.scaling](t, config.alpha)


def p_vector(config: AdapterConfig, train_rank: int | None = None, dtype=torch.float32) -> torch.Tensor:
    """P (length r) for `config`. For DyLoRA, `train_rank` is this step's sampled rank;
    without it DyLoRA's P is the full-rank one (what evaluation at rank r uses)."""
    r = config.rank
    if config.method == "lora" or (config.method == "dylora" and train_rank is None):
        return torch.full((r,), scale(config, r), dtype=dtype)
    if config.method == "dylora":
        if not 1 <= train_rank <= r:
            raise ValueError(f"train_rank: must be in [1, {r}], got {train_rank}")
        p = torch.zeros(r, dtype=dtype)
        p[:train_rank] = scale(config, train_rank)
        return p
    # matryoshka: accumulate w_t s(t) onto every j <= t
    weight = SCHEDULES[config.p_schedule]
    ranks = config.train_ranks
    p = torch.zeros(r, dtype=torch.float64)
    for i, t in enumerate(ranks):
        p[:t] += weight(i, len(ranks)) * scale(config, t)
    return p.to(dtype)


__all__ = ["p_vector", "scale", "SCALING_RULES", "SCHEDULES"]
