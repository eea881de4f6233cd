"""Compute-cost accounting: FLOPs from a formula, tokens, wall time, device-hours, money.

FLOPs of adapter training on a frozen base, for a batch of b sequences padded to width s
(dense attention computes the full s x s scores, so no causal halving):

    N   = parameters of the base's matmuls (every Linear/Conv1D, lm_head included)
    P_r = adapter parameters at rank r = r * sum over adapted modules of (in + out)
    forward           2 N b s  +  2 P_r b s  +  4 L s^2 d b        (QK^T and AV: 2 s d each)
    backward (acts)   2 N b s  +  2 P_r b s  +  8 L s^2 d b        (input grads of every matmul)
    backward (A, B)                 2 P_r b s                      (frozen W gets no weight grad)
    train step = 4 N b s + 6 P_r b s + 12 L s^2 d b;   eval forward = 2 N + 2 P_k + 4 L s d per token

(The first layer's q/k/v input gradients are not needed and autograd skips them: ~1-3%
over-count on small models.) Checked against torch's FlopCounterMode in tests/core.
"""
from __future__ import annotations

import functools
import resource
import sys
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .inject import adapter_layers
from .layer import ADAPTABLE, AdapterLayer


@dataclass(frozen=True)
class FlopModel:
    base_matmul_params: int    # N
    adapter_per_rank: int      # sum of (in + out) over adapted modules: P_r = r * this
    n_layers: int              # L
    attn_dim: int              # d (query width: heads * head_dim)

    def train_step(self, batch: int, width: int, rank: int) -> float:
        tokens = batch * width
        return (4 * self.base_matmul_params + 6 * rank * self.adapter_per_rank) * tokens \
            + 12 * self.n_layers * width * width * self.attn_dim * batch

    def eval_flops(self, evaluations: list[tuple[int, int]]) -> float:
        """Evaluation: matmuls only, 2N + 2 P_k per token at rank k (attention is small at
        evaluation lengths). `evaluations` is [(rank, tokens)], one entry per scored setting."""
        return sum(n * (2 * self.base_matmul_params + 2 * k * self.adapter_per_rank) for k, n in evaluations)


def flop_model(model: nn.Module) -> FlopModel:
    base = 0
    for module in model.modules():
        if isinstance(module, ADAPTABLE) and not isinstance(module, AdapterLayer):
            base += module.weight.numel()
    per_rank = sum(l.lora_A.shape[1] + l.lora_B.shape[0] for _, l in adapter_layers(model))
    cfg = getattr(model, "config", None)
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0)
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", 0)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0)
    head_dim = getattr(cfg, "head_dim", None) or (hidden // heads if heads else 0)
    return FlopModel(base, per_rank, layers, heads * head_dim)


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


@dataclass(frozen=True)
class Cost:
    train_tokens: int
    eval_tokens: int
    train_flops: float
    eval_flops: float
    train_seconds: float
    eval_seconds: float
    devices: float                    # priced devices held (workers x devices per worker)
    device_name: str
    price_per_device_hour: float

    @property
    def wall_seconds(self) -> float:
        return self.train_seconds + self.eval_seconds

    @property
    def device_hours(self) -> float:
        return self.wall_seconds * self.devices / 3600

    @property
    def dollars(self) -> float:
        return self.device_hours * self.price_per_device_hour

    @property
    def total_flops(self) -> float:
        return self.train_flops + self.eval_flops

    def as_metrics(self) -> dict[str, float]:
        out = {k: float(v) for k, v in asdict(self).items() if k != "device_name"}
        out.update(wall_seconds=self.wall_seconds, device_hours=self.device_hours,
                   cost_usd=self.dollars, total_flops=self.total_flops)
        return out

    def __str__(self) -> str:
        return (f"{self.train_tokens:,} train tok, {self.total_flops:.3g} FLOPs, {self.wall_seconds:.1f} s on "
                f"{self.devices:g} x {self.device_name} = {self.device_hours:.4f} device-h (${self.dollars:.4f})")


@functools.lru_cache(maxsize=8)
def _model_config_or_none(model_id: str, revision: str | None):
    """The model's transformers config, read once per process; None when unreadable (a hub id
    without network: remembered, so a plan of 100 trials does not retry the hub 100 times)."""
    from transformers import AutoConfig

    from .models import BUILTIN_PREFIX, check_model_id
    try:
        if check_model_id(model_id) == "builtin":
            from .builtin_model import RECIPES, _model_config, build_tokenizer
            return _model_config(RECIPES[model_id[len(BUILTIN_PREFIX):]], build_tokenizer())
        return AutoConfig.from_pretrained(model_id, revision=revision)
    except (OSError, ValueError):
        return None


def estimate_flop_model(model_id: str, adapter, revision: str | None = None) -> FlopModel | None:
    """The FlopModel of `model_id` + adapter built on the meta device: no weights, no training.
    None when the model's config cannot be read (e.g. a hub id without network)."""
    from transformers import AutoModelForCausalLM

    from .inject import add_adapters

    config = _model_config_or_none(model_id, revision)
    if config is None:
        return None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        add_adapters(model, adapter)
    return flop_model(model)
