"""Reading an experiment YAML into the schema (config.py): every problem one line naming its key
path and what it accepts, raised as ConfigError, which the CLI prints before exiting 2."""
from __future__ import annotations

import re
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from mlora_core.errors import first_line

from .config import Experiment

__all__ = ["ConfigError", "first_line", "load_experiment", "parse_experiment"]


class ConfigError(ValueError):
    """Invalid experiment config; `problems` holds one 'key.path: message' line each."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        if len(problems) == 1:  # the common case: one line
            super().__init__(f"{source}: {problems[0]}")
        else:
            super().__init__(f"{source}: {len(problems)} problems\n" + "\n".join(f"  {p}" for p in problems))


_KEYED = re.compile(r"^([a-z_][\w.]*): (.*)$", re.S)


_INNER = ("function-", "literal[", "constrained-")   # pydantic's validator steps inside one key
_BRANCH = ("str", "int", "float", "bool", "none")    # ... and the members of a union (also any 'x[...]')


def _split_loc(loc: tuple) -> tuple[str, str | None, str]:
    """(key path, the union member the error came from or None, the path inside that member)."""
    parts = [str(p) for p in loc if not str(p).startswith(_INNER)]
    for i, part in enumerate(parts):
        if "[" in part or part in _BRANCH:
            return ".".join(parts[:i]), part, ".".join(parts[i + 1:])
    return ".".join(parts), None, ""


def _accepts(path: str) -> str | None:
    """What the schema's key at `path` accepts, in the YAML's words (its Field description)."""
    model, field = Experiment, None
    for seg in path.split("."):
        field = model.model_fields.get(seg) if model is not None else None
        if field is None:
            return None
        model = next((t for t in (field.annotation, *typing.get_args(field.annotation))
                      if isinstance(t, type) and issubclass(t, BaseModel)), None)
    return field.description if field is not None else None


def parse_experiment(data: object, source: str = "config") -> Experiment:
    if not isinstance(data, dict):
        raise ConfigError(source, [f"(top level): expected a mapping of keys, got {type(data).__name__}"])
    try:
        return Experiment.model_validate(data)
    except ValidationError as e:
        # one line per key: each member of a union reports its own failure; the one that got past
        # the value's type (an inner path: the list's item 1, the mapping's key) says what is wrong
        problems: dict[str, tuple[str, bool]] = {}
        for err in e.errors():
            where, branch, inner = _split_loc(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "value_error" and (m := _KEYED.match(msg)):  # a model validator names its key
                where, msg = ".".join(filter(None, (where, m.group(1)))), m.group(2)
            if branch is not None and (accepts := _accepts(where)):
                at = f"item {inner}" if inner.isdigit() else f"key {inner.removesuffix('.[key]')!r}" \
                    if inner.endswith("[key]") else inner
                msg = f"must be {accepts}" + (f" ({at}: {msg[0].lower() + msg[1:]})" if inner else "")
            where = where or "(top level)"
            if where not in problems or (inner and not problems[where][1]):
                problems[where] = (msg, bool(inner))
        raise ConfigError(source, [f"{k}: {msg}" for k, (msg, _) in problems.items()]) from None


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(str(path), ["(file): no such file"]) from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as e:
        raise ConfigError(str(path), [f"(file): cannot read as text ({type(e).__name__})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        raise ConfigError(str(path), [f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})"]) from None
    return parse_experiment(data, str(path))
