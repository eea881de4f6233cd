"""Greedy generation: what exact match and a user's function metric score, and what the
registered pyfunc model serves."""
from __future__ import annotations

import torch

from ..data.example import Example
from ..data.tokenize import prompt_ids, uses_chat_template
from .batching import batches, rows_of
from .metrics import MetricConfig


@torch.no_grad()
def generate(model, tokenizer, prompts: list, max_new_tokens: int, device=None,
             batch_size: int = 32) -> tuple[list[str], int]:
    """Greedy completions and tokens processed: left-padded batches of prompt_ids (the prompt
    format training used), stop at EOS, and at the first newline unless the model answers in a
    chat turn (multi-line, e.g. GSM8K's worked solution, until EOS)."""
    texts, tokens = generate_each(model, tokenizer, prompts, max_new_tokens, device, batch_size)
    return texts, sum(tokens)


@torch.no_grad()
def generate_each(model, tokenizer, prompts: list, max_new_tokens: int, device=None, batch_size: int = 32,
                  function_rows=None) -> tuple[list[str], list[int]]:
    """generate(), with tokens per prompt (its prompt + the new tokens of its batch) and, with
    `function_rows`, each prompt under its own function. Prompts are batched by length."""
    device = device or next(model.parameters()).device
    stop_ids, one_line = [tokenizer.eos_token_id], not uses_chat_template(tokenizer)
    newline = tokenizer.convert_tokens_to_ids("\n") if "\n" in tokenizer.get_vocab() else None
    if one_line and newline is not None and newline != tokenizer.unk_token_id:
        stop_ids.append(newline)
    ids = prompt_ids(tokenizer, list(prompts))
    texts, tokens = [""] * len(ids), [0] * len(ids)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        for idx in batches([len(x) for x in ids], batch_size):
            enc = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt").to(device)
            with rows_of(model, function_rows, idx):
                # each sequence stops at its own EOS / newline (padded after it); the batch at its longest
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids,
                                     pad_token_id=tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            for j, (i, t) in enumerate(zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True))):
                texts[i] = t.split("\n", 1)[0] if one_line else t.strip()
                tokens[i] = int(enc["attention_mask"][j].sum()) + new.shape[1]
    finally:
        tokenizer.padding_side = side
    return texts, tokens


def completion_scores(texts: list[str], examples: list[Example], metric: MetricConfig) -> list[float]:
    """Each completion's score under `metric` (its registry entry's score function)."""
    score = metric.entry.score
    return [score(t, e, metric) for t, e in zip(texts, examples)]


@torch.no_grad()
def exact_match(model, tokenizer, examples: list[Example], batch_size: int, max_new_tokens: int, device,
                metric: MetricConfig = MetricConfig("exact_match", extract="final_number")) -> tuple[int, int]:
    """(correct, tokens): greedy generation scored by `metric` (default: GSM8K's final number)."""
    texts, tokens = generate(model, tokenizer, [e.prompt for e in examples], max_new_tokens, device, batch_size)
    return int(sum(completion_scores(texts, examples, metric))), tokens


__all__ = ["completion_scores", "exact_match", "generate", "generate_each"]
