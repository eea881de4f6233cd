"""Builtin models, built once and cached on disk: `builtin:tiny` and packaged real models.

`builtin:tiny` is a small Llama the project pre-trains itself (below). Packaged models
(`builtin:smollm2-135m-instruct`, packaged_model.py) are real checkpoints shipped inside an
installed Python package, converted once to the same kind of cached safetensors folder.

No model can be downloaded on the machines this runs on, so the default experiment brings its
own base model: a real `LlamaForCausalLM`, pre-trained for about two minutes on a synthetic
corpus (synthetic.pretrain_texts: a price is *given* in context, then asked for),
then saved with `save_pretrained` so the normal `from_pretrained` path loads it. Fine-tuning
(synthetic.make_examples) asks for prices that are *not* given: a table the adapter must learn.

    path = ensure_builtin_model("tiny")           # builds once (~2 min), then cached
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)

Cache: <cache_dir>/builtin-<name>-<hash of recipe + CODE_VERSION (+ the package's version and
file sha256 for packaged models)>/, built in a temp folder and renamed into place (a killed
build leaves nothing loadable), under a file lock (two processes asking at once build it once).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import string
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import packaged_model, synthetic

CODE_VERSION = "10"   # bump when the code below changes what gets built

RECIPES: dict[str, dict] = {
    "tiny": dict(
        # architecture (LlamaConfig); params ~ 4 layers * (4*128*128 + 3*128*384) + 231*128 ~ 0.9M
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        # pre-training
        corpus="synthetic.pretrain_texts: an item price stated in context, then asked (10..99)",
        steps=400,
        batch_size=16,
        seq_len=128,
        lr=3e-3,
        warmup_steps=30,
        weight_decay=0.0,
        seed=1234,
    ),
    **packaged_model.PACKAGED,   # kind "gguf": converted from an installed package, not trained
}


def is_packaged(name: str) -> bool:
    return RECIPES.get(name, {}).get("kind") == "gguf"


# ---------------------------------------------------------------------------------------------
# tokenizer: one token per known word *with its leading space* (" asks", as GPT-2/SentencePiece
# vocabularies have them), one per digit, per remaining space and per punctuation mark, and one
# for GSM8K's "####"; unknown letter-words fall back to single letters (WordPiece "@@" pieces),
# so any CHARSET text round-trips exactly. Folding spaces into words makes a task sequence ~20
# tokens instead of ~30: training and evaluation cost follow the token count. A space before a
# digit or "####" stays its own token, so tok(prompt) + tok(answer) == tok(prompt + answer) for
# prompts ending in "Answer: " and answers starting with "####" (no merge across that boundary).
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
PIECE = "@@"   # WordPiece continuation prefix; not "##", which "####" would collide with


def _vocab() -> list[str]:
    chars = sorted(set(synthetic.CHARSET))
    pieces = [PIECE + c for c in string.ascii_letters] + [" " + c for c in string.ascii_letters]
    words = synthetic.words()
    return list(dict.fromkeys(SPECIALS + chars + pieces + ["####"] + words + [" " + w for w in words]))


def build_tokenizer():
    """A PreTrainedTokenizerFast built in code (no files, no training)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(_vocab())}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=100,
                                     continuing_subword_prefix=PIECE))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[A-Za-z]+|####|[^A-Za-z]"), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.Replace(PIECE, ""), decoders.Fuse()])
    # like Llama's tokenizers: add_special_tokens=True prepends <s>, which is what
    # tasks.tokenize puts before every training sequence and evaluation feeds the prompts
    bos = vocab["<s>"]
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="left")


# ---------------------------------------------------------------------------------------------
# pre-training
def _model_config(recipe: dict, tokenizer):
    """The LlamaConfig a recipe builds (cost.py reads it to cost a builtin without building it)."""
    from transformers import LlamaConfig

    if recipe.get("kind") == "gguf":
        return packaged_model.model_config(recipe)

    arch = {k: recipe[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                   "num_attention_heads", "num_key_value_heads",
                                   "max_position_embeddings", "tie_word_embeddings")}
    return LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       **arch)


