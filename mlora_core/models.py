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

from .errors import first_line

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


def offline_cache_problem(model_id: str, revision: str | None = None) -> str | None:
    """Why a hub id cannot load here: the hub is off (HF_HUB_OFFLINE) and its config.json is not in
    the local hub cache. None when it can, or for builtin and local models. Reads files only."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("1", "true", "yes", "on"):
        return None
    try:
        if check_model_id(model_id) != "hub":
            return None
    except ValueError:
        return None   # the schema reports the model id itself
    from huggingface_hub import try_to_load_from_cache
    if isinstance(try_to_load_from_cache(model_id, "config.json", revision=revision), str):
        return None
    at = f" at revision {revision}" if revision else ""
    return (f"model: {model_id}{at} is not in the offline hub cache (HF_HUB_OFFLINE=1): download it where the hub "
            f"is reachable (`hf download {model_id}`) or unset HF_HUB_OFFLINE")


def require_cached(model_id: str, revision: str | None = None) -> None:
    """ValueError (one line) when offline_cache_problem finds one: before a sweep or a trial starts."""
    problem = offline_cache_problem(model_id, revision)
    if problem:
        raise ValueError(problem)


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


def load_pretrained(where: str, revision: str | None = None, dtype: torch.dtype | None = None):
    """(model, tokenizer) from a from_pretrained location: the one place a base model is built (a
    run's load_base_model, and a registered adapter's load_registered_base)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(where, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(where, revision=revision, dtype=dtype or torch.float32)
    if tokenizer.pad_token_id is None:  # Llama-style tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_base_model(model_id: str, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                    revision: str | None = None, log=print):
    """(model, tokenizer). Hub ids need network (or HF_HUB_OFFLINE=1 with a warm cache)."""
    where = resolve_model_path(model_id, log=log)
    try:
        model, tokenizer = load_pretrained(where, revision, dtype)
    except (OSError, ValueError) as e:  # hub unreachable, gated, missing files: one line
        first = first_line(e)
        offline = " (no network? set HF_HUB_OFFLINE=0 on a machine that reaches the hub)" \
            if os.environ.get("HF_HUB_OFFLINE") == "1" or where == model_id else ""
        raise ValueError(f"model: could not load {model_id!r}: {first}{offline}") from None
    model.config.name_or_path = model_id
    return model.to(device), tokenizer


def load_registered_base(carried: str | None, model_id: str, source: str | None = None,
                         revision: str | None = None):
    """(model, tokenizer) of a registered adapter's base model: the copy it carries (`carried`: builtin
    and local models), else the model it names by id (hub, at `revision`; a packaged builtin,
    rebuilt from the same package file: `source`, its model_provenance)."""
    if carried is not None:
        return load_pretrained(carried)
    return load_pretrained(resolve_referenced_model(model_id, source, log=lambda *_: None), revision)


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
