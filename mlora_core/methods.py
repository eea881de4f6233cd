"""The names of the method's variants, as data: one registry per family, one entry per name.

    METHODS     lora | dylora | matryoshka       what P is (p_schedule.py)
    OBJECTIVES  summed | per_rank | stratified   how a micro-batch becomes a loss (objectives.py)
                | stratified_share
    RULES       truncate | prefix | svd          how an adapter is served at rank k (layer.py)
    SCALINGS    none | rank | sqrt               s(t)
    SCHEDULES   diag | binary | geometric | top  Matryoshka's nested-sum weights w_i

Config validation, the plan's cost estimate, the CLI's choices and the docs read these; adding an
objective or a rule is one entry here plus its math where the table above points, and its tests.
This module imports nothing of the package (config.py and p_schedule.py both read it).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Objective:
    name: str
    passes: Callable[[int], int]        # forward/backward passes per micro-batch, given |R|
    doc: str
    share_scaled: bool = False          # component j's optimizer update x 1/share_j (objectives.update_scales)

    def flop_factor(self, n_train_ranks: int) -> int:
        """Training FLOPs relative to one full-rank pass a micro-batch (each pass runs at rank r)."""
        return self.passes(n_train_ranks)


@dataclass(frozen=True)
class Method:
    name: str
    objectives: tuple[str, ...]         # what it may train with; the first is its default
    flop_rank: Callable[[int, tuple[int, ...]], float]   # the adapter rank a step runs at, on average
    doc: str


@dataclass(frozen=True)
class Rule:
    name: str
    trained_at_full_rank: bool          # at k = r it is the function training optimised, for any P
    doc: str


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("summed", lambda n: 1, "the paper's: one forward of the P-weighted nested sum"),
    Objective("per_rank", lambda n: n, "one forward per train rank t, loss sum_t w_t L_t"),
    Objective("stratified", lambda n: 1, "one forward, each example at one train rank (unbiased per_rank)"),
    Objective("stratified_share", lambda n: 1, "stratified, component j's update scaled by 1 / the share of "
              "examples training it (docs/findings.md section 8)", share_scaled=True),
)}

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("lora", ("summed",), lambda r, ranks: r, "P_j = s(r): plain LoRA"),
    Method("dylora", ("summed",), lambda r, ranks: sum(ranks) / len(ranks),
           "P_j = s(t) 1[j <= t], t drawn from R each step: runs at the mean of R"),
    Method("matryoshka", tuple(OBJECTIVES), lambda r, ranks: r, "P_j = sum_{t >= j} w_t s(t): every prefix trained"),
)}

RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("truncate", False, "s(k) A[:k] B[:k]: the paper's rank-k rule"),
    Rule("prefix", True, "A[:k] diag(P[:k]) B[:k]: the trained function cut at k"),
    Rule("svd", True, "the best rank-k approximation of the trained update B diag(P) A"),
)}

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


def check(family: str, registry: dict, name: str) -> str:
    """`name` if the registry has it, else ValueError naming the family and its choices."""
    if name not in registry:
        raise ValueError(f"{family}: unknown {family} {name!r}; choose one of {tuple(registry)}")
    return name


def passes_per_step(method: str, objective: str, rank: int, train_ranks: tuple[int, ...]) -> tuple[int, float]:
    """(passes per micro-batch, the adapter rank they run at): what a step costs (cost.py, the plan)."""
    return OBJECTIVES[objective].passes(len(train_ranks)), METHODS[method].flop_rank(rank, train_ranks)


__all__ = ["METHODS", "OBJECTIVES", "RULES", "SCALINGS", "SCHEDULES", "Method", "Objective", "Rule", "check",
           "passes_per_step"]
