"""One training run, end to end: load -> adapt -> train -> evaluate every rank -> cost -> save.

This is the recipe each orchestrator trial runs on every Ray Train worker, and what
`mlora train` runs directly. It knows nothing of Ray or MLflow: progress leaves through
callbacks, results through the returned RunResult and files in `output_dir`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import latest_checkpoint
from .config import AdapterConfig
from .cost import Cost, flop_model, peak_memory_mb
from .data.tasks import TaskConfig, load_examples
from .data.token_cache import training_tokens
from .data.tokenize import TokenizedData
from .export import save_adapter
from .inject import adapter_summary, add_adapters
from .io import write_json
from .methods import default_rules
from .models import load_base_model
from .records import from_plain, to_plain
from .scoring.harness import HarnessConfig
from .scoring.loss import eval_loss
from .scoring.ranks import RankCurve, evaluate_ranks
from .train import Hooks, TrainConfig, train, world


@dataclass(frozen=True)
class RunConfig:
    model: str = "builtin:tiny"
    train_task: TaskConfig = TaskConfig("synthetic", split="train", n=4000)
    eval_task: TaskConfig = TaskConfig("synthetic", split="test", n=300)
    eval_harness: HarnessConfig | None = None   # lm-eval tasks as the test set instead of eval_task (scoring/harness.py)
    val_task: TaskConfig | None = None    # validation: what hyperparameters are chosen on (never the test set)
    val_loss_every: int = 0               # steps between validation losses while training (early stopping); 0 = none
    adapter: AdapterConfig = AdapterConfig()
    train: TrainConfig = TrainConfig()
    eval_batch_size: int = 100
    max_new_tokens: int = 12
    eval_rules: tuple[str, ...] = default_rules()  # rank-k rules to score (methods.RULES); the first is primary
    device_name: str = "cpu"              # for cost: what one device is (e.g. "H100-80GB")
    price_per_device_hour: float = 0.0    # USD
    devices_per_worker: float = 1.0       # priced devices each worker holds: its GPUs, or its CPU cores
    cache_dir: str | None = None          # the sweep's cache (tokenized training sets, data/token_cache.py)

    def to_dict(self) -> dict:
        return to_plain(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return from_plain(cls, d, "run config")


@dataclass(frozen=True)
class RunResult:
    curves: dict[str, RankCurve]      # rule -> rank curve on the test (eval) set, in RunConfig.eval_rules order
    cost: Cost
    losses: tuple[float, ...]
    adapter_path: str | None
    trainable_params: int
    truncated_examples: int
    resumed_from_step: int = 0
    extra: dict = field(default_factory=dict)
    val_curves: dict[str, RankCurve] = field(default_factory=dict)   # the same on the validation set

    @property
    def curve(self) -> RankCurve:
        """The primary curve: the first eval rule's."""
        return next(iter(self.curves.values()))

    def as_dict(self) -> dict:
        return {"curve": self.curve.as_dict(), "curves": {rule: c.as_dict() for rule, c in self.curves.items()},
                "val_curves": {rule: c.as_dict() for rule, c in self.val_curves.items()},
                "cost": self.cost.as_metrics(), "device_name": self.cost.device_name,
                "losses": list(self.losses), "adapter_path": self.adapter_path,
                "trainable_params": self.trainable_params, "truncated_examples": self.truncated_examples,
                "resumed_from_step": self.resumed_from_step, **self.extra}


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        worker, _ = world()
        return torch.device("cuda", worker % torch.cuda.device_count())
    return torch.device("cpu")


def _evaluate(model, tokenizer, config: RunConfig, val_examples, eval_examples, device, log):
    """(validation curves, test curves, [(rank, tokens) per evaluation], seconds, extra result fields):
    every eval rank under every rule, on validation (when the run has it) and on test: eval_task's
    examples, or the lm-eval tasks of eval_harness (its primary curve; every curve in harness_curves)."""
    harness = config.eval_harness
    # a harness test set: validation is scored by the val task's own metric (orchestrator/plan.py tasks_of)
    metric = (config.val_task if harness and config.val_task else config.eval_task).resolved().metric
    score = lambda examples, name: evaluate_ranks(  # noqa: E731
        model, tokenizer, examples, config.adapter.eval_ranks, metric, rules=config.eval_rules,
        batch_size=config.eval_batch_size, max_new_tokens=config.max_new_tokens, max_length=config.train.max_length,
        device=device, log=log, name=name)
    val_curves, evaluations, val_seconds = score(val_examples, "val") if val_examples else ({}, [], 0.0)
    if harness is None:
        curves, test_evaluations, test_seconds = score(eval_examples, "test")
        return val_curves, curves, evaluations + test_evaluations, val_seconds + test_seconds, {}
    from .scoring.harness import evaluate_harness
    named, test_evaluations, test_seconds = evaluate_harness(model, tokenizer, harness, config.adapter.eval_ranks,
                                                             rules=config.eval_rules, log=log)
    extra = {"harness_curves": {name: {rule: c.as_dict() for rule, c in by_rule.items()} for name, by_rule in named.items()}}
    return val_curves, next(iter(named.values())), evaluations + test_evaluations, val_seconds + test_seconds, extra


