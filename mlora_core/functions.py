"""The (rank, rule) functions evaluation scores, as data: a key per distinct function and P rows
on the bases they share, read off the rule registry (methods.RULES) through AdapterLayer.serving.

    function_key(model, k, rule)     (basis, k, s_k): equal keys compute the same function, so it is
                                     scored once (every rule of a LoRA at r; prefix and svd at r)
    function_rows(model, functions)  [(basis, indices, (n, r) rows)]: row = s_k in its first k
                                     places, zeros after, so x A_b^T diag(row) B_b^T on the basis is
                                     what set_rank(k, rule) computes (the zeros add nothing)

All layers share one config, so the first layer decides (the rows are handed to every layer,
inject.set_function_rows, and each layer looks its basis up by name, methods.BASES).
"""
from __future__ import annotations

import torch
from torch import nn

from .inject import adapter_layers


def _first_layer(model: nn.Module):
    return next(adapter_layers(model))[1]


def function_key(model: nn.Module, rank: int, rule: str) -> tuple:
    """What the model computes at (rank, rule), as a key: (basis name, rank, s_k as floats)."""
    basis, _, s = _first_layer(model).serving(rank, rule)
    scales = tuple(s.tolist()) if torch.is_tensor(s) else (float(s),) * rank
    return basis.name, rank, scales


def distinct_functions(model: nn.Module, ranks, rules) -> tuple[dict[tuple, tuple[int, str]], dict[str, list[tuple]]]:
    """({function key: the first (rank, rule) giving it}, {rule: its key at each rank}): what scoring
    evaluates once per distinct function (two rules computing the same function share it)."""
    functions: dict[tuple, tuple[int, str]] = {}
    keys: dict[str, list[tuple]] = {rule: [] for rule in rules}
    for k in ranks:
        for rule in rules:
            key = function_key(model, k, rule)
            functions.setdefault(key, (k, rule))
            keys[rule].append(key)
    return functions, keys


def function_rows(model: nn.Module, functions: list[tuple[int, str]]) -> list[tuple[str, list[int], torch.Tensor]]:
    """The (rank, rule) functions as P rows on the bases they share: [(basis name, indices into
    `functions`, (n, r) rows)], bases in order of first use."""
    layer = _first_layer(model)
    groups: dict[str, tuple[list[int], list[torch.Tensor]]] = {}
    for i, (k, rule) in enumerate(functions):
        basis, _, s = layer.serving(k, rule)
        row = torch.zeros(layer.config.rank, dtype=layer.lora_A.dtype, device=layer.lora_A.device)
        row[:k] = s
        idx, rows = groups.setdefault(basis.name, ([], []))
        idx.append(i)
        rows.append(row)
    return [(name, idx, torch.stack(rows)) for name, (idx, rows) in groups.items()]


__all__ = ["distinct_functions", "function_key", "function_rows"]
