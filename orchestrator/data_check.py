"""An experiment's data, checked before any trial starts (validate, plan, train, sweep): every
problem one line naming its task, raised as ConfigError (exit 2, nothing written)."""
from __future__ import annotations

import json
from pathlib import Path

from mlora_core.data.checks import data_problems
from mlora_core.scoring.harness import harness_problems

from .config import Experiment, HarnessSpec
from .load import ConfigError, load_experiment
from .plan import tasks_of


def data_problems_of(exp: Experiment) -> list[str]:
    """'tasks.KEY: problem' lines for the experiment's training, validation and eval data."""
    train, val = tasks_of(exp, exp.seeds[0])
    problems = [f"tasks.train: {p}" for p in data_problems(train, seeds=tuple(exp.seeds))]
    if val is not None and not val.holdout:   # a held-out part was checked with the training rows
        problems += [f"tasks.val: {p}" for p in data_problems(val)]
    if isinstance(exp.tasks.eval, HarnessSpec):   # lm-eval's own checks (scoring/harness.py: its index costs seconds)
        return problems + [f"tasks.eval.{p}" for p in harness_problems(exp.tasks.eval.to_core())]
    return problems + [f"tasks.eval: {p}" for p in data_problems(exp.tasks.eval.to_core())]


def has_chat_template(model_id: str) -> bool | None:
    """Whether the model's tokenizer carries a chat template, read without loading it: a builtin
    converted from a package does (its GGUF's), builtin:tiny does not, a local folder says so in
    its tokenizer files; None for a hub id (not looked up offline)."""
    from mlora_core.builtin_model import is_packaged
    from mlora_core.models import BUILTIN_PREFIX, check_model_id
    try:
        kind = check_model_id(model_id)
    except ValueError:
        return None   # the schema reports the model itself
    if kind == "builtin":
        return is_packaged(model_id[len(BUILTIN_PREFIX):])
    if kind == "local":
        folder = Path(model_id).expanduser()
        config = folder / "tokenizer_config.json"
        return (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file() or (
            config.is_file() and "chat_template" in json.loads(config.read_text()))
    return None


def chat_problems(exp: Experiment) -> list[str]:
    """A messages task on a model without a chat template, and no template of its own."""
    out = []
    for key, task in (("train", exp.tasks.train), ("eval", exp.tasks.eval)):
        if isinstance(task, HarnessSpec):   # lm-eval renders its own prompts (scoring/harness.py)
            continue
        if task.format == "messages" and not task.chat_template and has_chat_template(exp.model) is False:
            out.append(f"tasks.{key}.chat_template: format messages needs a chat template, and {exp.model} has "
                       "none: give the task a chat_template (a Jinja template), or use format prompt_completion")
    return out


def load_checked(path: str | Path) -> Experiment:
    """The experiment at `path`, its schema and its data checked."""
    exp = load_experiment(path)
    problems = chat_problems(exp) + data_problems_of(exp)
    if problems:
        raise ConfigError(str(path), problems)
    return exp


__all__ = ["chat_problems", "data_problems_of", "has_chat_template", "load_checked"]
