"""lm-evaluation-harness tasks scored at every (rank, rule): the benchmarks the field reports.

One HFLM wraps the trained model in memory (no export round-trip); set_rank switches the served
(rank, rule) in place between simple_evaluate calls, one call per distinct function (as
evaluate_ranks dedups them). The harness is called as its users call it, with what training did:

    apply_chat_template   = the tokenizer has a chat template (tokenize.uses_chat_template), rendered
                            with tokenize.CHAT_DATE, as prompt_ids renders it
    add_bos_token         = True without a chat template (prompt_ids puts BOS first), False with one
                            (the template writes its own)
    bootstrap_iters       = 0 (no stderr: seconds per call saved, a Ray worker has no use for it)
    task_manager          = one per process and include_path (its index of every built-in task costs
                            ~18 s on 2 busy cores, ~2 s of CPU on a free one; a folder of your own alone
                            costs milliseconds: it is used alone when it holds every task asked for)

A curve is named as lm-eval names the number: "task/metric" ("arc_easy/acc"), with its filter when
that is not "none" ("gsm8k/exact_match,strict-match"). The primary curve, the one a run's `curves`
and the report read, is the first task's first metric (in its metric_list's order, first filter);
the others come back too (run.py puts them in the result's `harness_curves`). The harness reports
no eval loss: a harness curve's eval_loss is NaN. lm_eval is imported only inside functions
(`pip install "mlora[harness]"`); harness_problems says so in one line when it is missing.
"""
from __future__ import annotations

import difflib
import functools
import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.tokenize import CHAT_DATE, uses_chat_template
from ..functions import distinct_functions
from ..inject import set_rank
from .ranks import RankCurve

INSTALL_HINT = 'pip install "mlora[harness]" (lm_eval==0.4.13; `make real` installs it)'
_SKIP = ("alias", "samples", "name", "sample_len")   # keys of a task's result that are not its metrics


@dataclass(frozen=True)
class HarnessConfig:
    """Which lm-eval tasks a run is tested on (the YAML's `tasks.eval: {harness: [...]}`)."""
    tasks: tuple[str, ...]              # lm-eval task, group or tag names; the first task's first metric is primary
    num_fewshot: int | None = None      # None: each task's own default
    limit: int | None = None            # the first `limit` documents of each task (None: all)
    include_path: str | None = None     # a folder of your own task YAMLs (searched before the built-in ones)
    batch_size: int = 32                # HFLM's batch size

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise ValueError("harness: name at least one lm-eval task")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ValueError(f"harness.num_fewshot: must be >= 0, got {self.num_fewshot}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"harness.limit: must be positive, got {self.limit}")
        if self.batch_size <= 0:
            raise ValueError(f"harness.batch_size: must be positive, got {self.batch_size}")


def installed() -> bool:
    try:
        import lm_eval  # noqa: F401  (~3 s the first time: harness_problems needs it next anyway)
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=8)
def _manager(include_path: str | None, defaults: bool):
    from lm_eval.tasks import TaskManager
    return TaskManager(include_path=include_path, include_defaults=defaults)


def task_manager(config: HarnessConfig):
    """The process's TaskManager for `config`: the include_path's alone when it names every task
    (milliseconds), else the built-in index too (seconds, built once per process)."""
    if config.include_path is not None:
        own = _manager(config.include_path, False)
        if all(t in own.all_tasks for t in config.tasks):
            return own
    return _manager(config.include_path, True)


def harness_problems(config: HarnessConfig) -> list[str]:
    """One line per problem lm-eval would meet only in a trial: lm-eval missing, an include_path that is
    not a folder, an unknown task name, a metric lm-eval would fetch from the Hub, a num_fewshot the
    task cannot give. Reads task YAMLs and local data files, never a dataset from the Hub. Builds
    the process's TaskManager (see top: seconds when a built-in task is named)."""
    if not installed():
        return [f"harness: lm-eval is not installed: {INSTALL_HINT}"]
    if config.include_path is not None and not Path(config.include_path).is_dir():
        return [f"harness.include_path: {config.include_path} is not a folder"]
    tm = task_manager(config)
    problems = []
    for name in config.tasks:
        if name not in tm.task_index:
            near = difflib.get_close_matches(name, tm.all_tasks, n=3)
            problems.append(f"harness: unknown lm-eval task {name!r}" + (f"; did you mean {', '.join(near)}?" if near
                            else " (lm_eval ls tasks lists them; your own: include_path)"))
            continue
        for leaf in _leaves(tm, name):
            problems += [f"harness: task {leaf}: {p}" for p in _task_problems(_config_of(tm, leaf), config.num_fewshot)]
    return problems


