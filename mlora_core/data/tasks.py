"""Tasks: a format + a source + a metric. Built-in tasks are registry entries in the same terms a
user writes their own in (docs/data.md); `load_examples` turns either into Examples.

    task           format             hub dataset (source: hub)         offline (source: offline)   metric
    synthetic      prompt_completion  built in (mlora_core.synthetic)   -                           exact_match, final_number
    gsm8k          prompt_completion  openai/gsm8k, "main"              train 1000 / test 319       exact_match, final_number
    platypus       prompt_completion  garage-bAInd/Open-Platypus        -                           loss
    arc_challenge  multiple_choice    allenai/ai2_arc, "ARC-Challenge"  validation 299 / test 1172  multiple_choice
    arc_easy       multiple_choice    allenai/ai2_arc, "ARC-Easy"       validation 570 / test 2376  multiple_choice
    arc            = arc_challenge (the name earlier configs use)
    (no name)      the task's `format`, read from `path` (local) or `dataset` (hub)

`source` defaults to local when `path` is given, else hub. Which rows a task uses is decided on
indices, before any row leaves the Arrow table: a validation holdout (its first `holdout` rows
in a fixed order, HOLDOUT_SEED, whatever the trial's seed), then the trial's seeded shuffle,
then the first `n`: the same examples, for the same seed, as shuffling the rows themselves.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import offline_data
from ..scoring.metrics import METRICS, MetricConfig
from .example import Example
from .formats import FORMATS, Format, template_fields
from .shuffle import shuffled_at

SOURCES = ("hub", "offline", "local")
HOLDOUT_SEED = 0   # the fixed order a validation holdout is cut from, whatever the trial's seed
GSM8K_TEMPLATE = "Question: {question}\nAnswer: "


@dataclass(frozen=True)
class TaskDef:
    """What a task is, resolved: a format, how it reads the row (template, column map), how it is
    scored, and (built-in tasks) where its rows come from."""
    format: str
    template: str | None = None
    columns: dict[str, Any] | None = None
    metric: MetricConfig = MetricConfig("loss")
    choice_prefix: str = " "
    hub: tuple[str, str | None] | None = None    # (dataset, subset) of source hub
    offline: str | None = None                   # offline_data's name for source offline
    generated: bool = False                      # rows made in code (synthetic)

    @property
    def fmt(self) -> Format:
        return FORMATS[self.format]

    def reference(self, completion: str, answer: Any | None) -> str | None:
        return self.metric.reference(completion, answer)


_ARC = dict(template="Question: {question}\nAnswer:", columns={"choices": "choices", "label": "answerKey"},
            metric=MetricConfig("multiple_choice"))
_GSM8K = dict(template=GSM8K_TEMPLATE, columns={"completion": "answer"},
              metric=MetricConfig("exact_match", extract="final_number"))
TASKS: dict[str, TaskDef] = {
    "synthetic": TaskDef("prompt_completion", **_GSM8K, generated=True),
    "gsm8k": TaskDef("prompt_completion", **_GSM8K, hub=("openai/gsm8k", "main"), offline="gsm8k"),
    "platypus": TaskDef("prompt_completion", template="### Instruction:\n{instruction}\n\n### Response:\n",
                        columns={"completion": "output"}, hub=("garage-bAInd/Open-Platypus", None)),
    "arc_challenge": TaskDef("multiple_choice", **_ARC, hub=("allenai/ai2_arc", "ARC-Challenge"),
                             offline="arc_challenge"),
    "arc_easy": TaskDef("multiple_choice", **_ARC, hub=("allenai/ai2_arc", "ARC-Easy"), offline="arc_easy"),
}
TASKS["arc"] = TASKS["arc_challenge"]
FORMAT_METRICS = {"multiple_choice": "multiple_choice"}   # a user task's default metric by format; else loss


@dataclass(frozen=True)
class TaskConfig:
    name: str | None = None          # a built-in task (TASKS); with a `format` and no name: your own;
    #                                  neither: the built-in synthetic task
    path: str | None = None          # local file or folder (else the hub dataset / generator)
    split: str = "train"
    n: int | None = None             # use the first n examples (after a seeded shuffle)
    seed: int = 0
    # validation held out of this split: its first `holdout` examples in a fixed order (HOLDOUT_SEED).
    # held_out False: the split without them (training); True: only them (validation). The synthetic
    # task has a disjoint "val" split instead, which held_out reads
    holdout: int = 0
    held_out: bool = False
    source: str | None = None        # hub | offline | local; None: local with a path, else hub
    format: str | None = None        # prompt_completion | alpaca | messages | text | multiple_choice (formats.py)
    dataset: str | None = None       # source hub, a task of your own: the dataset's hub id
    subset: str | None = None        # ... and its configuration
    template: str | None = None      # the prompt, over the row's fields: "Question: {question}\nAnswer: "
    columns: dict[str, Any] | None = None   # the format's roles -> your columns: {completion: answer}
    metric: MetricConfig | None = None      # default: the task's (built-in), else multiple_choice or loss
    choice_prefix: str | None = None        # multiple choice: put before each choice (default " ")
    chat_template: str | None = None        # messages on a model without one: a Jinja chat template
    # read as a stream (a hub dataset larger than the disk): the first n after a seeded shuffle buffer
    streaming: bool = False
    shuffle_buffer: int = 10_000             # streaming: rows the buffer shuffles among

    def __post_init__(self):
        if self.name is None and self.format is None:
            object.__setattr__(self, "name", "synthetic")
        if self.n is not None and self.n <= 0:
            raise ValueError(f"task.n: must be positive, got {self.n}")
        if self.holdout < 0 or (self.held_out and not self.holdout):
            raise ValueError(f"task.holdout: must be positive to read the held-out part, got {self.holdout}")
        problem = task_problem(self)
        if problem:
            raise ValueError(f"task.{problem}")

    @property
    def resolved_source(self) -> str:
        return self.source or ("local" if self.path is not None else "hub")

    def resolved(self) -> TaskDef:
        """The task as it runs: its built-in entry (or its format) with this config's overrides."""
        base = TASKS[self.name] if self.name else TaskDef(self.format, metric=MetricConfig(
            FORMAT_METRICS.get(self.format, "loss")))
        over = {k: v for k, v in (("template", self.template), ("metric", self.metric),
                                  ("choice_prefix", self.choice_prefix)) if v is not None}
        if self.columns:
            over["columns"] = {**(base.columns or {}), **self.columns}
        return dataclasses.replace(base, **over)


