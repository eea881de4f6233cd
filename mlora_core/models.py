"""Load a base causal LM + tokenizer: `builtin:NAME`, a local directory, or a hub id.

All three go through transformers' `from_pretrained`; builtin models are built on first use
and cached (builtin_model.py): `builtin:tiny` pre-trained by the project,
`builtin:smollm2-135m-instruct` converted from an installed package (packaged_model.py).
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
        from .builtin_model import RECIPES, is_packaged
        name = model_id[len(BUILTIN_PREFIX):]
        if name not in RECIPES:
            raise ValueError(f"unknown builtin model {model_id!r}; have {[BUILTIN_PREFIX + n for n in RECIPES]}")
        if is_packaged(name):  # caught by `mlora validate`, before any trial starts
            from .packaged_model import check_installed
            check_installed(name)
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


def prepare_builtin_model(model_id: str, log=print) -> None:
    """Build a builtin model now, if `model_id` names one not built yet (a no-op for the others)."""
    if check_model_id(model_id) == "builtin":
        resolve_model_path(model_id, log=log)


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


def is_packaged_model(model_id: str) -> bool:
    """A builtin converted from an installed package: reproducible on any machine with that
    package, so a registered model references it instead of copying its weights."""
    from .builtin_model import is_packaged
    return model_id.startswith(BUILTIN_PREFIX) and is_packaged(model_id[len(BUILTIN_PREFIX):])


def model_provenance(model_id: str) -> dict[str, str]:
    """Where the base weights come from, as MLflow params: {} for hub ids and local folders
    (the model id says it). Deterministic (never build timings): a resumed trial logs its
    params again and MLflow refuses a changed value."""
    if not model_id.startswith(BUILTIN_PREFIX):
        return {}
    from .builtin_model import is_packaged, recipe_hash
    name = model_id[len(BUILTIN_PREFIX):]
    check_model_id(model_id)
    if is_packaged(name):
        from .packaged_model import provenance
        return {**provenance(name), "model_cache": f"builtin-{name}-{recipe_hash(name)}"}
    return {"model_weights": "pre-trained by mlora on its synthetic corpus (builtin_model.py)",
            "model_cache": f"builtin-{name}-{recipe_hash(name)}"}


def resolve_referenced_model(model_id: str, expected_source: str | None = None, log=print) -> str:
    """Where from_pretrained finds a base model that a registered model names by id instead of
    carrying it: hub ids as they are, a packaged builtin converted here (once) from the same
    package file it was registered with (`expected_source`, its model_provenance)."""
    if expected_source is not None:
        have = model_provenance(model_id).get("model_source")
        if have != expected_source:
            raise ValueError(f"{model_id} was registered from {expected_source}, this machine has {have}")
    return resolve_model_path(model_id, log=log)
