"""Metrics, registered by name (as lm-evaluation-harness registers its own): one entry per metric,
holding how it scores; the scoring path is picked by the entry's `output`, never by its name.

    metric           output     one example's score                          a curve's point
    exact_match      generate   extract(completion) == reference, normalised  mean of the scores
    f1               generate   token F1 of completion and reference (SQuAD)  mean of the scores
    function         generate   a user's fn(completion, row) -> [0, 1]        mean of the scores
    multiple_choice  choice     argmax of the choices' log-likelihoods        fraction correct
                                (length_normalized: per character, lm-eval's acc_norm)
    loss             loss       -                                             exp(-mean loss): 1 = perfect

    extract: final_number (GSM8K's "#### N", else the last number) | first_line | regex (its first
             group, else the whole match) | none;   normalize: strip | lower | punctuation
The reference of exact match is the task's answer column when it maps one, else the completion
passed through the same extraction (GSM8K: the number after "####").
"""
from __future__ import annotations

import functools
import importlib
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def parse_final_number(text: str) -> str | None:
    """GSM8K answers: the number after '####' if present, else the last number in the text."""
    tail = text.split("####", 1)[1] if "####" in text else text
    nums = _NUMBER.findall(tail)
    if not nums:
        return None
    num = (nums[0] if "####" in text else nums[-1]).replace(",", "")
    return num[:-2] if num.endswith(".0") else num


@functools.lru_cache(maxsize=64)
def _regex(pattern: str) -> Callable[[str], str | None]:
    compiled = re.compile(pattern)

    def extract(text: str) -> str | None:
        m = compiled.search(text)
        return None if m is None else (m.group(1) if compiled.groups else m.group(0))
    return extract


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "final_number": parse_final_number,
    "first_line": lambda text: text.strip().split("\n", 1)[0],
    "none": lambda text: text,
}
_PUNCTUATION = str.maketrans("", "", string.punctuation)
NORMALIZERS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "lower": str.lower,
    "punctuation": lambda text: text.translate(_PUNCTUATION),
}


@dataclass(frozen=True)
class MetricConfig:
    """How an eval task is scored (the YAML's `metric:`)."""
    name: str = "exact_match"            # METRICS
    extract: str = "none"                # exact_match: final_number | first_line | regex | none
    regex: str | None = None             # extract regex: the pattern
    normalize: tuple[str, ...] = ("strip",)   # exact_match: applied to both sides, in order
    length_normalized: bool = False      # multiple_choice: log-likelihood per character (lm-eval's acc_norm)
    function: str | None = None          # function: "package.module:name", fn(completion, row) -> [0, 1]

    def __post_init__(self):
        problem = metric_problem(self)
        if problem:
            raise ValueError(f"metric: {problem}")
        object.__setattr__(self, "normalize", tuple(self.normalize))

    @property
    def entry(self) -> Metric:
        return METRICS[self.name]

    def extractor(self) -> Callable[[str], str | None]:
        return _regex(self.regex) if self.extract == "regex" else EXTRACTORS[self.extract]

    def normalized(self, text: str | None) -> str | None:
        if text is None:
            return None
        for n in self.normalize:
            text = NORMALIZERS[n](text)
        return text

    def reference(self, completion: str, answer: Any | None) -> str | None:
        """What exact match compares with: the answer column, else the completion extracted."""
        return str(answer).strip() if answer is not None else self.extractor()(completion)


def _exact_match(text: str, example, config: MetricConfig) -> float:
    ref = config.normalized(example.answer)
    return float(ref is not None and config.normalized(config.extractor()(text)) == ref)


def load_function(path: str) -> Callable[[str, dict], float]:
    """"package.module:name" -> the function, or ValueError with one line."""
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"function {path!r} must be 'package.module:name'")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"function {path!r} does not import: {type(e).__name__}: {e}") from None
    if not callable(fn):
        raise ValueError(f"function {path!r} is not callable")
    return fn


def _function(text: str, example, config: MetricConfig) -> float:
    value = load_function(config.function)(text, example.row or {})
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"metric function {config.function} returned {value!r}, not a number in [0, 1]")
    return float(value)


def _f1(text: str, example, config: MetricConfig) -> float:
    """SQuAD's token F1: the harmonic mean of precision and recall of the normalised words."""
    pred = (config.normalized(config.extractor()(text)) or "").split()
    ref = (config.normalized(example.answer) or "").split()
    common = sum(min(pred.count(w), ref.count(w)) for w in set(pred))
    if not pred or not ref or not common:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Metric:
    name: str
    output: str          # generate | choice | loss: which scoring path (scoring/ranks.py) runs it
    doc: str
    score: Callable[[str, Any, MetricConfig], float] | None = None   # generate: one completion's score
    needs_row: bool = False          # the example keeps its source row (a user's function reads it)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("exact_match", "generate", "greedy completion, extracted and normalised, equals the reference",
           _exact_match),
    Metric("f1", "generate", "SQuAD's token F1 of the completion against the reference (TriviaQA, NQ-Open)", _f1),
    Metric("function", "generate", "a user's function of (completion, row) in [0, 1]", _function, needs_row=True),
    Metric("multiple_choice", "choice", "the choice of highest log-likelihood is the labelled one"),
    Metric("loss", "loss", "exp(-eval loss) on the completion tokens"),
)}


def metric_problem(config: MetricConfig) -> str | None:
    """What is wrong with a metric config, in one line, or None (imports a function metric's module)."""
    if config.name not in METRICS:
        return f"unknown metric {config.name!r}; choose one of {tuple(METRICS)}"
    if config.extract not in (*EXTRACTORS, "regex"):
        return f"unknown extract {config.extract!r}; choose one of {(*EXTRACTORS, 'regex')}"
    if (config.extract == "regex") != (config.regex is not None):
        return "extract: regex goes with a regex pattern, and a pattern with extract: regex"
    if config.regex is not None:
        try:
            re.compile(config.regex)
        except re.error as e:
            return f"regex {config.regex!r} does not compile: {e}"
    bad = [n for n in config.normalize if n not in NORMALIZERS]
    if bad:
        return f"unknown normalize {bad}; choose from {tuple(NORMALIZERS)}"
    if (config.name == "function") != (config.function is not None):
        return "metric function goes with function: 'package.module:name' (and only it)"
    if config.function is not None:
        try:
            load_function(config.function)
        except ValueError as e:
            return str(e)
    return None


__all__ = ["EXTRACTORS", "METRICS", "Metric", "MetricConfig", "NORMALIZERS", "load_function", "metric_problem",
           "parse_final_number"]