def task_problem(t: TaskConfig) -> str | None:
    """'key: why' when the task's name, format, source and fields cannot go together, else None.
    Reads no file (data_problem reads them)."""
    if t.name is not None and t.name not in TASKS:
        return f"name: unknown task {t.name!r}; choose one of {tuple(TASKS)}, or give a format (a task of your own)"
    if t.format is not None and t.format not in FORMATS:
        return f"format: unknown format {t.format!r}; choose one of {tuple(FORMATS)}"
    if t.name is not None and t.format is not None and t.format != TASKS[t.name].format:
        return f"format: task {t.name} is {TASKS[t.name].format}, not {t.format} (drop name for a task of your own)"
    problem = source_problem(t) or streaming_problem(t)
    if problem:
        return problem
    task = t.resolved()
    if task.template is not None and not task.fmt.uses_template:
        return f"template: format {task.format} takes no template"
    unknown = sorted(set(t.columns or {}) - set(task.fmt.defaults))
    if unknown:
        return f"columns: {task.format} has no role {unknown}; its roles: {sorted(task.fmt.defaults)}"
    output = METRICS[task.metric.name].output
    if (output == "choice") != (task.format == "multiple_choice"):
        return (f"metric: {task.metric.name} scores {'multiple choice' if output == 'choice' else 'a completion'}; "
                f"format {task.format} " + ("needs metric multiple_choice" if task.format == "multiple_choice"
                                            else "has no choices"))
    if task.format == "text" and output != "loss":
        return f"metric: format text is scored by loss (perplexity), not {task.metric.name}"
    return None


def scorable(t: TaskConfig, metric: MetricConfig) -> bool:
    """Whether `metric` can score task `t`'s examples (multiple choice needs choices, text is loss only)."""
    try:
        dataclasses.replace(t, metric=metric)
    except ValueError:
        return False
    return True


def source_problem(t: TaskConfig) -> str | None:
    source, path = t.source, t.path
    if source is not None and source not in SOURCES:
        return f"source: unknown source {source!r}; choose one of {SOURCES}"
    entry = TASKS.get(t.name) if t.name else None
    if entry is not None and entry.generated:
        return "source: synthetic is generated in code: it takes no source or path" if source or path else None
    if source == "local" and path is None:
        return "path: source local needs a path"
    if source in ("hub", "offline") and path is not None:
        return f"path: a path is for source local, not {source}"
    if t.dataset is not None and (entry is not None or path is not None):
        return "dataset: a hub dataset of your own goes without a task name or a path"
    if entry is None and path is None and t.dataset is None:
        return "path: a task of your own reads a local path or a hub dataset"
    if source == "offline":
        if entry is None or entry.offline is None:
            return f"source: {t.name or 'a task of your own'} has no offline source; offline tasks: " \
                   f"{sorted(offline_data.SPLITS)}"
        try:
            offline_data.check_split(entry.offline, t.split)
        except ValueError as e:
            return f"split: {e}"
    return None


def streaming_problem(t: TaskConfig) -> str | None:
    if not t.streaming:
        return None
    if t.resolved_source == "offline" or (t.name and TASKS[t.name].generated):
        return "streaming: for a hub dataset or local files, not an offline or generated task"
    if not t.n and not t.held_out:
        return "n: a streamed task reads its first n rows (after the shuffle buffer): set n"
    if t.shuffle_buffer <= 0:
        return f"shuffle_buffer: must be positive, got {t.shuffle_buffer}"
    return None


