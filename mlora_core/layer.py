"""One adapter layer for LoRA, DyLoRA and MatryoshkaLoRA: y = base(x) + x A diag(P) B.

Weights are stored in PEFT's layout (lora_A: r x in, lora_B: out x r) so export is a copy.
The method lives entirely in the buffer P (p_schedule.py). Every use of the adapter goes
through `factors(rank, rule)`, three tensors whose product is the update:

    training (rank=None)   y = base(x) + ((x A^T) * P) B^T   (DyLoRA: P of this step's t;
                           per_rank / stratified: one P row per example, objectives.py)
    at rank k, by rule     y = base(x) + ((x A_b[:k]^T) * s_k) B_b[:, :k]^T

A rule (methods.RULES) names a basis, the r components in serving order (the trained A, B; the
SVD factors; the components by size), and its scale row s_k: truncate s(k), prefix P[:k], svd 1.
A rule trained at full rank serves (A, B, P) itself at k = r. Bases other than the trained one are
made once per version of A and B (`basis`, cached here, never saved).

Forward, merge/unmerge and export all use `factors`, so the rank-k scale is written once.
Evaluation scores many (rank, rule) functions in one batch the same way the nested objectives
train: example b gets the row s_k (its first k places, zeros after) on its rule's basis
(`function_rows`, built by functions.function_rows from the same registry).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import AdapterConfig, check_rank
from .methods import BASES, METHODS, RULES, TRAINED, Basis, check, svd_factors
from .p_schedule import p_vector, scale

try:  # GPT-2 style models use transformers' Conv1D (weight stored in x out)
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a dependency, but the core math is not tied to it
    Conv1D = ()

ADAPTABLE = (nn.Linear,) + ((Conv1D,) if Conv1D else ())


class AdapterLayer(nn.Module):
    """Wraps a frozen nn.Linear or Conv1D with a rank-r adapter whose P is fixed by `config`."""

    def __init__(self, base: nn.Module, config: AdapterConfig):
        super().__init__()
        if not isinstance(base, ADAPTABLE):
            raise TypeError(f"cannot adapt {type(base).__name__}: only nn.Linear and Conv1D")
        self.fan_in_fan_out = not isinstance(base, nn.Linear)  # Conv1D: weight is in x out
        in_features, out_features = base.weight.shape[::-1] if not self.fan_in_fan_out else base.weight.shape
        self.base = base
        base.requires_grad_(False)
        self.config = config
        r, w = config.rank, base.weight
        # adapters of half-precision bases stay fp32 (as PEFT does): tiny, and Adam needs the precision
        dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
        self.lora_A = nn.Parameter(torch.empty(r, in_features, dtype=dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, dtype=dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear(in, r) would
        # P belongs to this layer (never a process-wide cache); derived from config, so not saved
        self.register_buffer("p", p_vector(config, dtype=dtype).to(w.device), persistent=False)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.rank: int | None = None        # active inference rank; None = training behaviour
        self.rule = "truncate"              # how the active rank is served (RULES)
        self.train_rank: int | None = None  # DyLoRA: this step's sampled rank
        # per_rank / stratified: (batch, r) P rows, one per example, shared by every layer and
        # updated in place by the training loop (a plain attribute: DDP must not broadcast it)
        self.example_p: torch.Tensor | None = None
        # evaluation of many (rank, rule) functions in one batch: (basis name, (batch, r) rows), example
        # b computes x A_b^T diag(rows[b]) B_b^T on that basis (methods.BASES; functions.function_rows)
        self.function_rows: tuple[str, torch.Tensor] | None = None
        self.merged = False                 # plain bool: survives copy.deepcopy (a sentinel would not)
        self.merged_at: tuple[int | None, str] = (None, "truncate")  # (rank, rule) folded into base.weight
        self._bases: dict[str, tuple[tuple, tuple]] = {}  # basis name -> (weights' versions, (A_b, B_b, P_b))

    def factors(self, rank: int | None = None, rule: str = "truncate") -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor | float]:
        """(A_k, B_k, s_k): the rank-`rank` update under `rule` is B_k diag(s_k) A_k. rank None, or r
        under a rule trained at full rank, is the update as trained (A, B, P)."""
        basis, k, s = self.serving(rank, rule)
        if k is None:
            return self.lora_A, self.lora_B, self.p
        a, b, _ = self.basis(basis)
        return a[:k], b[:, :k], s

    def serving(self, rank: int | None, rule: str) -> tuple[Basis, int | None, torch.Tensor | float]:
        """(basis, k, s_k) of (rank, rule): the update is its basis's first k components with scale
        row s_k; k None: the trained (A, B, P) itself."""
        entry, r = RULES[check("rule", RULES, rule)], self.config.rank
        if rank is None or (rank == r and entry.trained_at_full_rank):
            return TRAINED, None, self.p
        check_rank(rank, r, "rank")
        return entry.basis, rank, entry.row(self.config, self.basis(entry.basis)[2], rank)

    def basis(self, basis: Basis) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A_b, B_b, P_b) of `basis` for the current weights; all but the trained one are made
        without gradient and only again when A or B changed."""
        a, b = self.lora_A, self.lora_B
        if not basis.cached:
            return basis.make(a, b, self.p)
        key = (a.data_ptr(), a._version, b.data_ptr(), b._version)
        hit = self._bases.get(basis.name)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                hit = self._bases[basis.name] = (key, basis.make(a.detach(), b.detach(), self.p))
        return hit[1]

    def _training_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
        if self.train_rank is not None:  # DyLoRA: forward truncated at t
            return self.lora_A[:self.train_rank], self.lora_B[:, :self.train_rank], scale(self.config, self.train_rank)
        return self.lora_A, self.lora_B, self.p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        rows = None
        if self.rank is not None:
            a, b, s = self.factors(self.rank, self.rule)
        elif self.training:
            a, b, s = self._training_factors()
            rows = self.example_p
        elif self.function_rows is not None:
            basis, rows = self.function_rows
            a, b, _ = self.basis(BASES[basis])
        else:
            a, b, s = self.lora_A, self.lora_B, self.p
        x = self.dropout(x)
        if not torch.is_autocast_enabled(x.device.type):
            # a bf16 base without autocast meets fp32 adapters: match them. Under autocast the matmul
            # picks its dtype itself, and an explicit cast would cost an activation-sized copy forward
            # and another backward (H200, 1B-shaped Llama: train-step MFU 0.142 with it, 0.171 without)
            x = x.to(a.dtype)
        h = F.linear(x, a)  # (batch, ..., k)
        if rows is not None:   # one P row per example: the nested objectives, or many functions at once
            if h.shape[0] != rows.shape[0]:
                raise RuntimeError(f"per-example P has {rows.shape[0]} rows for a batch of {h.shape[0]}")
            s = rows.view(rows.shape[0], *([1] * (h.dim() - 2)), rows.shape[1])
        h = h * s  # the only place P enters
        return y + F.linear(h, b).to(y.dtype)

    def delta_weight(self, rank: int | None = None, rule: str = "truncate") -> torch.Tensor:
        """The dense update in nn.Linear layout (out x in): merge and unmerge use only this."""
        a, b, s = self.factors(rank, rule)
        return (b * s) @ a

    @torch.no_grad()
    def merge(self, rank: int | None = None, safe: bool = True, rule: str = "truncate") -> None:
        if self.merged:
            raise RuntimeError("adapter already merged; unmerge first")
        delta = self.delta_weight(rank, rule)
        delta = delta.T if self.fan_in_fan_out else delta
        merged = self.base.weight + delta.to(self.base.weight.dtype)
        if safe and not torch.isfinite(merged).all():
            raise ValueError("merge produced non-finite weights; adapter is broken (NaN/inf)")
        self.base.weight.copy_(merged)
        self.merged, self.merged_at = True, (rank, rule)

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        delta = self.delta_weight(*self.merged_at)
        delta = delta.T if self.fan_in_fan_out else delta
        self.base.weight.sub_(delta.to(self.base.weight.dtype))
        self.merged, self.merged_at = False, (None, "truncate")

    def extra_repr(self) -> str:
        c = self.config
        objective = f", objective={c.objective}" if len(METHODS[c.method].objectives) > 1 else ""
        return f"method={c.method}, rank={c.rank}, scaling={c.scaling}, p_schedule={c.p_schedule}{objective}"


__all__ = ["ADAPTABLE", "AdapterLayer", "svd_factors"]   # svd_factors: the svd rule's math (methods.py)
