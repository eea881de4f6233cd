"""Multiple choice by log-likelihood: each choice's summed log-probability given its prompt.

Each question is forwarded once: its prompt, then all its choices in one sequence with a 4D
attention mask ("packed"), logits only at the scored positions; where the completion is the
correct choice (ARC), the eval loss comes from that same forward. The straightforward path (a
sequence per choice, logits everywhere) stays as method="reference": the tests and
benchmarks/eval_throughput.py hold the packed path to it.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch

from ..data.example import Example
from ..data.tokenize import collate, completion_text, prompt_ids, tokenize
from .batching import batches

METHODS = ("auto", "packed", "reference")
_LOGIT_ELEMENTS = 1 << 25   # logits held at once (rows x vocabulary): 128 MB in float32
_MIN_PREFIX = 4             # a shared prompt prefix shorter than this is not worth its own forward


@dataclass
class ChoiceScores:
    """Per-choice summed log-likelihoods (flat over examples, in their order), tokens forwarded,
    and, when asked for (packed path only), the eval loss's sum and token count over each
    example's correct choice + EOS."""
    scores: torch.Tensor                 # float64, sum(len(e.choices) for e in examples)
    tokens: int
    loss_sum: float = 0.0
    loss_count: int = 0

    def per_example(self, examples: list[Example]) -> list[torch.Tensor]:
        return list(torch.split(self.scores, [len(e.choices) for e in examples]))

    def correct(self, examples: list[Example], length_normalized: bool = False) -> int:
        """Examples whose labelled choice scores highest; length_normalized: per character of the
        choice's text, its leading choice_prefix space not counted (lm-eval's acc_norm: len(choice),
        its target_delimiter " " not counted; tests/core/test_harness.py holds the two equal)."""
        hits = 0
        for s, e in zip(self.per_example(examples), examples):
            if len(s):
                if length_normalized:
                    s = s / torch.tensor([max(len(c.lstrip()), 1) for c in e.choices], dtype=s.dtype)
                hits += int(int(s.argmax()) == e.label)
        return hits


def _window(model) -> int | None:
    """The sliding window the packed mask must apply (every layer slides: Mistral), None when no
    layer slides; raises when only some do (a single 4D mask cannot say that)."""
    config = model.config
    window = getattr(config, "sliding_window", None)
    types = set(getattr(config, "layer_types", None) or ())
    if window is None or types == {"full_attention"}:
        return None
    if types <= {"sliding_attention"}:
        return int(window)
    raise ValueError("packed multiple choice: layers of mixed attention types; use method='reference'")


def packable(model) -> bool:
    """Whether the packed path computes what model(...).logits would: a decoder under model.<base_model_prefix>
    that takes a custom 4D attention mask (sdpa or eager attention; no per-layer mix of sliding and full
    attention), and logits that are the output embedding of its last hidden state and nothing more (no
    soft-capping or logit scale, as Gemma 2 / Cohere apply)."""
    config = getattr(model, "config", None)
    base = getattr(model, getattr(model, "base_model_prefix", "") or "", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not (isinstance(base, torch.nn.Module) and base is not model and isinstance(head, torch.nn.Module)
            and getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
            and not getattr(config, "is_encoder_decoder", False)
            and all(getattr(config, a, None) in (None, 1.0) for a in ("final_logit_softcapping", "logit_scale"))):
        return False
    try:
        _window(model)
    except ValueError:
        return False
    return True


@torch.no_grad()
def choice_scores(model, tokenizer, examples: list[Example], batch_size: int, device, method: str = "auto",
                  loss_max_length: int | None = None) -> ChoiceScores:
    """Each choice's summed log-likelihood given its prompt (the appended EOS not included), as
    tokenize() writes prompt + choice. method: packed (one sequence per question, below),
    reference (one sequence per choice, every position's logits), auto (packed where packable()).
    loss_max_length: also the eval loss (completion = choices[label], truncated as eval_loss
    truncates) from the same forward; packed only."""
    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}; choose one of {METHODS}")
    if method == "auto":
        method = "packed" if packable(model) else "reference"
    if method == "reference":
        if loss_max_length is not None:
            raise ValueError("the eval loss comes with the packed path only")
        return _reference(model, tokenizer, examples, batch_size, device)
    return _Packed(model, tokenizer, examples, loss_max_length).scores(batch_size, device)