def pretrain(recipe: dict, log: Callable[[str], None] = print):
    """Train a fresh LlamaForCausalLM on the synthetic corpus; returns (model, tokenizer, stats)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(recipe["seed"])
    tokenizer = build_tokenizer()
    model = LlamaForCausalLM(_model_config(recipe, tokenizer))
    steps, bs, width = recipe["steps"], recipe["batch_size"], recipe["seq_len"]
    # documents joined by </s> and cut into rows of `width` tokens (no padding); a document
    # is ~28 tokens, so steps * bs * width / 20 documents suffice
    n_docs = steps * bs * width // 20
    texts = synthetic.pretrain_texts(n_docs, seed=recipe["seed"])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    stream = [t for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] for t in [bos] + ids + [eos]]
    data = torch.tensor(stream[:steps * bs * width]).view(steps, bs, width)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], betas=(0.9, 0.98),
                            weight_decay=recipe["weight_decay"])
    warm = recipe["warmup_steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(   # linear warm-up, cosine decay to 10%
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))))
    model.train()
    t0, ema = time.time(), None
    for step in range(steps):
        ids = data[step]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            log(f"builtin pretrain step {step + 1}/{steps} loss {ema:.3f} ({time.time() - t0:.0f}s)")
    model.eval()
    return model, tokenizer, {"final_loss": ema, "seconds": time.time() - t0}


# ---------------------------------------------------------------------------------------------
# cache
def recipe_hash(name: str) -> str:
    if is_packaged(name):  # the converted bytes follow the package's file, not code of ours
        blob = json.dumps({"name": name, "recipe": RECIPES[name], "code": CODE_VERSION,
                           "package": packaged_model.fingerprint(name)}, sort_keys=True)
    else:
        blob = json.dumps({"name": name, "recipe": RECIPES[name], "code": CODE_VERSION,
                           "vocab": _vocab()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    return Path(os.environ.get("MLORA_CACHE") or Path.home() / ".cache" / "mlora")


def builtin_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where builtin model `name` is (or would be) cached; builds nothing."""
    if name not in RECIPES:
        raise ValueError(f"unknown builtin model {name!r}; choose one of {sorted(RECIPES)}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"builtin-{name}-{recipe_hash(name)}"


def ensure_builtin_model(name: str = "tiny", cache_dir: str | Path | None = None,
                         log: Callable[[str], None] = print) -> Path:
    """Path of the built model `name` (see RECIPES); builds and caches it on first use."""
    final = builtin_dir(name, cache_dir)
    if (final / "config.json").exists():
        return final
    from filelock import FileLock

    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / "config.json").exists():   # built by another process while we waited
            return final
        build = _convert if is_packaged(name) else _pretrain_with_all_cores
        tmp = Path(tempfile.mkdtemp(prefix=f".builtin-{name}-", dir=final.parent))
        try:
            stats = build(name, tmp, final, log)
            (tmp / "mlora_builtin.json").write_text(json.dumps(
                {"name": name, "recipe": RECIPES[name], "code_version": CODE_VERSION, **stats}, indent=2))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _convert(name: str, tmp: Path, final: Path, log: Callable[[str], None]) -> dict:
    log(f"building builtin:{name} (de-quantising {RECIPES[name]['file']} from the installed "
        f"{RECIPES[name]['distribution']}, ~30 s) -> {final}")
    stats = packaged_model.convert(name, tmp, log)
    return {**stats, "provenance": packaged_model.provenance(name)}


def _pretrain_with_all_cores(name: str, tmp: Path, final: Path, log: Callable[[str], None]) -> dict:
    log(f"building builtin:{name} (pre-training, ~2 min on 2 CPU cores) -> {final}")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else (os.cpu_count() or 1))
    try:
        model, tokenizer, stats = pretrain(RECIPES[name], log)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    log(f"builtin:{name} ready ({stats['seconds']:.0f}s, final loss {stats['final_loss']:.3f})")
    return stats


__all__ = ["CODE_VERSION", "RECIPES", "build_tokenizer", "builtin_dir", "default_cache_dir",
           "ensure_builtin_model", "is_packaged", "pretrain", "recipe_hash"]
