"""One-line error messages: what every "could not ..." line of mlora quotes of an exception."""
from __future__ import annotations


def first_line(e: BaseException | str | None) -> str:
    """An error's first line (its type's name when it has no text); '' for None."""
    if e is None:
        return ""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


__all__ = ["first_line"]
