"""One adapter layer for LoRA, DyLoRA and MatryoshkaLoRA: y = base(x) + x A diag(P) B.

Weights are stored in PEFT's layout (lora_A: r x in, lora_B: out x r) so export is a copy.
The method lives entirely in the buffer P (p_schedule.py). Every use of the adapter goes
through `factors(rank, rule)`, three tensors whose product is the update:

    training (rank=None)   y = base(x) + ((x A^T) * P) B^T   (DyLoRA: P of this step's t;
                           per_rank / stratified: one P row per example, objectives.py)
    at rank k, by rule     y = base(x) + ((x A_k^T) * s_k) B_k^T
        truncate   A[:k], B[:, :k], s(k)        the paper's rank-k rule
        prefix     A[:k], B[:, :k], P[:k]       the trained function cut at k (= it at k = r)
        svd        the best rank-k approximation (Eckart-Young) of the update as trained,
                   B diag(P) A, from QR of A^T and B and an r x r SVD (never the dense update)

Forward, merge/unmerge and export all use `factors`, so the rank-k scale is written once.
Evaluation scores many (rank, rule) functions in one batch the same way the nested objectives
train: example b gets the row s_k (its first k places, zeros after) on the factors its rule uses,
(A, B) or the SVD factors (`function_rows`; evaluate.function_rows builds them from `factors`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import AdapterConfig
from .methods import RULES, check
from .p_schedule import p_vector, scale

try:  # GPT-2 style models use transformers' Conv1D (weight stored in x out)
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a dependency, but the core math is not tied to it
    Conv1D = ()

ADAPTABLE = (nn.Linear,) + ((Conv1D,) if Conv1D else ())


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
        # evaluation of many (rank, rule) functions in one batch: ("trained" | "svd", (batch, r) rows),
        # example b computes x A^T diag(rows[b]) B^T on that basis (evaluate.function_rows)
        self.function_rows: tuple[str, torch.Tensor] | None = None
        self.merged = False                 # plain bool: survives copy.deepcopy (a sentinel would not)
        self.merged_at: tuple[int | None, str] = (None, "truncate")  # (rank, rule) folded into base.weight
        self._svd: tuple[tuple, torch.Tensor, torch.Tensor] | None = None  # (weights' versions, A_s, B_s)

    def factors(self, rank: int | None = None, rule: str = "truncate") -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor | float]:
        """(A_k, B_k, s_k): the rank-`rank` update under `rule` is B_k diag(s_k) A_k. rank None or
        r with rule prefix/svd is the update as trained (A, B, P)."""
        r = self.config.rank
        if rank is None or (rank == r and rule != "truncate"):
            return self.lora_A, self.lora_B, self.p
        if not 1 <= rank <= r:
            raise ValueError(f"rank: must be in [1, {r}], got {rank}")
        if rule == "truncate":
            return self.lora_A[:rank], self.lora_B[:, :rank], scale(self.config, rank)
        if rule == "prefix":
            return self.lora_A[:rank], self.lora_B[:, :rank], self.p[:rank]
        if rule == "svd":
            a_s, b_s = self._svd_factors()
            return a_s[:rank], b_s[:, :rank], 1.0
        check("rule", RULES, rule)
        raise AssertionError(f"rule {rule!r} is registered in methods.RULES but has no factors here")

    def _svd_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The SVD factors of the trained update, recomputed only when A or B changed."""
        key = (self.lora_A.data_ptr(), self.lora_A._version, self.lora_B.data_ptr(), self.lora_B._version)
        if self._svd is None or self._svd[0] != key:
            self._svd = (key, *svd_factors(self.lora_A.detach(), self.lora_B.detach(), self.p))
        return self._svd[1], self._svd[2]

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
            a, b = self._svd_factors() if basis == "svd" else (self.lora_A, self.lora_B)
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
        objective = f", objective={c.objective}" if c.method == "matryoshka" else ""
        return f"method={c.method}, rank={c.rank}, scaling={c.scaling}, p_schedule={c.p_schedule}{objective}"