def _reference(model, tokenizer, examples, batch_size, device) -> ChoiceScores:
    """The straightforward path: prompt + choice + EOS as its own sequence, batch_size sequences a
    forward, full-vocabulary logits at every position."""
    flat = [Example(prompt=e.prompt, completion=c) for e in examples for c in e.choices]
    data = tokenize(tokenizer, flat, max_length=10_000)
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
    return ChoiceScores(scores, tokens)


class _Packed:
    """One sequence per question: its prompt once, then every choice, each choice attending to the
    prompt and to itself only (a 4D mask) at the positions it would have alone (position ids), so
    each choice token sees exactly what it sees in prompt + choice. The prefix every prompt shares
    (a chat template's system turn) is forwarded once and read from its cached keys/values. Logits
    only where a choice token (or the eval loss's EOS) is predicted: the output embedding applied
    to those hidden states. Longest first, at most batch_size questions a forward (batches)."""

    def __init__(self, model, tokenizer, examples: list[Example], loss_max_length: int | None):
        self.model, self.examples, self.loss_max_length = model, examples, loss_max_length
        self.base = getattr(model, model.base_model_prefix)
        embeddings = model.get_input_embeddings().weight       # the head may be an AdapterLayer: no .weight
        self.dtype, self.vocab = embeddings.dtype, embeddings.shape[0]
        self.sdpa, self.window = model.config._attn_implementation == "sdpa", _window(model)
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.prompts = prompt_ids(tokenizer, [e.prompt for e in examples])
        if any(not p for p in self.prompts):
            raise ValueError("multiple choice: an empty prompt (no BOS) leaves a choice's first token unscored")
        texts = [completion_text(tokenizer, c) for e in examples for c in e.choices]
        self.flat = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        self.first = [0]                                 # index of each example's first choice in flat
        for e in examples:
            self.first.append(self.first[-1] + len(e.choices))
        self.shared = self._shared_prefix()
        # transformers renamed the decoder's past_key_values to cache (5.x): pass the cache by the name it takes
        self.cache_kw = "cache" if "cache" in inspect.signature(self.base.forward).parameters else "past_key_values"
        self.lengths = [len(p) - self.shared + sum(len(c) for c in self._choices(q)) for q, p in enumerate(self.prompts)]

    def _choices(self, q: int) -> list[list[int]]:
        return self.flat[self.first[q]:self.first[q + 1]]

    def _shared_prefix(self) -> int:
        """Tokens every prompt starts with; each prompt keeps at least its last token (it predicts the
        choices' first). 0 when too short to pay, or when a sliding window could not see all of it."""
        prompts = self.prompts
        longest = max((len(p) + len(c) for q, p in enumerate(prompts) for c in self._choices(q)), default=0)
        shared = len(os.path.commonprefix(prompts)) if prompts else 0
        shared = min(shared, min((len(p) for p in prompts), default=1) - 1)
        return 0 if shared < _MIN_PREFIX or (self.window is not None and longest > self.window) else shared

    def scores(self, batch_size: int, device) -> ChoiceScores:
        tokens, prefix_kv = self.shared, None
        if self.shared:
            from transformers import DynamicCache
            cache = DynamicCache()
            self.base(input_ids=torch.tensor([self.prompts[0][:self.shared]], device=device), use_cache=True,
                      **{self.cache_kw: cache})
            prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
        out = ChoiceScores(torch.zeros(len(self.flat), dtype=torch.float64), 0)
        for batch in batches(self.lengths, batch_size):
            tokens += sum(self.lengths[q] for q in batch)
            logp, dest = self._forward(batch, prefix_kv, device)
            choice = dest >= 0
            out.scores.index_add_(0, dest[choice], logp[choice])
            out.loss_sum -= float(logp[~choice].sum())
            out.loss_count += int((~choice).sum())
        out.tokens = tokens
        return out

    def _pack(self, batch: list[int]):
        """(ids, position ids, segments: -1 pad, 0 prompt, j+1 choice j; rows whose logits are needed
        as (row, index); targets as (index into rows, token, flat choice index or -1: the loss))."""
        width, shared = max(self.lengths[q] for q in batch), self.shared
        ids = torch.full((len(batch), width), self.pad, dtype=torch.long)
        pos = torch.zeros((len(batch), width), dtype=torch.long)
        seg = torch.full((len(batch), width), -1, dtype=torch.long)
        rows: list[tuple[int, int]] = []
        targets: list[tuple[int, int, int]] = []
        for b, q in enumerate(batch):
            n = len(self.prompts[q])                 # positions 0..n-1 are the prompt's, `shared` of them cached
            own = n - shared
            ids[b, :own], pos[b, :own], seg[b, :own] = torch.tensor(self.prompts[q][shared:]), torch.arange(shared, n), 0
            start = len(rows)
            rows.append((b, own - 1))                # the prompt's last token predicts every choice's first
            at = own
            for j, f in enumerate(range(self.first[q], self.first[q + 1])):
                c = self.flat[f]
                m = len(c)
                ids[b, at:at + m], pos[b, at:at + m], seg[b, at:at + m] = torch.tensor(c, dtype=torch.long), \
                    torch.arange(n, n + m), j + 1
                # token t of the choice is predicted where token t - 1 is (t = 0: the prompt's last token)
                pred = [start] + list(range(len(rows), len(rows) + m))
                rows += [(b, at + t) for t in range(m)]
                targets += [(pred[t], c[t], f) for t in range(m)]
                if self.loss_max_length is not None and j == self.examples[q].label:
                    # eval_loss's tokens: the completion + EOS, cut at loss_max_length as tokenize() cuts
                    # (the token at position t is scored iff t < max_length)
                    targets += [(pred[t], c[t], -1) for t in range(m) if n + t < self.loss_max_length]
                    if n + m < self.loss_max_length:
                        targets.append((pred[m], self.eos, -1))
                at += m
        return ids, pos, seg, rows, targets

    def _mask(self, seg: torch.Tensor, pos: torch.Tensor, device) -> torch.Tensor:
        width = seg.shape[1]
        idx = torch.arange(width)
        keys, queries = seg[:, None, :], seg[:, :, None]
        allowed = (idx[None, :] <= idx[:, None]) & (keys >= 0) & ((keys == 0) | (keys == queries))
        allowed |= torch.eye(width, dtype=torch.bool)   # padding attends to itself: no empty row, no NaN
        if self.window is not None:
            allowed &= pos[:, None, :] > pos[:, :, None] - self.window
        if self.shared:   # every query sees the whole cached prefix (within any window: checked above)
            allowed = torch.cat([torch.ones(len(seg), width, self.shared, dtype=torch.bool), allowed], -1)
        allowed = allowed[:, None].to(device)
        return allowed if self.sdpa else torch.zeros(allowed.shape, dtype=self.dtype, device=device).masked_fill_(
            ~allowed, torch.finfo(self.dtype).min)

    def _forward(self, batch: list[int], prefix_kv, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probability of each target, its flat choice index or -1) for one batch of questions."""
        ids, pos, seg, rows, targets = self._pack(batch)
        cache = None
        if prefix_kv is not None:
            from transformers import DynamicCache
            cache = DynamicCache(ddp_cache_data=[(k.expand(len(batch), -1, -1, -1), v.expand(len(batch), -1, -1, -1))
                                                 for k, v in prefix_kv])
        hidden = self.base(input_ids=ids.to(device), attention_mask=self._mask(seg, pos, device),
                           position_ids=pos.to(device), use_cache=cache is not None,
                           **{self.cache_kw: cache}).last_hidden_state
        del cache
        where = torch.tensor(rows, device=device)
        hidden = hidden[where[:, 0], where[:, 1]]                 # (rows, d)
        row, tok, dest = (torch.tensor(x, dtype=torch.long, device=device) for x in zip(*targets)) if targets else \
            (torch.zeros(0, dtype=torch.long, device=device),) * 3
        logp = torch.empty(len(row), dtype=torch.float32, device=device)
        chunk = max(1, _LOGIT_ELEMENTS // self.vocab)
        head = self.model.get_output_embeddings()
        for a in range(0, len(rows), chunk):
            logits = torch.log_softmax(head(hidden[a:a + chunk]).float(), -1)
            sel = (row >= a) & (row < a + chunk)
            logp[sel] = logits[row[sel] - a, tok[sel]]
        return logp.double().cpu(), dest.cpu()


@torch.no_grad()
def multiple_choice(model, tokenizer, examples: list[Example], batch_size: int, device,
                    method: str = "auto") -> tuple[int, int]:
    """(correct, tokens forwarded): pick the choice with the highest summed log-likelihood
    (choice_scores; `method` picks the path)."""
    scored = choice_scores(model, tokenizer, examples, batch_size, device, method)
    return scored.correct(examples), scored.tokens


def multiple_choice_reference(model, tokenizer, examples: list[Example], batch_size: int, device) -> tuple[int, int]:
    """The straightforward path (one sequence per choice), kept to check and time the packed one against."""
    return multiple_choice(model, tokenizer, examples, batch_size, device, method="reference")


__all__ = ["ChoiceScores", "choice_scores", "multiple_choice", "multiple_choice_reference", "packable"]