def _config_of(tm, name: str) -> dict:
    return tm._factory._load_full_config(tm.task_index[name], None)   # the YAML, includes resolved; no data read


def _leaves(tm, name: str, depth: int = 0) -> list[str]:
    """The tasks a name stands for: itself, a tag's tasks, or a group's (recursively)."""
    from lm_eval.tasks._index import Kind
    entry = tm.task_index.get(name)
    if entry is None or depth > 8:
        return []
    if entry.kind == Kind.TAG:
        return [n for n, e in tm.task_index.items() if name in e.tags and e.kind in (Kind.TASK, Kind.PY_TASK)]
    if entry.kind == Kind.GROUP:
        children = _config_of(tm, name).get("task", [])
        return [leaf for c in children if isinstance(c, str) for leaf in _leaves(tm, c, depth + 1)]
    return [name]


def _task_problems(cfg: dict, num_fewshot: int | None) -> list[str]:
    from lm_eval.api.registry import metric_registry
    if not metric_registry:
        import lm_eval.api.metrics  # noqa: F401  registers lm-eval's own metrics
    out = []
    for m in cfg.get("metric_list") or []:
        metric = m.get("metric")
        if isinstance(metric, str) and (m.get("hf_evaluate") or metric not in metric_registry):
            out.append(f"metric {metric!r} is not one of lm-eval's own, so lm-eval would fetch it from the Hub "
                       f"(evaluate.load); use one of {sorted(metric_registry)}, or a !function")
    shots = cfg.get("num_fewshot") if num_fewshot is None else num_fewshot
    if num_fewshot and cfg.get("num_fewshot") == 0:
        out.append(f"num_fewshot {num_fewshot}: the task fixes num_fewshot 0 in its config (lm-eval would ignore it)")
    elif shots:
        out += _fewshot_problems(cfg, shots)
    return out


def _fewshot_problems(cfg: dict, shots: int) -> list[str]:
    """Shots need a split of their own (fewshot_split, else training, else validation) holding enough
    rows; without one lm-eval draws them from the very questions it scores."""
    fewshot = cfg.get("fewshot_config") or {}
    if isinstance(fewshot.get("samples"), list):
        have = len(fewshot["samples"])
        return [] if have >= shots else [f"num_fewshot {shots}: its fewshot_config lists {have} samples"]
    split = cfg.get("fewshot_split") or cfg.get("training_split") or cfg.get("validation_split")
    if split is None:
        return [f"num_fewshot {shots}: it has no fewshot, training or validation split, so lm-eval would draw "
                f"its shots from the test questions it scores (set num_fewshot: 0, or give it a fewshot_split)"]
    rows = _local_rows(cfg, split)
    if rows is not None and rows < shots:
        return [f"num_fewshot {shots}: its {split} split holds {rows} rows"]
    return []


def _local_rows(cfg: dict, split: str) -> int | None:
    """Rows of a local JSON-lines split (dataset_path json + data_files), else None (not counted)."""
    files = ((cfg.get("dataset_kwargs") or {}).get("data_files") or {})
    paths = files.get(split) if isinstance(files, dict) else None
    if cfg.get("dataset_path") != "json" or paths is None:
        return None
    paths = [paths] if isinstance(paths, str) else list(paths)
    if not all(str(p).endswith(".jsonl") and Path(p).is_file() for p in paths):
        return None
    return sum(1 for p in paths for line in Path(p).open() if line.strip())


def curve_name(task: str, key: str) -> str:
    """lm-eval's "metric,filter" result key -> "task/metric" (filter none) or "task/metric,filter"."""
    metric, _, filt = key.partition(",")
    return f"{task}/{metric}" if filt in ("", "none") else f"{task}/{key}"


