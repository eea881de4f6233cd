"""The method's variants as registries whose entries carry their behaviour: one entry per name.

    METHODS     lora | dylora | matryoshka        its P, DyLoRA's P of a step    (Method.p, .step_p)
    OBJECTIVES  summed | per_rank | stratified    the passes of a micro-batch    (Objective.passes)
    RULES       truncate | prefix | svd           serving at rank k: a basis of r components in
                | magnitude                       serving order and the scale row of its first k
    SCALINGS    none | rank | sqrt                s(t)
    SCHEDULES   diag | binary | geometric | top   Matryoshka's nested-sum weights w_i

p_schedule.p_vector, objectives.passes, AdapterLayer.factors and functions.function_rows look an
entry up and call it; nothing branches on a name. Config validation, the plan's cost, the CLI's
choices and orchestrator's schema read the names. So a new variant is one entry here and its tests.
Imports nothing of the package at run time (config.py, p_schedule.py, objectives.py and layer.py
read it): entries receive the AdapterConfig or the layer's tensors.
"""
from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .config import AdapterConfig

SCALINGS: dict[str, Callable[[int, float], float]] = {
    "none": lambda t, alpha: 1.0,
    "rank": lambda t, alpha: alpha / t,            # classic LoRA alpha/r
    "sqrt": lambda t, alpha: alpha / math.sqrt(t),  # rsLoRA
}

# weight w_i of the i-th smallest train rank (i = 0..n-1) in Matryoshka's nested sum
SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "diag": lambda i, n: 1.0,
    "binary": lambda i, n: 1.0 / n,
    "geometric": lambda i, n: 0.5 ** i,
    "top": lambda i, n: 0.5 ** (n - 1 - i),   # the mirror image: the largest train rank weighs most
}


def scale(config: AdapterConfig, t: int) -> float:
    """s(t): the scale of the rank-t sub-adapter."""
    return SCALINGS[config.scaling](t, config.alpha)


def rank_weights(config: AdapterConfig) -> dict[int, float]:
    """w̄_t for t in R: the P schedule's weights, normalised to sum to 1."""
    ranks = config.train_ranks
    w = [SCHEDULES[config.p_schedule](i, len(ranks)) for i in range(len(ranks))]
    return {t: wi / sum(w) for t, wi in zip(ranks, w)}


