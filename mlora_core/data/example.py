"""The one internal example shape every format is turned into (formats.py), and tokenize.py reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Turns = tuple[tuple[str, str], ...]      # (role, content), role in system | user | assistant


@dataclass(frozen=True)
class Example:
    """prompt: the text the model reads (str), the chat turns before the scored answer (Turns), or
    None for plain text (format text: every token is trained on). completion: what is trained on
    after the prompt (for multiple choice: the correct choice). messages: a whole conversation
    (format messages), trained on every assistant turn; prompt/completion then are its last one."""
    prompt: str | Turns | None
    completion: str
    answer: str | None = None            # exact-match reference (metrics.py extracts it from the completion)
    choices: tuple[str, ...] = ()        # multiple-choice continuations
    label: int = -1                      # index of the correct choice
    messages: Turns = ()
    row: dict[str, Any] | None = field(default=None, compare=False)   # the source row (a user's function metric)


__all__ = ["Example", "Turns"]
