"""One adapter layer for LoRA, DyLoRA and MatryoshkaLoRA: y = base(x) + x A diag(P) B.

Weights are stored in PEFT's layout (lora_A: r x in, lora_B: out x r) so export is a copy.
The method lives entirely in the buffer P (p_schedule.py); the layer only knows how to
run at a prefix rank k, which is how every method is evaluated, merged and exported:

    training (rank=None)   y = base(x) + ((x A^T) * P) B^T          (DyLoRA: P of this step's t)
    inference at rank k    y = base(x) + s(k) (x A[:k]^T) B[:, :k]^T
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import AdapterConfig
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
        self.train_rank: int | None = None  # DyLoRA: this step's sampled rank
        self.merged = False                 # plain bool: survives copy.deepcopy (a sentinel would not)
        self.merged_rank: int | None = None  # the rank merged into base.weight (None = P, all ranks)

    def _active(self) -> tuple[int, torch.Tensor | float]:
        """(how many components to use, their scale: a float or the P vector)."""
        if self.rank is not None:
            return self.rank, scale(self.config, self.rank)
        if self.train_rank is not None and self.training:  # DyLoRA: forward truncated at t
            return self.train_rank, scale(self.config, self.train_rank)
        return self.config.rank, self.p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        k, s = self._active()
        a, b = (self.lora_A, self.lora_B) if k == self.config.rank else (self.lora_A[:k], self.lora_B[:, :k])
        x = self.dropout(x)
        if not torch.is_autocast_enabled(x.device.type):
            # a bf16 base without autocast meets fp32 adapters: match them. Under autocast the matmul
            # picks its dtype itself, and an explicit cast would cost an activation-sized copy forward
            # and another backward (H200, 1B-shaped Llama: train-step MFU 0.142 with it, 0.171 without)
            x = x.to(a.dtype)
        h = F.linear(x, a) * s  # (..., k): the only place P enters
        return y + F.linear(h, b).to(y.dtype)

    def delta_weight(self, rank: int | None = None) -> torch.Tensor:
        """The dense update in nn.Linear layout (out x in): merge, unmerge, export use only this."""
        if rank is None:
            return self.lora_B @ (self.p[:, None] * self.lora_A)
        return scale(self.config, rank) * (self.lora_B[:, :rank] @ self.lora_A[:rank])

    @torch.no_grad()
    def merge(self, rank: int | None = None, safe: bool = True) -> None:
        if self.merged:
            raise RuntimeError("adapter already merged; unmerge first")
        delta = self.delta_weight(rank)
        delta = delta.T if self.fan_in_fan_out else delta
        merged = self.base.weight + delta.to(self.base.weight.dtype)
        if safe and not torch.isfinite(merged).all():
            raise ValueError("merge produced non-finite weights; adapter is broken (NaN/inf)")
        self.base.weight.copy_(merged)
        self.merged, self.merged_rank = True, rank

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        delta = self.delta_weight(self.merged_rank)
        delta = delta.T if self.fan_in_fan_out else delta
        self.base.weight.sub_(delta.to(self.base.weight.dtype))
        self.merged, self.merged_rank = False, None

    def extra_repr(self) -> str:
        c = self.config
        return f"method={c.method}, rank={c.rank}, scaling={c.scaling}, p_schedule={c.p_schedule}"
