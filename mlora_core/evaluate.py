"""Per-rank evaluation: the same adapter truncated (set_rank) to every eval rank.

Scores by task: exact match of the final number by batched greedy generation (stop at
newline/EOS), log-likelihood multiple choice, and eval loss on the completion tokens.
Under torch.distributed each worker scores its shard and the counts are summed.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .aurac import aurac
from .inject import adapter_layers, set_rank
from .tasks import Example, collate, parse_final_number, prompt_ids, tokenize, uses_chat_template
from .train import world


@dataclass(frozen=True)
class RankCurve:
    ranks: tuple[int, ...]
    accuracy: tuple[float, ...]
    eval_loss: tuple[float, ...]
    metric: str                          # exact_match | multiple_choice | loss
    n_examples: int
    aurac: float = field(init=False)
    aurac_log2: float = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "aurac", aurac(self.ranks, self.accuracy))
        object.__setattr__(self, "aurac_log2", aurac(self.ranks, self.accuracy, log2=True))

    def as_dict(self) -> dict:
        return {**asdict(self), "aurac": self.aurac, "aurac_log2": self.aurac_log2}

    def __str__(self) -> str:
        rows = "  ".join(f"r{k}={a:.3f}" for k, a in zip(self.ranks, self.accuracy))
        return f"{self.metric}: {rows}  | AURAC {self.aurac:.3f}  AURAC(log2) {self.aurac_log2:.3f}"


def _sum_across_workers(*values: float) -> list[float]:
    rank, world_size = world()
    if world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def eval_loss(model, tokenizer, examples: list[Example], max_length: int, batch_size: int, device) -> tuple[float, int]:
    """(mean loss over completion tokens, tokens processed)."""
    data = tokenize(tokenizer, examples, max_length)
    total, count, seen = 0.0, 0, 0
    for i in range(0, len(examples), batch_size):
        batch = collate(data.input_ids[i:i + batch_size], data.labels[i:i + batch_size], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        total += float(F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="sum"))
        count += int((labels != -100).sum())
        seen += int(batch["attention_mask"].sum())
    total, count = _sum_across_workers(total, count)
    if count == 0:
        raise ValueError(f"eval: no answer token left after truncation at max_length={max_length}; "
                         "raise training.max_length")
    return total / count, seen


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, device=None,
             batch_size: int = 32) -> tuple[list[str], int]:
    """Greedy completions and tokens processed: left-padded batches of prompt_ids (the prompt
    format training used), stop at EOS, and at the first newline unless the model answers in a
    chat turn (multi-line, e.g. GSM8K's worked solution, until EOS). What exact match scores and
    what the registered pyfunc model serves."""
    device = device or next(model.parameters()).device
    stop_ids, one_line = [tokenizer.eos_token_id], not uses_chat_template(tokenizer)
    newline = tokenizer.convert_tokens_to_ids("\n") if "\n" in tokenizer.get_vocab() else None
    if one_line and newline is not None and newline != tokenizer.unk_token_id:
        stop_ids.append(newline)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    texts, tokens = [], 0
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer.pad({"input_ids": prompt_ids(tokenizer, list(prompts[i:i + batch_size]))},
                                return_tensors="pt").to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids,
                                 pad_token_id=tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            tokens += int(enc["attention_mask"].sum()) + new.numel()
            texts += [t.split("\n", 1)[0] if one_line else t.strip()
                      for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return texts, tokens


@torch.no_grad()
def exact_match(model, tokenizer, examples: list[Example], batch_size: int, max_new_tokens: int,
                device) -> tuple[int, int]:
    """(correct, tokens): greedy generation, final number compared with the reference."""
    texts, tokens = generate(model, tokenizer, [e.prompt for e in examples], max_new_tokens, device, batch_size)
    correct = sum(int(e.answer is not None and parse_final_number(t) == e.answer) for e, t in zip(examples, texts))
    return correct, tokens


@torch.no_grad()
def multiple_choice(model, tokenizer, examples: list[Example], batch_size: int, device) -> tuple[int, int]:
    """(correct, tokens): pick the choice with the highest summed log-likelihood."""
    flat = [(ei, Example(prompt=e.prompt, completion=c)) for ei, e in enumerate(examples) for c in e.choices]
    data = tokenize(tokenizer, [x for _, x in flat], max_length=10_000)
    scores = torch.empty(len(flat), dtype=torch.float64)
    tokens = 0
    for i in range(0, len(flat), batch_size):
        batch = collate(data.input_ids[i:i + batch_size], data.labels[i:i + batch_size], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        # the appended EOS is not part of the choice
        mask = (labels != -100) & (labels != tokenizer.eos_token_id)
        scores[i:i + len(labels)] = (logp * mask).sum(-1).double().cpu()
        tokens += int(batch["attention_mask"].sum())
    correct, offset = 0, 0
    for e in examples:
        k = len(e.choices)
        correct += int(int(scores[offset:offset + k].argmax()) == e.label)
        offset += k
    return correct, tokens


def _function_key(model, rank: int, rule: str) -> tuple:
    """What the model computes at (rank, rule), as a key: two rules with the same key are the same
    function (e.g. every rule at full rank for LoRA; prefix and svd at full rank for any adapter),
    so it is evaluated once. All layers share one config, so the first layer decides."""
    layer = next(adapter_layers(model))[1]
    a, b, s = layer.factors(rank, rule)
    scales = tuple(s.tolist()) if torch.is_tensor(s) else (float(s),) * rank
    return a.data_ptr(), b.data_ptr(), rank, scales


def evaluate_ranks(model, tokenizer, examples: list[Example], ranks, metric: str, *, rules=("truncate",),
                   batch_size: int = 64, max_new_tokens: int = 16, max_length: int = 256, device="cpu",
                   log=print, name: str = "eval") -> tuple[dict[str, RankCurve], list[tuple[int, int]], float]:
    """({rule: curve}, [(rank, eval tokens on this worker) per evaluation run], seconds).
    Leaves the model at rank None."""
    rank, world_size = world()
    shard = examples[rank::world_size]
    scores: dict[str, list[tuple[float, float]]] = {rule: [] for rule in rules}
    evaluations, t0 = [], time.perf_counter()
    model.eval()
    for k in ranks:
        done: dict[tuple, tuple[float, float]] = {}
        for rule in rules:
            key = _function_key(model, k, rule)
            if key not in done:
                set_rank(model, k, rule)
                done[key] = _score(model, tokenizer, shard, metric, batch_size, max_new_tokens, max_length, device,
                                   evaluations, k)
                if rank == 0:
                    log(f"{name} rank {k:>4} {rule:<8}: {metric} {done[key][0]:.3f}  loss {done[key][1]:.4f}")
            scores[rule].append(done[key])
    set_rank(model, None)
    curves = {rule: RankCurve(tuple(ranks), tuple(a for a, _ in sc), tuple(l for _, l in sc), metric, len(examples))
              for rule, sc in scores.items()}
    return curves, evaluations, time.perf_counter() - t0


def _score(model, tokenizer, shard, metric, batch_size, max_new_tokens, max_length, device,
           evaluations: list, k: int) -> tuple[float, float]:
    """(accuracy, eval loss) of the model as it is set now, over every worker's shard."""
    loss, loss_tokens = eval_loss(model, tokenizer, shard, max_length, batch_size, device)
    if metric == "exact_match":
        correct, n_tok = exact_match(model, tokenizer, shard, batch_size, max_new_tokens, device)
    elif metric == "multiple_choice":
        correct, n_tok = multiple_choice(model, tokenizer, shard, batch_size, device)
    else:
        correct, n_tok = 0, 0
    evaluations.append((k, loss_tokens + n_tok))
    correct, total = _sum_across_workers(correct, len(shard))
    acc = correct / max(total, 1) if metric != "loss" else float(torch.exp(torch.tensor(-loss)))
    return acc, loss
