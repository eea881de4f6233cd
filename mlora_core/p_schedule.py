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

Each P is its registry entry's (methods.py): Method.p, Objective.p where the objective trains
another full-rank P than the method's, Method.step_p for DyLoRA's step. This module looks them up.
"""
from __future__ import annotations

import torch

from .config import AdapterConfig, check_rank
from .methods import METHODS, OBJECTIVES, SCALINGS, SCHEDULES, nested_row, rank_weights, scale


def nested_p(config: AdapterConfig, t: int, dtype=torch.float32) -> torch.Tensor:
    """s(t) 1[j <= t]: the P of the rank-t sub-adapter alone (DyLoRA's step, one per_rank pass)."""
    return nested_row(config, check_rank(t, config.rank, "train_rank"), dtype)


def p_vector(config: AdapterConfig, train_rank: int | None = None, dtype=torch.float32) -> torch.Tensor:
    """P (length r) for `config`. For DyLoRA, `train_rank` is this step's sampled rank;
    without it DyLoRA's P is the full-rank one (what evaluation at rank r uses)."""
    method = METHODS[config.method]
    if train_rank is not None and method.step_p is not None:
        return method.step_p(config, check_rank(train_rank, config.rank, "train_rank"), dtype)
    return (OBJECTIVES[config.objective].p or method.p)(config, dtype)


__all__ = ["SCALINGS", "SCHEDULES", "nested_p", "p_vector", "rank_weights", "scale"]