def nested_row(config: AdapterConfig, t: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """s(t) 1[j <= t] for a t already checked to be in [1, r] (p_schedule.nested_p checks)."""
    p = torch.zeros(config.rank, dtype=dtype)
    p[:t] = scale(config, t)
    return p


# ---- METHODS: what P is -------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    name: str
    objectives: tuple[str, ...]         # what it may train with; the first is its default
    flop_rank: Callable[[int, tuple[int, ...]], float]   # the adapter rank a step runs at, on average
    p: Callable[[AdapterConfig, torch.dtype], torch.Tensor]   # its P (length r), the layer's buffer
    doc: str
    step_p: Callable[[AdapterConfig, int, torch.dtype], torch.Tensor] | None = None  # P of a step at a
    #                                     rank t drawn from R each step (DyLoRA); None: no such draw


def _lora_p(config: AdapterConfig, dtype: torch.dtype) -> torch.Tensor:
    return torch.full((config.rank,), scale(config, config.rank), dtype=dtype)


def _nested_sum_p(config: AdapterConfig, dtype: torch.dtype) -> torch.Tensor:
    """sum_{t in R, t >= j} w_t s(t), accumulated in fp64 onto every j <= t."""
    weight, ranks = SCHEDULES[config.p_schedule], config.train_ranks
    p = torch.zeros(config.rank, dtype=torch.float64)
    for i, t in enumerate(ranks):
        p[:t] += weight(i, len(ranks)) * scale(config, t)
    return p.to(dtype)


# ---- OBJECTIVES: how a micro-batch becomes a loss (objectives.py) -------------------------------

@dataclass(frozen=True)
class Pass:
    """One forward/backward of a micro-batch: its loss weight and per-example P rows."""
    weight: float
    p_rows: torch.Tensor | None     # (batch, r); None = the layer's own P (summed, LoRA, DyLoRA)
    flop_rank: int                  # the adapter rank its matmuls run at (cost.py)


@dataclass(frozen=True)
class Objective:
    name: str
    n_passes: Callable[[int], int]      # forward/backward passes per micro-batch, given |R|
    passes: Callable[..., list[Pass]]   # (config, batch, the micro-batch's RNG, DyLoRA's t or None, dtype)
    doc: str
    p: Callable[[AdapterConfig, torch.dtype], torch.Tensor] | None = None  # the full-rank P it trains
    #                                     when not the method's (the nested losses: LoRA's s(r))
    example_rows: bool = False          # its passes give one P row per example (AdapterLayer.example_p)


def assign_ranks(batch: int, weights: dict[int, float], rng: random.Random) -> list[int]:
    """One train rank per example: rank t gets floor or ceil of batch * w̄_t examples and each
    example is at t with probability exactly w̄_t (systematic sampling, then shuffled)."""
    offset, ranks = rng.random(), list(weights)
    bounds = list(itertools.accumulate(weights.values()))
    bounds[-1] = 1.0  # rounding must not leave the last position unassigned
    out = [next(t for t, b in zip(ranks, bounds) if (i + offset) / batch < b) for i in range(batch)]
    rng.shuffle(out)
    return out


def _summed(config, batch, rng, train_rank, dtype) -> list[Pass]:
    return [Pass(1.0, None, train_rank or config.rank)]


def _per_rank(config, batch, rng, train_rank, dtype) -> list[Pass]:
    return [Pass(w, nested_row(config, t, dtype).expand(batch, -1), config.rank)
            for t, w in rank_weights(config).items()]


def _stratified(config, batch, rng, train_rank, dtype) -> list[Pass]:
    ranks = assign_ranks(batch, rank_weights(config), rng)
    return [Pass(1.0, torch.stack([nested_row(config, t, dtype) for t in ranks]), config.rank)]


# ---- RULES: how an adapter is served at rank k (layer.py) ---------------------------------------

@dataclass(frozen=True)
class Basis:
    """The r components in serving order, (A_b: r x in, B_b: out x r, P_b: r) with B_b diag(P_b) A_b
    the update as trained, made from the trained (A, B, P). P_b depends on the config alone (P or
    ones: what depends on the weights goes into A_b, B_b), so one scale row serves every layer."""
    name: str
    make: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    cached: bool = True                 # made without gradient, once per version of A and B;
    #                                     False: the live parameters themselves


@torch.no_grad()
def svd_factors(a: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_s: r x in, B_s: out x r) with B_s[:, :k] @ A_s[:k] the best rank-k approximation of
    B diag(p) A for every k, singular values folded into B_s, computed in fp64.

    B diag(p) = Q_b R_b and A^T = Q_a R_a (thin QR), so the update is Q_b (R_b R_a^T) Q_a^T and
    the SVD of the r x r core U S V^T gives B_s = Q_b U S, A_s = V^T Q_a^T: O((in + out) r^2).
    Signs are fixed (each left singular vector's largest entry positive) so factors are reproducible."""
    qb, rb = torch.linalg.qr((b * p).double())
    qa, ra = torch.linalg.qr(a.double().T)
    u, s, vh = torch.linalg.svd(rb @ ra.T)
    left = qb @ u
    sign = torch.sign(left.gather(0, left.abs().argmax(0, keepdim=True)))[0]
    sign[sign == 0] = 1
    return (sign[:, None] * vh @ qa.T).to(a.dtype), (left * (sign * s)).to(b.dtype)


def _svd_basis(a, b, p):
    a_s, b_s = svd_factors(a, b, p)
    return a_s, b_s, torch.ones_like(p)


def _magnitude_basis(a, b, p):
    """The trained components, P folded into B, largest ||B_j|| |P_j| ||A_j|| (the Frobenius norm of
    component j's update) first; ties keep their order."""
    size = b.double().norm(dim=0) * p.double().abs() * a.double().norm(dim=1)
    order = torch.sort(size, descending=True, stable=True).indices
    return a[order], (b * p)[:, order], torch.ones_like(p)


TRAINED = Basis("trained", lambda a, b, p: (a, b, p), cached=False)
SVD = Basis("svd", _svd_basis)
MAGNITUDE = Basis("magnitude", _magnitude_basis)


@dataclass(frozen=True)
class Rule:
    """At rank k < r the update is B_b[:, :k] diag(s_k) A_b[:k] on the rule's basis, s_k = row(config,
    P_b, k) (a float: that scale on each of the k)."""
    name: str
    basis: Basis
    row: Callable[[AdapterConfig, torch.Tensor, int], torch.Tensor | float]
    trained_at_full_rank: bool          # at k = r it is the function training optimised, for any P
    doc: str
    saved_raw: bool = False             # s_k is the config's alone: export keeps raw A[:k], B[:k] and the
    #                                     config cut to k (other rules fold s_k into B)
    default: bool = False               # scored when a config names no rules (default_rules): opt-in


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("summed", lambda n: 1, _summed, "the paper's: one forward of the P-weighted nested sum"),
    Objective("per_rank", lambda n: n, _per_rank, "one forward per train rank t, loss sum_t w_t L_t", p=_lora_p,
              example_rows=True),
    Objective("stratified", lambda n: 1, _stratified, "one forward, each example at one train rank "
              "(unbiased per_rank)", p=_lora_p, example_rows=True),
)}

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("lora", ("summed",), lambda r, ranks: r, _lora_p, "P_j = s(r): plain LoRA"),
    Method("dylora", ("summed",), lambda r, ranks: sum(ranks) / len(ranks), _lora_p,
           "P_j = s(t) 1[j <= t], t drawn from R each step: runs at the mean of R", step_p=nested_row),
    Method("matryoshka", tuple(OBJECTIVES), lambda r, ranks: r, _nested_sum_p,
           "P_j = sum_{t >= j} w_t s(t): every prefix trained"),
)}

RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("truncate", TRAINED, lambda c, p, k: scale(c, k), False, "s(k) A[:k] B[:k]: the paper's rank-k rule",
         saved_raw=True, default=True),
    Rule("prefix", TRAINED, lambda c, p, k: p[:k], True, "A[:k] diag(P[:k]) B[:k]: the trained function cut at k",
         default=True),
    Rule("svd", SVD, lambda c, p, k: 1.0, True, "the best rank-k approximation of the trained update B diag(P) A",
         default=True),
    Rule("magnitude", MAGNITUDE, lambda c, p, k: 1.0, True, "the k trained components of largest "
         "||B_j|| |P_j| ||A_j||: a cut for an adapter not trained to nest, exact at k = r"),
)}

BASES: dict[str, Basis] = {r.basis.name: r.basis for r in RULES.values()}   # function rows name theirs


def check(family: str, registry: dict, name: str) -> str:
    """`name` if the registry has it, else ValueError naming the family and its choices."""
    if name not in registry:
        raise ValueError(f"{family}: unknown {family} {name!r}; choose one of {tuple(registry)}")
    return name


def default_rules() -> tuple[str, ...]:
    """The rules scored when a config names none (Rule.default; a new rule is opt-in): the schema's
    eval.rules and RunConfig.eval_rules both read it."""
    return tuple(name for name, rule in RULES.items() if rule.default)


def passes_per_step(method: str, objective: str, rank: int, train_ranks: tuple[int, ...]) -> tuple[int, float]:
    """(passes per micro-batch, the adapter rank they run at): what a step costs (cost.py, the plan)."""
    return OBJECTIVES[objective].n_passes(len(train_ranks)), METHODS[method].flop_rank(rank, train_ranks)


__all__ = ["BASES", "METHODS", "OBJECTIVES", "RULES", "SCALINGS", "SCHEDULES", "Basis", "Method", "Objective",
           "Pass", "Rule", "assign_ranks", "check", "default_rules", "nested_row", "passes_per_step", "rank_weights",
           "scale", "svd_factors"]
