"""What every section of the experiment schema (config.py) is built from: strict frozen models (an
unknown key or a wrong type is an error), positive-number types, and `from_core`, which makes a
section whose defaults are a core config dataclass's, written once there."""
from __future__ import annotations

import dataclasses
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, create_model

PosInt = Annotated[int, Field(gt=0, strict=True)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0, strict=True)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def from_core(core: type, name: str, keys: dict[str, object], base: type[BaseModel] = Strict, doc: str = "") -> type:
    """A YAML section whose keys are fields of a core config dataclass: each key's type and bounds
    are given here, its default is the core's (written once, there; a tuple reads as a YAML list)."""
    defaults = {f.name: f.default for f in dataclasses.fields(core)}
    listed = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return create_model(name, __base__=base, __doc__=doc or base.__doc__,
                        **{k: (t, listed(defaults[k])) for k, t in keys.items()})



def distinct(v):
    """A list that names trials must be non-empty and hold no value twice (trial ids would clash)."""
    if v is not None:
        if not v:
            raise ValueError("must not be empty")
        if len(set(v)) != len(v):
            raise ValueError(f"values must be distinct, got {v}")
    return v


__all__ = ["NonNegInt", "PosFloat", "PosInt", "Strict", "distinct", "from_core"]
