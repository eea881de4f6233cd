"""Formats: how a row of a user's data becomes one `Example`, one registry entry per format.

    prompt_completion  template over the row's fields -> prompt; a completion column   (TRL, torchtune)
    alpaca             instruction / input (optional) / output                          (axolotl, LlamaFactory)
    messages           [{role, content}, ...] turns (OpenAI; ShareGPT's from/value too) (TRL conversational)
    text               plain text: loss on every token                                  (language modelling)
    multiple_choice    template -> prompt; choices (a column, or several); a label (index or key)

Each entry names the columns it reads (`columns(spec)`: the role -> column map, after the
user's `columns:` overrides) and turns a row into an Example (`build(row, spec)`); tokenizing,
loss masks and scoring never look at the format again, only at the Example's shape
(tokenize.py). `check_row` is what `mlora validate` asks of a row: the same rules, one line each.

Template fields are filled stripped of surrounding whitespace, as is the completion: GSM8K's
`"Question: {question}\\nAnswer: "` then gives exactly the prompt the built-in gsm8k task has
always had. A choice is scored as `choice_prefix` + its text (default " ", the word after "Answer:").
"""
from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .example import Example

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


def template_fields(template: str) -> list[str]:
    """The row fields a template reads: "Question: {question}" -> ["question"]."""
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def fill(template: str, row: dict) -> str:
    return template.format_map({f: _text(row[f]).strip() for f in template_fields(template)})


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Format:
    name: str
    doc: str
    defaults: dict[str, Any]                     # role -> default column (a list for several columns)
    build: Callable[[dict, Any], Example]        # (row, TaskConfig) -> Example
    check: Callable[[dict, Any], str | None]     # (row, TaskConfig) -> what is wrong with it, or None
    uses_template: bool = False

    def columns(self, spec) -> dict[str, Any]:
        """role -> column(s), the user's `columns:` over this format's defaults."""
        return {**self.defaults, **(spec.columns or {})}

    def missing(self, spec, columns) -> list[str]:
        """The required columns (below) that `columns` (a table's, a row's keys) lacks, in their order."""
        return [c for c in self.required(spec) if c not in columns]

    def required(self, spec) -> list[str]:
        """Every column a row must have: the roles' columns (alpaca's input and an unmapped answer
        are optional; the prompt column is read only without a template) and the template's fields."""
        out: list[str] = template_fields(spec.template) if self.uses_template and spec.template else []
        for role, col in self.columns(spec).items():
            if col is None or role == "input" or (role == "prompt" and spec.template):
                continue
            out += list(col) if isinstance(col, (list, tuple)) else [col]
        return list(dict.fromkeys(out))


def _prompt(row: dict, spec) -> str:
    return fill(spec.template, row) if spec.template else _text(row[spec.fmt.columns(spec)["prompt"]])


# ---- prompt_completion ----------------------------------------------------------------------

def _pc_build(row: dict, spec) -> Example:
    cols = spec.fmt.columns(spec)
    completion = _text(row[cols["completion"]]).strip()
    answer = row.get(cols["answer"]) if cols.get("answer") else None
    return Example(_prompt(row, spec), completion, spec.reference(completion, answer))


def _pc_check(row: dict, spec) -> str | None:
    cols = spec.fmt.columns(spec)
    return "an empty completion" if not _text(row[cols["completion"]]).strip() else None


# ---- alpaca ------------------------------------------------------------------------------------

def alpaca_prompt(instruction: str, input_: str | None) -> str:
    """The Alpaca prompt without its preamble (what Open-Platypus and most instruction sets use)."""
    context = f"### Input:\n{input_.strip()}\n\n" if input_ and input_.strip() else ""
    return f"### Instruction:\n{instruction.strip()}\n\n{context}### Response:\n"


def _alpaca_build(row: dict, spec) -> Example:
    cols = spec.fmt.columns(spec)
    input_ = row.get(cols["input"]) if cols.get("input") else None
    completion = _text(row[cols["output"]]).strip()
    return Example(alpaca_prompt(_text(row[cols["instruction"]]), input_ and _text(input_)), completion,
                   spec.reference(completion, None))


def _alpaca_check(row: dict, spec) -> str | None:
    cols = spec.fmt.columns(spec)
    return "an empty output" if not _text(row[cols["output"]]).strip() else None


# ---- messages ----------------------------------------------------------------------------------

