"""Examples -> token ids and loss masks: the one place that turns a prompt into tokens.

Training (tokenize), eval loss, multiple-choice scoring (both through tokenize) and generation
(scoring/generate.py, also what the registered pyfunc serves) all call prompt_ids, so they see
the same text and the same special tokens. Nothing here looks at a task's format, only at the
Example's shape:
 - a prompt string, no chat template (builtin:tiny, base models): BOS + the prompt as written
   ("Question: ...\\nAnswer: "); the answer follows on the same line and ends at EOS.
 - a prompt string, a chat template (instruct models, the paper's setting): the prompt, stripped,
   is the one user message, rendered with the model's own template and its generation prompt,
   e.g. SmolLM2:
       <|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n
       <|im_start|>user\\nQuestion: ...\\nAnswer:<|im_end|>\\n<|im_start|>assistant\\n
   then the completion with leading whitespace stripped (the turn starts on its own line) and
   EOS (<|im_end|>, the end of the assistant turn). No extra BOS: the template writes its own.
 - chat turns (format messages): rendered with the chat template; every assistant turn, as the
   template writes it (its end-of-turn token included), is trained on, the rest is not. The
   conversation is rendered turn by turn, and each rendering must extend the previous one (true
   of ChatML, Llama and Mistral templates): a template that rewrites earlier turns is an error.
 - no prompt (format text): BOS + the text + EOS, every token trained on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .example import Example, Turns

CHAT_DATE = "26 Jul 2024"   # Llama-3 templates write today's date otherwise: a run must be a function of its config


@dataclass
class TokenizedData:
    input_ids: list[list[int]]
    labels: list[list[int]]
    truncated: int = 0               # examples cut at max_length (reported, never silent)

    def answered(self) -> tuple[TokenizedData, int]:
        """(the examples that keep at least one trained token, how many did not): a micro-batch of
        only the others would have no loss (0 / 0) and nothing to learn."""
        keep = [i for i, labels in enumerate(self.labels) if any(t != -100 for t in labels)]
        if len(keep) == len(self.labels):
            return self, 0
        return TokenizedData([self.input_ids[i] for i in keep], [self.labels[i] for i in keep],
                             self.truncated), len(self.labels) - len(keep)


def uses_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _chat(tokenizer, turns: Turns, generation_prompt: bool) -> str:
    if not uses_chat_template(tokenizer):
        raise ValueError("chat turns need a chat template: this model's tokenizer has none "
                         "(set the task's chat_template, or use format prompt_completion)")
    return tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in turns], tokenize=False,
                                         add_generation_prompt=generation_prompt, date_string=CHAT_DATE)


def render_prompt(tokenizer, prompt: str | Turns) -> str:
    """The prompt text the model reads (see above)."""
    if not isinstance(prompt, str):
        return _chat(tokenizer, prompt, generation_prompt=True)
    if not uses_chat_template(tokenizer):
        return prompt
    return _chat(tokenizer, (("user", prompt.strip()),), generation_prompt=True)


def _bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def prompt_ids(tokenizer, prompts: list[str | Turns]) -> list[list[int]]:
    """Token ids of each prompt, special tokens included, as every path feeds them to the model."""
    texts = [render_prompt(tokenizer, p) for p in prompts]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [x if uses_chat_template(tokenizer) or not isinstance(p, str) else _bos(tokenizer) + x
            for p, x in zip(prompts, ids)]


def completion_text(tokenizer, completion: str) -> str:
    return completion.lstrip() if uses_chat_template(tokenizer) else completion


def conversation_segments(tokenizer, messages: Turns) -> list[tuple[str, bool]]:
    """(text, trained) pieces whose concatenation is the rendered conversation: each assistant
    turn as the template writes it is trained, what comes between is not."""
    pieces, done = [], ""
    for i, (role, _) in enumerate(messages):
        if role != "assistant":
            continue
        before = _chat(tokenizer, messages[:i], generation_prompt=True) if i else ""
        through = _chat(tokenizer, messages[:i + 1], generation_prompt=False)
        if not before.startswith(done) or not through.startswith(before):
            raise ValueError("messages: the chat template rewrites earlier turns when a turn is added; "
                             "its assistant turns cannot be masked (use format prompt_completion)")
        pieces += [(before[len(done):], False), (through[len(before):], True)]
        done = through
    return [(t, trained) for t, trained in pieces if t]


def _conversation(tokenizer, messages: Turns) -> tuple[list[int], list[int]]:
    ids, labels = [], []
    for text, trained in conversation_segments(tokenizer, messages):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if trained else [-100] * len(piece)
    return ids, labels


def _pairs(tokenizer, examples: list[Example]) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) of each example, before truncation."""
    eos = tokenizer.eos_token_id
    out: list[tuple[list[int], list[int]] | None] = [None] * len(examples)
    single = [i for i, e in enumerate(examples) if not e.messages and e.prompt is not None]
    prompts = prompt_ids(tokenizer, [examples[i].prompt for i in single])
    completions = tokenizer([completion_text(tokenizer, examples[i].completion) for i in single],
                            add_special_tokens=False)["input_ids"] if single else []
    for i, p, c in zip(single, prompts, completions):
        out[i] = (p + c + [eos], [-100] * len(p) + c + [eos])
    for i, e in enumerate(examples):
        if e.messages:
            out[i] = _conversation(tokenizer, e.messages)
        elif e.prompt is None:   # plain text: the whole of it (BOS is never predicted)
            body = _bos(tokenizer) + tokenizer(e.completion, add_special_tokens=False)["input_ids"] + [eos]
            out[i] = (body, [-100] * len(_bos(tokenizer)) + body[len(_bos(tokenizer)):])
    return out  # type: ignore[return-value]


def tokenize(tokenizer, examples: list[Example], max_length: int) -> TokenizedData:
    """prompt + completion + EOS; labels are -100 on the prompt so loss is on the answer only."""
    ids_all, labels_all, truncated = [], [], 0
    for ids, labels in _pairs(tokenizer, examples):
        if len(ids) > max_length:
            truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        ids_all.append(ids)
        labels_all.append(labels)
    return TokenizedData(ids_all, labels_all, truncated)


def collate(input_ids: list[list[int]], labels: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and loss."""
    width = max(len(x) for x in input_ids)
    ids = torch.full((len(input_ids), width), pad_id, dtype=torch.long)
    lab = torch.full((len(input_ids), width), -100, dtype=torch.long)
    mask = torch.zeros((len(input_ids), width), dtype=torch.long)
    for i, (x, y) in enumerate(zip(input_ids, labels)):
        ids[i, : len(x)], lab[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


__all__ = ["TokenizedData", "collate", "completion_text", "conversation_segments", "prompt_ids", "render_prompt",
           "tokenize", "uses_chat_template"]
