"""Load a base causal LM + tokenizer: `builtin:NAME`, a local directory, or a hub id.

All three go through transformers' `from_pretrained`; builtin models are pre-trained by
the project on first use and cached (builtin_model.py).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

BUILTIN_PREFIX = "builtin:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def check_model_id(model_id: str) -> str:
    """'builtin' | 'local' | 'hub', or ValueError with one clear line. Builds and downloads nothing."""
    if model_id.startswith(BUILTIN_PREFIX):
        from .builtin_model import RECIPES
        if model_id[len(BUILTIN_PREFIX):] not in RECIPES:
            raise ValueError(f"unknown builtin model {model_id!r}; have {[BUILTIN_PREFIX + n for n in RECIPES]}")
        return "builtin"
    path = Path(model_id).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is a path without config.json (not a saved Hugging Face model)")
        return "local"
    if model_id.startswith((".", "/", "~")) or not _HUB_ID.match(model_id):
        raise ValueError(f"{model_id!r} is neither builtin:NAME, an existing directory, nor a hub id (org/name)")
    return "hub"


def resolve_model_path(model_id: str, log=print) -> str:
    """Where from_pretrained should look (builds a builtin model on first use)."""
    try:
        kind = check_model_id(model_id)
    except ValueError as e:
        raise ValueError(f"model: {e}") from None
    if kind == "builtin":
        from .builtin_model import ensure_builtin_model
        return str(ensure_builtin_model(model_id[len(BUILTIN_PREFIX):], log=log))
    return str(Path(model_id).expanduser()) if kind == "local" else model_id


def load_base_model(model_id: str, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                    revision: str | None = None, log=print):
    """(model, tokenizer). Hub ids need network (or HF_HUB_OFFLINE=1 with a warm cache)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve_model_path(model_id, log=log)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(where, revision=revision, dtype=dtype or torch.float32)
    except (OSError, ValueError) as e:  # hub unreachable, gated, missing files: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        offline = " (no network? set HF_HUB_OFFLINE=0 on a machine that reaches the hub)" \
            if os.environ.get("HF_HUB_OFFLINE") == "1" or where == model_id else ""
        raise ValueError(f"model: could not load {model_id!r}: {first}{offline}") from None
    if tokenizer.pad_token_id is None:  # Llama-style tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
    model.config.name_or_path = model_id
    return model.to(device), tokenizer