def turns(value: Any) -> tuple[tuple[str, str], ...]:
    """(role, content) turns from OpenAI ({role, content}) or ShareGPT ({from, value}) dicts."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"messages must be a list of turns, got {type(value).__name__}")
    out = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise ValueError(f"turn {i} is {type(turn).__name__}, not a {{role, content}} object")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if role not in SHAREGPT_ROLES or not isinstance(content, str):
            raise ValueError(f"turn {i} needs a role in {ROLES} and a string content, got {turn!r:.80}")
        out.append((SHAREGPT_ROLES[role], content))
    return tuple(out)


def _messages_build(row: dict, spec) -> Example:
    conversation = turns(row[spec.fmt.columns(spec)["messages"]])
    last = max(i for i, (role, _) in enumerate(conversation) if role == "assistant")
    completion = conversation[last][1].strip()
    # scored as: the turns before the last assistant turn -> that turn (generation, exact match)
    return Example(conversation[:last], completion, spec.reference(completion, None), messages=conversation[:last + 1])


def _messages_check(row: dict, spec) -> str | None:
    try:
        conversation = turns(row[spec.fmt.columns(spec)["messages"]])
    except ValueError as e:
        return str(e)
    return None if any(role == "assistant" for role, _ in conversation) else "no assistant turn"


# ---- text --------------------------------------------------------------------------------------

def _text_build(row: dict, spec) -> Example:
    return Example(None, _text(row[spec.fmt.columns(spec)["text"]]))


def _text_check(row: dict, spec) -> str | None:
    return "an empty text" if not _text(row[spec.fmt.columns(spec)["text"]]).strip() else None


# ---- multiple_choice ---------------------------------------------------------------------------

def choices_of(row: dict, spec) -> tuple[list[str], list[str]]:
    """(choice texts, their keys): a column holding a list, or ARC's {text, label}, or several columns."""
    col = spec.fmt.columns(spec)["choices"]
    if isinstance(col, (list, tuple)):
        texts = [_text(row[c]) for c in col]
        return texts, [chr(ord("A") + i) for i in range(len(texts))]
    value = row[col]
    if isinstance(value, dict):
        texts, keys = list(value["text"]), [_text(k) for k in value["label"]]
        return [_text(t) for t in texts], keys
    texts = [_text(t) for t in value]
    return texts, [chr(ord("A") + i) for i in range(len(texts))]


def label_index(label: Any, keys: list[str], n: int) -> int:
    """The correct choice: an index (int, or a string of digits that is not itself a key), or a key
    ("B"; ARC's "1".."4" where the keys are digits). ValueError when it names no choice."""
    if isinstance(label, bool):
        label = int(label)
    if isinstance(label, str) and label.strip() in keys:
        return keys.index(label.strip())
    if isinstance(label, int) or (isinstance(label, str) and label.strip().lstrip("-").isdigit()):
        i = int(label)
        if 0 <= i < n:
            return i
    raise ValueError(f"label {label!r} names none of the {n} choices (keys {keys})")


def _mc_build(row: dict, spec) -> Example:
    texts, keys = choices_of(row, spec)
    label = label_index(row[spec.fmt.columns(spec)["label"]], keys, len(texts))
    choices = tuple(spec.choice_prefix + t.strip() for t in texts)
    return Example(_prompt(row, spec), choices[label], choices=choices, label=label)


def _mc_check(row: dict, spec) -> str | None:
    try:
        texts, keys = choices_of(row, spec)
        if len(texts) < 2:
            return f"{len(texts)} choice(s): multiple choice needs at least 2"
        label_index(row[spec.fmt.columns(spec)["label"]], keys, len(texts))
    except (ValueError, KeyError, TypeError) as e:
        return str(e).strip("'")
    return None


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("prompt_completion", "a template over the row's fields, then its completion; loss on the completion",
           {"prompt": "prompt", "completion": "completion", "answer": None}, _pc_build, _pc_check, uses_template=True),
    Format("alpaca", "instruction / input (optional) / output; loss on the output",
           {"instruction": "instruction", "input": "input", "output": "output"}, _alpaca_build, _alpaca_check),
    Format("messages", "chat turns [{role, content}] in the model's chat template; loss on assistant turns",
           {"messages": "messages"}, _messages_build, _messages_check),
    Format("text", "plain text; loss on every token (scored by loss / perplexity)", {"text": "text"},
           _text_build, _text_check),
    Format("multiple_choice", "a template -> prompt; choices scored by log-likelihood; label an index or a key",
           {"prompt": "question", "choices": "choices", "label": "label"}, _mc_build, _mc_check, uses_template=True),
)}

__all__ = ["FORMATS", "Format", "alpaca_prompt", "choices_of", "fill", "label_index", "template_fields", "turns"]
