"""Save/load adapters. One directory holds two views of the same rank-k adapter:

- PEFT's format (adapter_config.json + adapter_model.safetensors): a plain LoRA of rank k
  with our scale folded into lora_B and lora_alpha = r (PEFT scale alpha/r = 1), so
  `peft.PeftModel.from_pretrained(base, path)` reproduces our rank-k outputs under the rule;
- ours (mlora_config.json + mlora_adapter.safetensors), which load_adapter() restores:
  - a rule whose scale is the config's (Rule.saved_raw: truncate): raw A, B and the AdapterConfig
    cut to rank k (still usable at every rank <= k);
  - any other rule (prefix, svd, magnitude): the rank-k factors with the scale folded into B, as a
    LoRA with scale 1 (scaling none). Cut further it stays that rule's answer: a rule serves the
    first k components of its basis, so the first j saved ones are the rule at j (the best rank-j
    approximation for svd, the prefix at j for prefix, the j largest components for magnitude).

rank=None saves the full adapter, with PEFT's view equal to training behaviour (P folded).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import AdapterConfig, check_rank
from .inject import adapter_config, adapter_layers, add_adapters
from .io import load_tensors, read_json, save_tensors, write_json
from .methods import RULES, check

FORMAT = "mlora-adapter"
FORMAT_VERSION = 1
PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
MLORA_CONFIG, MLORA_WEIGHTS = "mlora_config.json", "mlora_adapter.safetensors"


def _base_name(model: nn.Module) -> str | None:
    return getattr(getattr(model, "config", None), "name_or_path", None) or None


def save_adapter(model: nn.Module, path: str | Path, rank: int | None = None, rule: str = "truncate",
                 base_model_name_or_path: str | None = None, task_type: str = "CAUSAL_LM") -> Path:
    layers = list(adapter_layers(model))
    if not layers:
        raise ValueError("model has no adapters; nothing to save")
    entry = RULES[check("rule", RULES, rule)]
    config = adapter_config(model)
    k = config.rank if rank is None else check_rank(rank, config.rank, "rank")
    folded_rule = rank is not None and not entry.saved_raw
    path = Path(path)
    peft_weights, ours = {}, {}
    for name, layer in layers:
        a, b, s = (t.detach() if torch.is_tensor(t) else t for t in layer.factors(rank, rule))
        folded = (b * s).to(b.dtype)
        peft_weights[f"base_model.model.{name}.lora_A.weight"] = a
        peft_weights[f"base_model.model.{name}.lora_B.weight"] = folded
        ours[f"{name}.lora_A"], ours[f"{name}.lora_B"] = a, folded if folded_rule else b
    if rank is None:
        saved = config
    elif folded_rule:  # the factors carry their scale: a plain LoRA of rank k with s = 1
        saved = AdapterConfig(method="lora", rank=k, scaling="none", alpha=1.0, target_modules=config.target_modules,
                              exclude_modules=config.exclude_modules, dropout=config.dropout)
    else:
        saved = config.truncated(k)
    base = base_model_name_or_path or _base_name(model)
    names = [n for n, _ in layers]
    save_tensors(path / PEFT_WEIGHTS, peft_weights, metadata={"format": "pt"})
    save_tensors(path / MLORA_WEIGHTS, ours, metadata={"format": FORMAT})
    write_json(path / PEFT_CONFIG, {
        "peft_type": "LORA", "task_type": task_type, "r": k, "lora_alpha": k,  # scale alpha/r = 1
        "target_modules": names, "lora_dropout": config.dropout, "bias": "none",
        "fan_in_fan_out": any(l.fan_in_fan_out for _, l in layers), "use_rslora": False,
        "use_dora": False, "init_lora_weights": True, "inference_mode": True,
        "modules_to_save": None, "base_model_name_or_path": base,
    })
    # written last: a directory without it is not an adapter (see load_adapter)
    write_json(path / MLORA_CONFIG, {
        "format": FORMAT, "version": FORMAT_VERSION, "saved_rank": k, "rule": rule if rank is not None else None,
        "source_adapter": config.to_dict() if folded_rule else None, "base_model": base,
        "adapter": saved.to_dict(), "modules": names,
    })
    return path


def read_adapter_config(path: str | Path) -> tuple[AdapterConfig, dict]:
    path = Path(path)
    if not (path / MLORA_CONFIG).is_file():
        raise FileNotFoundError(f"{path}: not an mlora adapter (no {MLORA_CONFIG}); "
                                "PEFT-only adapters load with peft.PeftModel.from_pretrained")
    meta = read_json(path / MLORA_CONFIG)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path / MLORA_CONFIG}: not an mlora adapter config")
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path / MLORA_CONFIG}: format version {meta.get('version')} "
                         f"is not supported (expected {FORMAT_VERSION})")
    return AdapterConfig.from_dict(meta["adapter"]), meta


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Inject (if needed) and load an adapter saved by save_adapter; checks every shape."""
    path = Path(path)
    config, meta = read_adapter_config(path)
    tensors = load_tensors(path / MLORA_WEIGHTS)
    layers = dict(adapter_layers(model))
    if not layers:
        config = AdapterConfig.from_dict({**config.to_dict(), "target_modules": meta["modules"],
                                          "exclude_modules": []})
        add_adapters(model, config)
        layers = dict(adapter_layers(model))
    if sorted(layers) != sorted(meta["modules"]):
        raise ValueError(f"{path}: adapter modules do not match the model's adapted modules")
    with torch.no_grad():
        for name, layer in layers.items():
            for part in ("lora_A", "lora_B"):
                key, param = f"{name}.{part}", getattr(layer, part)
                if key not in tensors:
                    raise ValueError(f"{path / MLORA_WEIGHTS}: missing tensor {key}")
                if tensors[key].shape != param.shape:
                    raise ValueError(f"{path / MLORA_WEIGHTS}: {key} has shape {tuple(tensors[key].shape)}, "
                                     f"the model expects {tuple(param.shape)}")
                param.copy_(tensors[key])
    return model
