"""docs/configuration.md documents the whole schema: its YAML block parses to exactly the
defaults, and every key of orchestrator/config.py appears in it."""
from __future__ import annotations

import re
import typing

import yaml
from pydantic import BaseModel

from orchestrator.config import Experiment

from .conftest import ROOT

DOC = ROOT / "docs" / "configuration.md"


def _yaml_block() -> str:
    return re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S).group(1)


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        for sub in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                keys += _keys(sub, f"{prefix}{name}.")
    return keys


def test_the_documented_block_is_the_default_experiment():
    documented = Experiment.model_validate(yaml.safe_load(_yaml_block()))
    assert documented == Experiment(name="my-experiment")


def test_every_schema_key_is_documented():
    text = DOC.read_text()
    missing = [k for k in _keys(Experiment) if not re.search(rf"\b{k.split('.')[-1]}:", text)]
    assert len(_keys(Experiment)) > 60 and not missing, missing