def _training_data(config: RunConfig, tokenizer, log) -> TokenizedData:
    """The tokenized training set (built or reused, token_cache.py), less the examples that
    truncation left without a trained token; the cut ones are counted in the log."""
    data, n_train = training_tokens(config.train_task, tokenizer, config.model, config.train.max_length,
                                    config.cache_dir, log=log)
    data, unanswered = data.answered()
    if not data.input_ids:
        raise ValueError(f"training data: no answer token left after truncation at max_length="
                         f"{config.train.max_length}; raise training.max_length")
    if data.truncated:
        log(f"warning: {data.truncated}/{n_train} training examples cut at "
            f"max_length={config.train.max_length}" + (f"; {unanswered} of them lost every answer token and are "
                                                         "left out of training" if unanswered else ""))
    return data


def _cost(config: RunConfig, model, result, evaluations: list[tuple[int, int]], eval_seconds: float) -> Cost:
    """The run's tokens, FLOPs (formula, cost.py), seconds and price, every DDP worker counted."""
    _, world_size = world()
    return Cost(train_tokens=result.train_tokens, eval_tokens=sum(n for _, n in evaluations) * world_size,
                train_flops=result.train_flops, eval_flops=flop_model(model).eval_flops(evaluations) * world_size,
                train_seconds=result.seconds, eval_seconds=eval_seconds, devices=world_size * config.devices_per_worker,
                device_name=config.device_name, price_per_device_hour=config.price_per_device_hour)


def run(config: RunConfig, output_dir: str | Path, *, callback: Callable[[dict], None] | None = None,
        on_checkpoint: Callable[[Path | None, dict], None] | None = None,
        resume_from: str | Path | None = None, log: Callable[[str], None] = print) -> RunResult:
    """Train + evaluate one adapter. Resumes from `resume_from`, else from the newest
    checkpoint under output_dir/checkpoints if one exists."""
    output_dir = Path(output_dir)
    worker, world_size = world()
    quiet = (lambda *_: None) if worker else log
    device = pick_device()
    t_load = time.perf_counter()
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model, tokenizer = load_base_model(config.model, dtype=dtype, device=device, log=quiet)
    template = config.train_task.chat_template or config.eval_task.chat_template
    if template:   # a task's own chat template (messages on a model without one): the whole run uses it
        tokenizer.chat_template = template
    data = _training_data(config, tokenizer, quiet)
    eval_examples = load_examples(config.eval_task) if config.eval_harness is None else []
    val_examples = load_examples(config.val_task) if config.val_task else []
    # A's initial values come from torch's global RNG: seed it here, or they depend on whatever
    # loading consumed before (measured: two runs of one config drifted apart from step 1 and
    # LoRA-16's exact match spread 0.47-0.80); the same seed on every DDP worker, too
    torch.manual_seed(config.train.seed)
    add_adapters(model, config.adapter)
    summary = adapter_summary(model)
    quiet(f"{config.adapter.method} r={config.adapter.rank} on {config.model}: {summary}")
    setup_seconds = time.perf_counter() - t_load

    ckpt_dir = output_dir / "checkpoints"
    resume_from = resume_from or latest_checkpoint(ckpt_dir)
    validate = None
    if val_examples and config.val_loss_every:
        validate = lambda: eval_loss(model, tokenizer, val_examples[worker::world_size], config.train.max_length,  # noqa: E731
                                     config.eval_batch_size, device)[0]
    hooks = Hooks(progress=callback, checkpoint=on_checkpoint, validate=validate,
                  validate_every=config.val_loss_every, log=quiet)
    result = train(model, config.adapter, data, config.train, tokenizer.pad_token_id, device=device,
                   checkpoint_dir=ckpt_dir, resume_from=resume_from, hooks=hooks)
    val_curves, curves, evaluations, eval_seconds, eval_extra = _evaluate(model, tokenizer, config, val_examples,
                                                                          eval_examples, device, quiet)
    cost = _cost(config, model, result, evaluations, eval_seconds)
    adapter_path = None
    if worker == 0:
        adapter_path = str(save_adapter(model, output_dir / "adapter", base_model_name_or_path=config.model))
    out = RunResult(curves, cost, tuple(result.losses), adapter_path, summary.trainable_params, data.truncated,
                    result.resumed_from, {"setup_seconds": setup_seconds, "peak_memory_mb": peak_memory_mb(device),
                     "world_size": world_size, **eval_extra}, val_curves)
    if worker == 0:
        write_json(output_dir / "result.json", out.as_dict())
        lines = [f"val  {rule:<8} {c}" for rule, c in val_curves.items()] + \
            [f"test {rule:<8} {c}" for rule, c in curves.items()]
        quiet("rank curves\n  " + "\n  ".join(lines) + f"\ncost        {cost}")
    return out
