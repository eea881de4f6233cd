"""AdapterConfig: everything that defines one adapter, as plain validated values.

LoRA, DyLoRA and MatryoshkaLoRA share one layer; only the fixed vector P differs
(see p_schedule.py). Invalid values raise ValueError naming the field; `check_rank` is the one
rank-bound check (a rank k of an adapter of max rank r) every module uses.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .methods import METHODS, SCALINGS, SCHEDULES, check
from .records import from_plain, to_plain

# Llama/Qwen/Mistral projection names: the paper adapts all seven.
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def check_rank(k: Any, r: int, what: str = "rank") -> int:
    """`k` if it is an integer in [1, r], else ValueError in one line naming `what`."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= r:
        raise ValueError(f"{what}: {k!r} is not an integer in [1, {r}]")
    return k


def powers_of_two_upto(rank: int) -> tuple[int, ...]:
    """Default train/eval ranks: 1, 2, 4, ... <= rank (rank itself included)."""
    ranks, k = [], 1
    while k <= rank:
        ranks.append(k)
        k *= 2
    if ranks[-1] != rank:
        ranks.append(rank)
    return tuple(ranks)


@dataclass(frozen=True)
class AdapterConfig:
    method: str = "matryoshka"          # lora | dylora | matryoshka
    rank: int = 16                      # max rank r
    train_ranks: tuple[int, ...] | None = None  # R; default powers of two <= r
    eval_ranks: tuple[int, ...] | None = None   # E; default powers of two <= r
    scaling: str = "sqrt"               # s(t): none -> 1, rank -> alpha/t, sqrt -> alpha/sqrt(t)
    alpha: float = 1.0
    p_schedule: str = "diag"            # matryoshka only: diag | binary | geometric | top
    objective: str | None = None        # matryoshka: summed | per_rank | stratified (methods.OBJECTIVES);
    #                                     None: the method's own (methods.METHODS[method].objectives[0])
    target_modules: tuple[str, ...] | str = LLAMA_TARGETS  # str = regex full match; "all-linear"
    exclude_modules: tuple[str, ...] = ()
    dropout: float = 0.0

    def __post_init__(self) -> None:
        def fix(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        check("method", METHODS, self.method)
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
            raise ValueError(f"rank: must be a positive integer, got {self.rank!r}")
        check("scaling", SCALINGS, self.scaling)
        check("p_schedule", SCHEDULES, self.p_schedule)
        own = METHODS[self.method].objectives
        if self.objective is None:
            fix("objective", own[0])
        elif self.objective not in own:
            raise ValueError(f"objective: method {self.method!r} trains with {own}, not {self.objective!r}")
        if not (self.alpha > 0):
            raise ValueError(f"alpha: must be > 0, got {self.alpha!r}")
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout!r}")
        for name in ("train_ranks", "eval_ranks"):
            ranks = getattr(self, name)
            if ranks is None:
                fix(name, powers_of_two_upto(self.rank))
                continue
            ranks = tuple(sorted(set(ranks)))
            if not ranks:
                raise ValueError(f"{name}: must not be empty")
            fix(name, tuple(check_rank(k, self.rank, name) for k in ranks))
        if isinstance(self.target_modules, list):
            fix("target_modules", tuple(self.target_modules))
        if not self.target_modules:
            raise ValueError("target_modules: must name at least one module")
        fix("exclude_modules", tuple(self.exclude_modules))

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        return from_plain(cls, data, "adapter config")

    def truncated(self, rank: int) -> AdapterConfig:
        """The config of this adapter cut to its first `rank` components."""
        keep = lambda ks: tuple(k for k in ks if k <= rank) or (rank,)  # noqa: E731
        return dataclasses.replace(self, rank=rank, train_ranks=keep(self.train_ranks),
                                   eval_ranks=keep(self.eval_ranks))


__all__ = ["AdapterConfig", "LLAMA_TARGETS", "check_rank", "powers_of_two_upto"]
