"""Per-rank evaluation: the same adapter at every eval rank under every rank-k rule.

Scores by task: exact match of the final number by batched greedy generation (stop at
newline/EOS), log-likelihood multiple choice, and eval loss on the completion tokens.
Under torch.distributed each worker scores its shard and the counts are summed.

Exact match and eval loss score every distinct (rank, rule) function in one pass: each is a row
of P on the factors it shares (function_rows: the trained A, B or the SVD factors), and every
example goes through under each function, batched longest first, one row per sequence; the
completions are those of one function at a time (set_rank), tests/core/test_evaluate_generate.py.

Multiple choice forwards each question once: its prompt, then all its choices in one sequence
with a 4D attention mask (choice_scores, "packed"), logits only at the scored positions; where
the completion is the correct choice (ARC), the eval loss comes from that same forward. The
straightforward path (a sequence per choice, logits everywhere) stays as method="reference":
the tests and benchmarks/eval_throughput.py hold the packed path to it.
"""
from __future__ import annotations

import inspect
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .aurac import aurac
from .inject import adapter_layers, set_function_rows, set_rank
from .tasks import Example, collate, completion_text, parse_final_number, prompt_ids, tokenize, uses_chat_template
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


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices, longest first, in batches of at most batch_size and at most batch_size x the mean
    length of padded tokens: the long tail goes in smaller batches (ARC-Easy on SmolLM2, batch 32:
    19% padding instead of 34%)."""
    order = sorted(range(len(lengths)), key=lambda q: -lengths[q])
    budget = batch_size * sum(lengths) / max(len(lengths), 1)
    batches, i = [], 0
    while i < len(order):
        n = max(1, min(batch_size, int(budget // max(lengths[order[i]], 1))))
        batches.append(order[i:i + n])
        i += n
    return batches


@contextmanager
def _rows_of(model, function_rows, idx: list[int]):
    """Give the batch `idx` its per-example functions (function_rows' rows), if any."""
    if function_rows is None:
        yield
        return
    basis, rows = function_rows
    set_function_rows(model, (basis, rows[idx]))
    try:
        yield
    finally:
        set_function_rows(model, None)


@torch.no_grad()
def _loss_terms(model, tokenizer, examples: list[Example], max_length: int, batch_size: int, device,
                function_rows=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per example: (summed loss over its completion tokens (float64), their count, tokens forwarded)."""
    data = tokenize(tokenizer, examples, max_length)
    n = len(examples)
    sums, counts, seen = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    for idx in _batches([len(x) for x in data.input_ids], batch_size):
        batch = collate([data.input_ids[i] for i in idx], [data.labels[i] for i in idx], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with _rows_of(model, function_rows, idx):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        loss = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
        sums[idx] = loss.double().sum(1).cpu()
        counts[idx] = (labels != -100).sum(1).cpu()
        seen[idx] = batch["attention_mask"].sum(1).cpu()
    return sums, counts, seen


def _mean_loss(total: float, count: float, max_length: int) -> float:
    if count == 0:
        raise ValueError(f"eval: no answer token left after truncation at max_length={max_length}; "
                         "raise training.max_length")
    return total / count


@torch.no_grad()
def eval_loss(model, tokenizer, examples: list[Example], max_length: int, batch_size: int, device) -> tuple[float, int]:
    """(mean loss over completion tokens, tokens processed)."""
    sums, counts, seen = _loss_terms(model, tokenizer, examples, max_length, batch_size, device)
    total, count = _sum_across_workers(float(sums.sum()), int(counts.sum()))
    return _mean_loss(total, count, max_length), int(seen.sum())


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, device=None,
             batch_size: int = 32) -> tuple[list[str], int]:
    """Greedy completions and tokens processed: left-padded batches of prompt_ids (the prompt
    format training used), stop at EOS, and at the first newline unless the model answers in a
    chat turn (multi-line, e.g. GSM8K's worked solution, until EOS). What exact match scores and
    what the registered pyfunc model serves."""
    texts, tokens = _generate(model, tokenizer, prompts, max_new_tokens, device, batch_size)
    return texts, sum(tokens)


@torch.no_grad()
def _generate(model, tokenizer, prompts: list[str], max_new_tokens: int, device=None, batch_size: int = 32,
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
        for idx in _batches([len(x) for x in ids], batch_size):
            enc = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt").to(device)
            with _rows_of(model, function_rows, idx):
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


@torch.no_grad()
def exact_match(model, tokenizer, examples: list[Example], batch_size: int, max_new_tokens: int,
                device) -> tuple[int, int]:
    """(correct, tokens): greedy generation, final number compared with the reference."""
    texts, tokens = generate(model, tokenizer, [e.prompt for e in examples], max_new_tokens, device, batch_size)
    correct = sum(int(e.answer is not None and parse_final_number(t) == e.answer) for e, t in zip(examples, texts))
    return correct, tokens


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

    def correct(self, examples: list[Example]) -> int:
        return sum(int(int(s.argmax()) == e.label) for s, e in zip(self.per_example(examples), examples) if len(s))


METHODS = ("auto", "packed", "reference")


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
        return _choice_scores_reference(model, tokenizer, examples, batch_size, device)
    return _choice_scores_packed(model, tokenizer, examples, batch_size, device, loss_max_length)


def _choice_scores_reference(model, tokenizer, examples, batch_size, device) -> ChoiceScores:
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


_LOGIT_ELEMENTS = 1 << 25   # logits held at once (rows x vocabulary): 128 MB in float32
_MIN_PREFIX = 4             # a shared prompt prefix shorter than this is not worth its own forward


def _choice_scores_packed(model, tokenizer, examples, batch_size, device, loss_max_length) -> ChoiceScores:
    """One sequence per question: its prompt once, then every choice, each choice attending to the
    prompt and to itself only (a 4D mask) at the positions it would have alone (position ids), so
    each choice token sees exactly what it sees in prompt + choice. The prefix every prompt shares
    (a chat template's system turn) is forwarded once and read from its cached keys/values. Logits
    only where a choice token (or the eval loss's EOS) is predicted: the output embedding applied
    to those hidden states. Longest first, at most batch_size questions a forward (_batches)."""
    from transformers import DynamicCache

    base = getattr(model, model.base_model_prefix)
    head = model.get_output_embeddings()
    embeddings = model.get_input_embeddings().weight       # the head may be an AdapterLayer: no .weight
    dtype, vocab = embeddings.dtype, embeddings.shape[0]
    sdpa, window = model.config._attn_implementation == "sdpa", _window(model)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompts = prompt_ids(tokenizer, [e.prompt for e in examples])
    if any(not p for p in prompts):
        raise ValueError("multiple choice: an empty prompt (no BOS) leaves a choice's first token unscored")
    texts = [completion_text(tokenizer, c) for e in examples for c in e.choices]
    flat_ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    first = [0]                                      # index of each example's first choice in flat_ids
    for e in examples:
        first.append(first[-1] + len(e.choices))
    longest = max((len(p) + len(c) for q, p in enumerate(prompts) for c in flat_ids[first[q]:first[q + 1]]), default=0)

    # the shared prefix: every prompt keeps at least its last token (it predicts the choices' first)
    shared = len(os.path.commonprefix(prompts)) if prompts else 0
    shared = min(shared, min((len(p) for p in prompts), default=1) - 1)
    if shared < _MIN_PREFIX or (window is not None and longest > window):
        shared = 0
    # transformers renamed the decoder's past_key_values to cache (5.x): pass the cache by the name it takes
    cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    tokens, prefix_kv = shared, None
    if shared:
        cache = DynamicCache()
        base(input_ids=torch.tensor([prompts[0][:shared]], device=device), use_cache=True, **{cache_kw: cache})
        prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]

    lengths = [len(p) - shared + sum(len(c) for c in flat_ids[first[q]:first[q + 1]]) for q, p in enumerate(prompts)]
    scores = torch.zeros(len(flat_ids), dtype=torch.float64)
    loss_sum, loss_count = 0.0, 0
    for batch in _batches(lengths, batch_size):
        width = max(lengths[q] for q in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        pos = torch.zeros((len(batch), width), dtype=torch.long)
        seg = torch.full((len(batch), width), -1, dtype=torch.long)   # -1 pad, 0 prompt, j+1 choice j
        rows: list[tuple[int, int]] = []             # (row, index) whose logits are needed
        targets: list[tuple[int, int, int]] = []     # (index into rows, token, flat choice index or -1: loss)
        for b, q in enumerate(batch):
            n = len(prompts[q])                      # positions 0..n-1 are the prompt's, `shared` of them cached
            own = n - shared
            ids[b, :own], pos[b, :own], seg[b, :own] = torch.tensor(prompts[q][shared:]), torch.arange(shared, n), 0
            start = len(rows)
            rows.append((b, own - 1))                # the prompt's last token predicts every choice's first
            at = own
            for j, f in enumerate(range(first[q], first[q + 1])):
                c = flat_ids[f]
                m = len(c)
                ids[b, at:at + m], pos[b, at:at + m], seg[b, at:at + m] = torch.tensor(c, dtype=torch.long), \
                    torch.arange(n, n + m), j + 1
                # token t of the choice is predicted where token t - 1 is (t = 0: the prompt's last token)
                pred = [start] + list(range(len(rows), len(rows) + m))
                rows += [(b, at + t) for t in range(m)]
                targets += [(pred[t], c[t], f) for t in range(m)]
                if loss_max_length is not None and j == examples[q].label:
                    # eval_loss's tokens: the completion + EOS, cut at loss_max_length as tokenize() cuts
                    # (the token at position t is scored iff t < max_length)
                    targets += [(pred[t], c[t], -1) for t in range(m) if n + t < loss_max_length]
                    if n + m < loss_max_length:
                        targets.append((pred[m], eos, -1))
                at += m
        tokens += sum(lengths[q] for q in batch)
        idx = torch.arange(width)
        keys, queries = seg[:, None, :], seg[:, :, None]
        allowed = (idx[None, :] <= idx[:, None]) & (keys >= 0) & ((keys == 0) | (keys == queries))
        allowed |= torch.eye(width, dtype=torch.bool)   # padding attends to itself: no empty row, no NaN
        if window is not None:
            allowed &= pos[:, None, :] > pos[:, :, None] - window
        cache = None
        if shared:   # every query sees the whole cached prefix (within any window: checked above)
            allowed = torch.cat([torch.ones(len(batch), width, shared, dtype=torch.bool), allowed], -1)
            cache = DynamicCache(ddp_cache_data=[(k.expand(len(batch), -1, -1, -1), v.expand(len(batch), -1, -1, -1))
                                                 for k, v in prefix_kv])
        allowed = allowed[:, None].to(device)
        mask = allowed if sdpa else torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(
            ~allowed, torch.finfo(dtype).min)
        hidden = base(input_ids=ids.to(device), attention_mask=mask, position_ids=pos.to(device),
                      use_cache=cache is not None, **{cache_kw: cache}).last_hidden_state
        del cache
        where = torch.tensor(rows, device=device)
        hidden = hidden[where[:, 0], where[:, 1]]                 # (rows, d)
        row, tok, dest = (torch.tensor(x, dtype=torch.long, device=device) for x in zip(*targets)) if targets else \
            (torch.zeros(0, dtype=torch.long, device=device),) * 3
        logp = torch.empty(len(row), dtype=torch.float32, device=device)
        chunk = max(1, _LOGIT_ELEMENTS // vocab)
        for a in range(0, len(rows), chunk):
            logits = torch.log_softmax(head(hidden[a:a + chunk]).float(), -1)
            sel = (row >= a) & (row < a + chunk)
            logp[sel] = logits[row[sel] - a, tok[sel]]
        logp, dest = logp.double().cpu(), dest.cpu()
        choice = dest >= 0
        scores.index_add_(0, dest[choice], logp[choice])
        loss_sum -= float(logp[~choice].sum())
        loss_count += int((~choice).sum())
    return ChoiceScores(scores, tokens, loss_sum, loss_count)


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


def _function_key(model, rank: int, rule: str) -> tuple:
    """What the model computes at (rank, rule), as a key: two rules with the same key are the same
    function (e.g. every rule at full rank for LoRA; prefix and svd at full rank for any adapter),
    so it is evaluated once. All layers share one config, so the first layer decides."""
    layer = next(adapter_layers(model))[1]
    a, b, s = layer.factors(rank, rule)
    scales = tuple(s.tolist()) if torch.is_tensor(s) else (float(s),) * rank
    return a.data_ptr(), b.data_ptr(), rank, scales


def function_rows(model, functions: list[tuple[int, str]]) -> list[tuple[str, list[int], torch.Tensor]]:
    """The (rank, rule) functions as P rows on the factors they share: [(basis, indices into
    `functions`, (n, r) rows)]. Row of (k, rule) = its s_k in the first k places, zeros after, on
    (A, B) ("trained": truncate, prefix, any rule at full rank) or on the SVD factors ("svd"), so
    x A^T diag(row) B^T is what set_rank(k, rule) computes (layer.py; the zeros add nothing)."""
    layer = next(adapter_layers(model))[1]
    groups: dict[str, tuple[list[int], list[torch.Tensor]]] = {}
    for i, (k, rule) in enumerate(functions):
        a, _, s = layer.factors(k, rule)
        basis = "trained" if a.data_ptr() == layer.lora_A.data_ptr() else "svd"
        row = torch.zeros(layer.config.rank, dtype=layer.lora_A.dtype, device=layer.lora_A.device)
        row[:k] = s
        idx, rows = groups.setdefault(basis, ([], []))
        idx.append(i)
        rows.append(row)
    return [(basis, idx, torch.stack(rows)) for basis, (idx, rows) in groups.items()]


def evaluate_ranks(model, tokenizer, examples: list[Example], ranks, metric: str, *, rules=("truncate",),
                   batch_size: int = 64, max_new_tokens: int = 16, max_length: int = 256, device="cpu",
                   log=print, name: str = "eval") -> tuple[dict[str, RankCurve], list[tuple[int, int]], float]:
    """({rule: curve}, [(rank, eval tokens on this worker) per distinct function], seconds).
    Each distinct (rank, rule) function is scored once: exact match and loss score all of them in
    one pass (each example under each function, batched together: function_rows), multiple choice
    one function at a time (its packed forward). Leaves the model at rank None."""
    rank, world_size = world()
    shard = examples[rank::world_size]
    functions: dict[tuple, tuple[int, str]] = {}   # what the model computes -> the first (rank, rule) giving it
    keys: dict[str, list[tuple]] = {rule: [] for rule in rules}
    for k in ranks:
        for rule in rules:
            key = _function_key(model, k, rule)
            functions.setdefault(key, (k, rule))
            keys[rule].append(key)
    evaluations, t0 = [], time.perf_counter()
    model.eval()
    set_rank(model, None)
    if metric == "multiple_choice":
        scores = _score_one_by_one(model, tokenizer, shard, examples, list(functions.values()), batch_size, max_length,
                                   device, evaluations)
    else:
        scores = _score_together(model, tokenizer, shard, metric, list(functions.values()), batch_size,
                                 max_new_tokens, max_length, device, evaluations)
    done = dict(zip(functions, scores))
    if rank == 0:
        for (k, rule), (acc, loss) in zip(functions.values(), scores):
            log(f"{name} rank {k:>4} {rule:<8}: {metric} {acc:.3f}  loss {loss:.4f}")
    curves = {rule: RankCurve(tuple(ranks), tuple(done[key][0] for key in ks), tuple(done[key][1] for key in ks),
                              metric, len(examples))
              for rule, ks in keys.items()}
    return curves, evaluations, time.perf_counter() - t0


def _accuracy(correct: float, n: float, loss: float, metric: str) -> float:
    return correct / max(n, 1) if metric != "loss" else float(torch.exp(torch.tensor(-loss)))


def _score_together(model, tokenizer, shard, metric, functions: list[tuple[int, str]], batch_size, max_new_tokens,
                    max_length, device, evaluations: list) -> list[tuple[float, float]]:
    """[(accuracy, eval loss)] of every function over every worker's shard, each example under
    each function in shared batches (ranks of one basis in one batch)."""
    n, m = len(shard), len(functions)
    loss_sum, loss_count = torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.long)
    correct, tokens = torch.zeros(m, dtype=torch.long), torch.zeros(m, dtype=torch.long)
    for basis, idx, rows in function_rows(model, functions) if n else []:
        items = [e for _ in idx for e in shard]             # function idx[0]'s examples, then idx[1]'s, ...
        item_rows = (basis, rows.repeat_interleave(n, 0))
        which = torch.tensor(idx).repeat_interleave(n)      # the function of each item
        sums, counts, seen = _loss_terms(model, tokenizer, items, max_length, batch_size, device, item_rows)
        loss_sum.index_add_(0, which, sums)
        loss_count.index_add_(0, which, counts)
        tokens.index_add_(0, which, seen)
        if metric == "exact_match":
            texts, gen_tokens = _generate(model, tokenizer, [e.prompt for e in items], max_new_tokens, device,
                                          batch_size, item_rows)
            hits = [int(e.answer is not None and parse_final_number(t) == e.answer) for e, t in zip(items, texts)]
            correct.index_add_(0, which, torch.tensor(hits, dtype=torch.long))
            tokens.index_add_(0, which, torch.tensor(gen_tokens, dtype=torch.long))
    out = []
    for f, (k, _) in enumerate(functions):   # every worker sums the same functions in the same order
        evaluations.append((k, int(tokens[f])))
        total, count, hit, seen_n = _sum_across_workers(float(loss_sum[f]), int(loss_count[f]), int(correct[f]), n)
        loss = _mean_loss(total, count, max_length)
        out.append((_accuracy(hit, seen_n, loss, metric), loss))
    return out


def _score_one_by_one(model, tokenizer, shard, examples, functions: list[tuple[int, str]], batch_size, max_length,
                      device, evaluations: list) -> list[tuple[float, float]]:
    """Multiple choice: [(accuracy, eval loss)] of each function in turn (set_rank), over every worker's shard."""
    # ARC: the eval loss's completion is the correct choice, so the multiple-choice forward gives it.
    # Decided on all examples (not the shard), so every worker takes the same collective calls
    shared_loss = packable(model) and all(
        0 <= e.label < len(e.choices) and e.completion == e.choices[e.label] for e in examples)
    out = []
    for k, rule in functions:
        set_rank(model, k, rule)
        if shared_loss:
            scored = choice_scores(model, tokenizer, shard, batch_size, device, "packed", loss_max_length=max_length)
            total, count = _sum_across_workers(scored.loss_sum, scored.loss_count)
            loss, n_tok = _mean_loss(total, count, max_length), scored.tokens
        else:
            loss, loss_tokens = eval_loss(model, tokenizer, shard, max_length, batch_size, device)
            scored = choice_scores(model, tokenizer, shard, batch_size, device)
            n_tok = loss_tokens + scored.tokens
        evaluations.append((k, n_tok))
        correct, total = _sum_across_workers(scored.correct(shard), len(shard))
        out.append((_accuracy(correct, total, loss, "multiple_choice"), loss))
    set_rank(model, None)
    return out
