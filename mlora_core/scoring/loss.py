"""Eval loss on the completion tokens (what training minimises), per example or as a mean."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.example import Example
from ..data.tokenize import collate, tokenize
from .batching import batches, rows_of, sum_across_workers


@torch.no_grad()
def loss_terms(model, tokenizer, examples: list[Example], max_length: int, batch_size: int, device,
               function_rows=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per example: (summed loss over its completion tokens (float64), their count, tokens forwarded)."""
    data = tokenize(tokenizer, examples, max_length)
    n = len(examples)
    sums, counts, seen = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    for idx in batches([len(x) for x in data.input_ids], batch_size):
        batch = collate([data.input_ids[i] for i in idx], [data.labels[i] for i in idx], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with rows_of(model, function_rows, idx):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        loss = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
        sums[idx] = loss.double().sum(1).cpu()
        counts[idx] = (labels != -100).sum(1).cpu()
        seen[idx] = batch["attention_mask"].sum(1).cpu()
    return sums, counts, seen


def mean_loss(total: float, count: float, max_length: int) -> float:
    if count == 0:
        raise ValueError(f"eval: no answer token left after truncation at max_length={max_length}; "
                         "raise training.max_length")
    return total / count


@torch.no_grad()
def eval_loss(model, tokenizer, examples: list[Example], max_length: int, batch_size: int, device) -> tuple[float, int]:
    """(mean loss over completion tokens, tokens processed)."""
    sums, counts, seen = loss_terms(model, tokenizer, examples, max_length, batch_size, device)
    total, count = sum_across_workers(float(sums.sum()), int(counts.sum()))
    return mean_loss(total, count, max_length), int(seen.sum())


__all__ = ["eval_loss", "loss_terms", "mean_loss"]
