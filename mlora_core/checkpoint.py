"""Training checkpoints: the adapter, AdamW's state and every RNG state, as safetensors + JSON
(nothing is unpickled); trainer_state.json is written last, so a checkpoint without it is torn."""
from __future__ import annotations

import random
from pathlib import Path

import torch

from .io import load_tensors, read_json, save_tensors, write_json


def adapter_params(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path: Path, model, optimizer, step: int, rank_rng: random.Random, state: dict) -> None:
    """adapter.safetensors + optimizer.safetensors + trainer_state.json (written last)."""
    params = adapter_params(model)
    save_tensors(path / "adapter.safetensors", {n: p.detach() for n, p in params.items()})
    opt_tensors, opt_scalars = {}, {}
    names = {id(p): n for n, p in params.items()}
    for p, s in optimizer.state.items():
        for k, v in s.items():
            key = f"{names[id(p)]}::{k}"
            if torch.is_tensor(v) and v.dim() > 0:
                opt_tensors[key] = v
            else:
                opt_scalars[key] = float(v)
    save_tensors(path / "optimizer.safetensors", opt_tensors)
    rng_state = rank_rng.getstate()
    write_json(path / "trainer_state.json", {
        **state, "step": step, "optimizer_scalars": opt_scalars,
        "torch_rng": torch.get_rng_state().tolist(),
        "rank_rng": [rng_state[0], list(rng_state[1]), rng_state[2]],
    })


def load_checkpoint(path: Path, model, optimizer, rank_rng: random.Random) -> dict:
    state = read_json(path / "trainer_state.json")
    params = adapter_params(model)
    weights = load_tensors(path / "adapter.safetensors")
    if set(weights) != set(params):
        raise ValueError(f"{path}: checkpoint adapter does not match this model's adapters")
    with torch.no_grad():
        for n, p in params.items():
            if weights[n].shape != p.shape:
                raise ValueError(f"{path}: {n} has shape {tuple(weights[n].shape)}, expected {tuple(p.shape)}")
            p.copy_(weights[n])
    moments = load_tensors(path / "optimizer.safetensors")
    for n, p in params.items():
        s = {k.split("::", 1)[1]: v for k, v in moments.items() if k.startswith(n + "::")}
        s.update({k.split("::", 1)[1]: torch.tensor(v) for k, v in state["optimizer_scalars"].items()
                  if k.startswith(n + "::")})
        if s:
            optimizer.state[p] = s
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    v, internal, gauss = state["rank_rng"]
    rank_rng.setstate((v, tuple(internal), gauss))
    return state


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (trainer_state.json is written last)."""
    done = sorted(Path(checkpoint_dir).glob("step_*/trainer_state.json")) if Path(checkpoint_dir).is_dir() else []
    return done[-1].parent if done else None


__all__ = ["adapter_params", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]
