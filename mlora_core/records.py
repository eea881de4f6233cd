"""Config dataclasses <-> plain JSON data, by their type hints: one converter for every record
(AdapterConfig, TrainConfig, TaskConfig, RunConfig), so adding a field is one edit, in its class."""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def to_plain(obj) -> dict[str, Any]:
    """A dataclass as JSON-ready data: nested dataclasses as dicts, tuples as lists."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v
    return plain(dataclasses.asdict(obj))


def _build(hint, value):
    """`value` (plain data) as the type `hint` names: a nested dataclass, a tuple, or as it is."""
    if value is None:
        return None
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for t in options:
        if dataclasses.is_dataclass(t) and isinstance(value, dict):
            return from_plain(t, value)
        if (t is tuple or typing.get_origin(t) is tuple) and isinstance(value, list):
            return tuple(value)
    return value


def from_plain(cls, data: dict[str, Any], what: str | None = None):
    """`cls` from to_plain's data; keys it does not have are an error naming them."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"{what or cls.__name__}: unknown keys {unknown}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _build(hints[k], v) for k, v in data.items()})


__all__ = ["from_plain", "to_plain"]