def streamed_rows(t: TaskConfig) -> list[dict]:
    """A stream's rows: shuffled once in a HOLDOUT_SEED buffer, whose first `holdout` rows are the
    validation part; the rest shuffled in the trial's seed buffer; the first n. Reads about
    holdout + n + 2 x shuffle_buffer rows, never the whole dataset (a buffer shuffle: rows farther
    apart than the buffer keep their order, unlike the table's exact shuffle)."""
    from .sources import stream
    task = t.resolved()
    dataset, subset = (t.dataset, t.subset) if t.dataset else (task.hub or (None, None))
    rows = stream(t.path, dataset, subset, t.split).shuffle(seed=HOLDOUT_SEED, buffer_size=t.shuffle_buffer)
    if t.holdout:
        if t.held_out:
            return list(rows.take(t.holdout))
        rows = rows.skip(t.holdout)
    return list(rows.shuffle(seed=t.seed, buffer_size=t.shuffle_buffer).take(t.n))


def table_of(t: TaskConfig):
    """The task's rows as one Arrow table (sources.py)."""
    from .sources import hub_table, local_table, offline_table
    task = t.resolved()
    if t.resolved_source == "offline":
        return offline_table(task.offline, t.split)
    if t.path is not None:
        return local_table(t.path, t.split)
    dataset, subset = (t.dataset, t.subset) if t.dataset else task.hub
    return hub_table(dataset, subset, t.split)


def chosen_indices(t: TaskConfig, size: int) -> list[int]:
    """The rows a task uses, in order: the holdout cut, the seeded shuffle, the first n (see top),
    read off each shuffle at the positions used only (shuffle.py: the very indices that shuffling
    the list of them gives, without a million Python steps for a million rows)."""
    return _rows_at_kept(t, size, _kept_positions(t, size, t.seed))


def used_indices(t: TaskConfig, size: int, seeds: tuple[int, ...]) -> list[int]:
    """Every row that one of the seeds' trials uses, sorted (what validate checks): chosen_indices
    of each seed, with the holdout's shuffle read once for all of them."""
    kept = sorted(set().union(*(_kept_positions(t, size, s) for s in seeds)))
    return sorted(_rows_at_kept(t, size, kept))


def _kept_positions(t: TaskConfig, size: int, seed: int) -> list[int]:
    """Positions, in the part the holdout cut keeps, of the first n after the seeded shuffle."""
    if t.holdout and t.holdout >= size:
        raise ValueError(f"task {t.name or t.path or t.dataset} ({t.split}): a validation holdout of {t.holdout} "
                         f"leaves nothing of its {size} examples to train on "
                         f"(set tasks.val.n lower, or tasks.val.split)")
    kept = (t.holdout if t.held_out else size - t.holdout) if t.holdout else size
    return shuffled_at(kept, seed, list(range(min(t.n, kept) if t.n else kept)))


def _rows_at_kept(t: TaskConfig, size: int, positions: list[int]) -> list[int]:
    """Positions in the kept part of the holdout order -> rows of the table."""
    if not t.holdout:
        return positions
    offset = 0 if t.held_out else t.holdout
    return shuffled_at(size, HOLDOUT_SEED, [offset + p for p in positions])


def _generated(t: TaskConfig, task: TaskDef) -> list[dict]:
    from ..synthetic import make_examples
    split = "val" if t.held_out else t.split   # its val split is disjoint from train and test
    return make_examples(split, t.n or (t.holdout if t.held_out else 1000), seed=t.seed)


def build_examples(t: TaskConfig, rows: list[dict]) -> list[Example]:
    task = t.resolved()
    keep_row = METRICS[task.metric.name].needs_row
    out = [task.fmt.build(r, task) for r in rows]
    return [dataclasses.replace(e, row=r) for e, r in zip(out, rows)] if keep_row else out


def load_examples(t: TaskConfig) -> list[Example]:
    task = t.resolved()
    if task.generated:
        return build_examples(t, _generated(t, task))
    if t.streaming:
        rows = streamed_rows(t)
        missing = task.fmt.missing(task, rows[0]) if rows else []
        if missing:
            raise ValueError(f"task {t.path or t.dataset}: rows lack fields {missing} (have {sorted(rows[0])})")
        return build_examples(t, rows)
    from .sources import rows_at
    table = table_of(t)
    missing = task.fmt.missing(task, table.column_names)
    if missing:
        raise ValueError(f"task {t.name or t.path or t.dataset}: rows lack fields {missing} "
                         f"(have {sorted(table.column_names)})")
    return build_examples(t, rows_at(table, chosen_indices(t, len(table))))


__all__ = ["GSM8K_TEMPLATE", "HOLDOUT_SEED", "SOURCES", "TASKS", "TaskConfig", "TaskDef", "chosen_indices", "used_indices",
           "load_examples", "scorable", "source_problem", "streamed_rows", "table_of", "task_problem", "template_fields"]
