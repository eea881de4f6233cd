"""Put adapters into a model, and drive them: rank, DyLoRA sampling, merge/unmerge.

Target matching follows PEFT's conventions: a string is a regex full-matched against the
module's full name ("all-linear" = every Linear/Conv1D but the output embedding); a list
matches exact names or `.name` suffixes. Every list entry must match something.
"""
from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .config import AdapterConfig, check_rank
from .layer import ADAPTABLE, AdapterLayer
from .methods import METHODS, RULES, check

log = logging.getLogger("mlora_core")


def _matches(name: str, pattern: str | Sequence[str]) -> bool:
    if isinstance(pattern, str):
        return re.fullmatch(pattern, name) is not None
    return any(name == p or name.endswith("." + p) for p in pattern)


def linear_module_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, ADAPTABLE)]


def find_target_modules(model: nn.Module, targets: str | Sequence[str],
                        exclude: str | Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(matched, unmatched) among the model's adaptable (Linear/Conv1D) module names."""
    names = linear_module_names(model)
    if targets == "all-linear":
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        matched = [n for n in names if model.get_submodule(n) is not out and not n.endswith("lm_head")]
    else:
        matched = [n for n in names if _matches(n, targets)]
    if exclude:
        matched = [n for n in matched if not _matches(n, exclude)]
    return matched, [n for n in names if n not in matched]


def _describe(names: list[str]) -> str:
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    return f"{', '.join(leaves)} ({len(names)} linear modules)" if names else "none"


def adapter_layers(model: nn.Module) -> Iterator[tuple[str, AdapterLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            yield name, module


@dataclass(frozen=True)
class AdapterSummary:
    modules: tuple[str, ...]
    trainable_params: int     # adapter parameters at max rank
    total_params: int
    params_per_rank: int      # adapter parameters per unit of rank (sum of in + out)

    def __str__(self) -> str:
        pct = 100.0 * self.trainable_params / max(self.total_params, 1)
        return (f"{len(self.modules)} adapted modules, {self.trainable_params:,} trainable params "
                f"({pct:.2f}% of {self.total_params:,}; {self.params_per_rank:,} per unit of rank)")


def adapter_summary(model: nn.Module) -> AdapterSummary:
    layers = list(adapter_layers(model))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    per_rank = sum(l.lora_A.shape[1] + l.lora_B.shape[0] for _, l in layers)
    return AdapterSummary(tuple(n for n, _ in layers), trainable,
                          sum(p.numel() for p in model.parameters()), per_rank)


def add_adapters(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Wrap every matching Linear/Conv1D in an AdapterLayer and freeze all base weights.

    Raises ValueError listing the model's linear modules when a target matches nothing."""
    if any(True for _ in adapter_layers(model)):
        raise ValueError("model already has adapters; load a fresh base model")
    targets = config.target_modules
    matched, unmatched = find_target_modules(model, targets, config.exclude_modules)
    if not isinstance(targets, str):
        missing = [t for t in targets if not any(_matches(n, [t]) for n in matched)]
        if missing:
            raise ValueError(f"target_modules: {missing} match no linear module; "
                             f"the model has: {_describe(linear_module_names(model))}")
    if not matched:
        raise ValueError(f"target_modules: {targets!r} matches no linear module; "
                         f"the model has: {_describe(unmatched)}")
    model.requires_grad_(False)
    for name in matched:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, AdapterLayer(getattr(parent, child), config))
    log.info("mlora: %s", adapter_summary(model))
    return model


def _layers_or_raise(model: nn.Module) -> list[AdapterLayer]:
    layers = [l for _, l in adapter_layers(model)]
    if not layers:
        raise ValueError("model has no adapters; call add_adapters first")
    return layers


def set_rank(model: nn.Module, rank: int | None, rule: str = "truncate") -> None:
    """Serve every adapter at `rank` under `rule` (methods.RULES: truncate, prefix, svd, ...);
    None = training behaviour."""
    check("rule", RULES, rule)
    for layer in _layers_or_raise(model):
        if rank is not None:
            check_rank(rank, layer.config.rank, "rank")
        if layer.merged:
            raise RuntimeError("adapters are merged; unmerge_adapters() before set_rank()")
        layer.rank, layer.rule = rank, rule


def set_example_p(model: nn.Module, rows: torch.Tensor | None) -> None:
    """Give every adapter the same (batch, r) tensor of per-example P rows (None: off).
    The training loop then updates that one tensor in place (objectives.py)."""
    for layer in _layers_or_raise(model):
        layer.example_p = rows


def set_function_rows(model: nn.Module, rows: tuple[str, torch.Tensor] | None) -> None:
    """Evaluate one (rank, rule) function per example: (basis name, (batch, r) rows) on every adapter
    (None: off); rank must be None (functions.function_rows builds them)."""
    for layer in _layers_or_raise(model):
        if rows is not None and layer.rank is not None:
            raise RuntimeError("set_function_rows needs set_rank(model, None) first")
        layer.function_rows = rows


def sample_train_rank(model: nn.Module, config: AdapterConfig, rng: random.Random) -> int | None:
    """A method with a P per step (methods.Method.step_p: DyLoRA): draw this step's rank t from R,
    the same t for every layer. No-op otherwise."""
    layers = _layers_or_raise(model)
    if METHODS[config.method].step_p is None:
        return None
    t = rng.choice(config.train_ranks)
    for layer in layers:
        layer.train_rank = t
    return t


def adapter_config(model: nn.Module) -> AdapterConfig:
    """The config every adapter of `model` was added with (add_adapters gives all of them one):
    for the model-level APIs that take a model alone (save_adapter, PEFT export)."""
    configs = {l.config for l in _layers_or_raise(model)}
    if len(configs) != 1:
        raise ValueError(f"model's adapters have {len(configs)} different configs; expected one")
    return configs.pop()


def merge_adapters(model: nn.Module, rank: int | None = None, safe: bool = True, rule: str = "truncate") -> None:
    """Fold the rank-`rank` update (under `rule`) into the base weights (zero-overhead inference)."""
    check("rule", RULES, rule)
    for layer in _layers_or_raise(model):
        layer.merge(rank, safe=safe, rule=rule)


def unmerge_adapters(model: nn.Module) -> None:
    """Subtract exactly the delta that merge_adapters added."""
    for layer in _layers_or_raise(model):
        layer.unmerge()


def merge_and_unload(model: nn.Module, rank: int | None = None, rule: str = "truncate") -> nn.Module:
    """Merge at `rank` and put the plain base modules back: a model with no adapter code."""
    merge_adapters(model, rank, rule=rule)
    for name, layer in list(adapter_layers(model)):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.base)
    return model