def scores_of(results: dict, order: tuple[str, ...]) -> dict[str, tuple[float, int]]:
    """{curve name: (score, documents)} from simple_evaluate's output, the asked-for names first."""
    per_task = results["results"]
    names = [t for t in order if t in per_task] + [t for t in per_task if t not in order]
    counts = results.get("n-samples", {})
    out = {}
    for task in names:
        n = int(counts.get(task, {}).get("effective", 0))
        for key, value in per_task[task].items():
            if key in _SKIP or "_stderr" in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            out[curve_name(task, key)] = (float(value), n)
    return out


def harness_lm(model, tokenizer, config: HarnessConfig):
    """The one HFLM over the model in memory, tokenized and templated as training did (see top)."""
    from lm_eval.models.huggingface import HFLM
    chat = uses_chat_template(tokenizer)
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=config.batch_size, add_bos_token=not chat,
                chat_template_args={"date_string": CHAT_DATE} if chat else None)


@contextmanager
def _no_env_report():
    """simple_evaluate ends each call by describing the machine for its results file: `pip list`, `git`
    and torch's collect_env in subprocesses (1.4 s of a 2.5 s call on builtin:tiny; "fatal: not a git
    repository" outside a checkout). We keep only scores, and call it once per (rank, rule): skip that."""
    from lm_eval import evaluator
    saved = evaluator.add_env_info, evaluator.get_git_commit_hash
    evaluator.add_env_info, evaluator.get_git_commit_hash = (lambda storage: None), (lambda: None)
    try:
        yield
    finally:
        evaluator.add_env_info, evaluator.get_git_commit_hash = saved


def run_harness(lm, tokenizer, config: HarnessConfig, log_samples: bool = False) -> dict:
    """One simple_evaluate call, offline-safe, leaving this process's random, numpy and torch RNG
    as they were (lm-eval seeds all three: the trial's own draws must not depend on scoring)."""
    import lm_eval
    import numpy as np
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]), _no_env_report():
            return lm_eval.simple_evaluate(
                model=lm, tasks=list(config.tasks), num_fewshot=config.num_fewshot, limit=config.limit,
                bootstrap_iters=0, log_samples=log_samples, apply_chat_template=uses_chat_template(tokenizer),
                fewshot_as_multiturn=uses_chat_template(tokenizer), task_manager=task_manager(config),
                verbosity=None)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class _TokenCounter:
    """Tokens the model is fed (padding and every generation step included): the harness's eval cost."""

    def __init__(self, model):
        self.tokens = 0
        self.handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, _module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if torch.is_tensor(ids):
            self.tokens += ids.numel()

    def close(self):
        self.handle.remove()


def evaluate_harness(model, tokenizer, config: HarnessConfig, ranks, *, rules=("truncate",), log=print,
                     name: str = "test") -> tuple[dict[str, dict[str, RankCurve]], list[tuple[int, int]], float]:
    """({curve name: {rule: RankCurve}}, [(rank, tokens) per distinct function], seconds), the primary
    curve first. Every distinct (rank, rule) is one simple_evaluate call. Leaves the model at rank None."""
    t0 = time.perf_counter()
    functions, keys = distinct_functions(model, ranks, rules)
    model.eval()
    lm = harness_lm(model, tokenizer, config)
    scores, evaluations = {}, []
    counter = _TokenCounter(model)
    try:
        for key, (k, rule) in functions.items():
            set_rank(model, k, rule)
            before = counter.tokens
            scores[key] = scores_of(run_harness(lm, tokenizer, config), config.tasks)
            evaluations.append((k, counter.tokens - before))
            log(f"{name} rank {k:>4} {rule:<8}: " + "  ".join(f"{m} {v:.3f}" for m, (v, _) in scores[key].items()))
    finally:
        counter.close()
        set_rank(model, None)
    first = next(iter(scores.values()))
    curves = {metric: {rule: RankCurve(tuple(ranks), tuple(scores[key][metric][0] for key in ks),
                                       tuple(math.nan for _ in ks), metric, n)
                       for rule, ks in keys.items()}
              for metric, (_, n) in first.items()}
    if not curves:
        raise ValueError(f"harness: {', '.join(config.tasks)} reported no metric")
    return curves, evaluations, time.perf_counter() - t0


__all__ = ["HarnessConfig", "INSTALL_HINT", "curve_name", "evaluate_harness", "harness_lm", "harness_problems",
           "installed", "run_harness", "scores_of", "task_manager"]
