"""The tokenized training set, built once and shared: keyed by what decides it (the task as
resolved, its data files' size and mtime, the model and its chat template, max_length), stored as
safetensors under the sweep's cache folder, which every trial and DDP worker of a sweep reads (on a
cluster: the sweep's shared storage). A trial that finds it reads no source row and tokenizes
nothing; its log says which it did. Written whole (temp + rename): a reader never sees half."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..records import to_plain
from .tasks import TaskConfig, load_examples
from .tokenize import TokenizedData, tokenize

VERSION = 1   # of the cache's layout and of tokenize(): bump when either changes what is stored


def _files_fingerprint(task: TaskConfig) -> list:
    """(path, size, mtime) of the local files the task reads: an edited file is another key."""
    if task.path is None:
        return []
    root = Path(task.path).expanduser()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def cache_key(task: TaskConfig, model: str, chat_template: str | None, max_length: int) -> str:
    blob = json.dumps({"v": VERSION, "task": to_plain(task), "files": _files_fingerprint(task), "model": model,
                       "chat_template": chat_template, "max_length": max_length}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _flat(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    return torch.tensor([t for r in rows for t in r], dtype=torch.int64), lengths


def _save(path: Path, data: TokenizedData) -> None:
    from safetensors.torch import save_file
    ids, lengths = _flat(data.input_ids)
    labels, _ = _flat(data.labels)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    save_file({"input_ids": ids, "labels": labels, "lengths": lengths}, str(tmp),
              metadata={"truncated": str(data.truncated)})
    os.replace(tmp, path)


def _load(path: Path) -> TokenizedData:
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        ids, labels, lengths = (f.get_tensor(k) for k in ("input_ids", "labels", "lengths"))
        truncated = int(f.metadata()["truncated"])
    cuts = lengths.tolist()
    return TokenizedData([x.tolist() for x in torch.split(ids, cuts)], [x.tolist() for x in torch.split(labels, cuts)],
                         truncated)


def training_tokens(task: TaskConfig, tokenizer, model: str, max_length: int, cache_dir: str | None,
                    log=print) -> tuple[TokenizedData, int]:
    """(the tokenized training set, its number of examples): from the cache when `cache_dir` holds
    it, else loaded, tokenized and stored there (no cache_dir: loaded and tokenized, not stored)."""
    if cache_dir is None:
        examples = load_examples(task)
        return tokenize(tokenizer, examples, max_length), len(examples)
    path = Path(cache_dir) / f"train-{cache_key(task, model, tokenizer.chat_template, max_length)}.safetensors"
    if path.is_file():
        data = _load(path)
        log(f"training tokens: reused {path.name} ({len(data.input_ids)} examples)")
        return data, len(data.input_ids)
    examples = load_examples(task)
    data = tokenize(tokenizer, examples, max_length)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(path, data)
    log(f"training tokens: built {path.name} ({len(examples)} examples)")
    return data, len(examples)


__all__ = ["VERSION", "cache_key", "training_tokens"]
