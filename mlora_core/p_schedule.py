"""The fixed diagonal P that turns one LoRA layer into LoRA, DyLoRA or MatryoshkaLoRA.

    x A diag(P) B,   P_j (1-based j)
    lora        P_j = s(r)
    dylora      P_j = s(t) if j <= t else 0      (t sampled from R every step)
    matryoshka  P_j = sum_{t in R, t >= j} w_t s(t)
                => x A diag(P) B = sum_{t in R} w_t s(t) x A[:, :t] B[:t, :]

The nested-sum weights w_t are the P schedule: diag (w=1, the paper's), binary
(w=1/|R|, the reference code's variant), geometric (w = 2^-i for the i-th smallest
train rank: emphasises small ranks, one more decay for the schedule ablation) and top
(w = 2^-(n-1-i): the largest rank weighs most).

That P is the *summed* objective: one forward of the weighted nested sum (the paper's).
The other two objectives (objectives.py) train the per-rank losses themselves and use the
same weights as rank weights: per_rank's loss is sum_t w̄_t L_t and stratified assigns a
share w̄_t of each batch to rank t, with w̄_t = w_t / sum_t w_t. Normalised, diag and binary
give the same (uniform) weights there. What such an adapter is at full rank is a plain LoRA,
s(r) A B, so their P is LoRA's.

The names of the methods, scalings, schedules and objectives are registries in methods.py.
"""
from __future__ import annotations

import torch

from .config import AdapterConfig
from .methods import SCALINGS, SCHEDULES


def scale(config: AdapterConfig, t: int) -> float:
    """s(t): the scale of the rank-t sub-adapter."""
    return SCALINGS[config.scaling](t, config.alpha)


def rank_weights(config: AdapterConfig) -> dict[int, float]:
    """w̄_t for t in R: the P schedule's weights, normalised to sum to 1."""
    ranks = config.train_ranks
    w = [SCHEDULES[config.p_schedule](i, len(ranks)) for i in range(len(ranks))]
    return {t: wi / sum(w) for t, wi in zip(ranks, w)}


def nested_p(config: AdapterConfig, t: int, dtype=torch.float32) -> torch.Tensor:
    """s(t) 1[j <= t]: the P of the rank-t sub-adapter alone (DyLoRA's step, one per_rank pass)."""
    if not 1 <= t <= config.rank:
        raise ValueError(f"train_rank: must be in [1, {config.rank}], got {t}")
    p = torch.zeros(config.rank, dtype=dtype)
    p[:t] = scale(config, t)
    return p


def p_vector(config: AdapterConfig, train_rank: int | None = None, dtype=torch.float32) -> torch.Tensor:
    """P (length r) for `config`. For DyLoRA, `train_rank` is this step's sampled rank;
    without it DyLoRA's P is the full-rank one (what evaluation at rank r uses)."""
    r = config.rank
    if config.method == "dylora" and train_rank is not None:
        return nested_p(config, train_rank, dtype)
    if config.method != "matryoshka" or config.objective != "summed":
        return torch.full((r,), scale(config, r), dtype=dtype)
    # summed matryoshka: accumulate w_t s(t) onto every j <= t
    weight = SCHEDULES[config.p_schedule]
    ranks = config.train_ranks
    p = torch.zeros(r, dtype=torch.float64)
    for i, t in enumerate(ranks):
        p[:t] += weight(i, len(ranks)) * scale(config, t)
    return p.to(dtype)


__all__ = ["nested_p", "p_vector", "rank_weights", "scale"]
