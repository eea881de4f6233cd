"""The adapter training loop: straight-line, single process or torch.distributed DDP.

    tokens per optimizer step = batch_size x grad_accum x world_size x (padded width)

Resume is exact: the data order of micro-batch m is a pure function of (seed, m), and a
checkpoint holds adapter weights, AdamW moments, scheduler step and every RNG state, so a
resumed run follows the same trajectory as an uninterrupted one (tests/core/test_train.py).
Checkpoints are safetensors + JSON only; nothing is unpickled.
"""
from __future__ import annotations

import gc
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .checkpoint import adapter_params as _adapter_params
from .checkpoint import load_checkpoint, save_checkpoint
from .config import AdapterConfig
from .cost import flop_model
from .data.tokenize import TokenizedData, collate
from .inject import sample_train_rank, set_example_p
from .methods import METHODS, OBJECTIVES
from .objectives import Pass, passes


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300                 # optimizer steps (epochs, if set, override this)
    epochs: float | None = None
    batch_size: int = 16             # per worker, per micro-batch
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    schedule: str = "cosine"         # cosine | linear | constant (after warmup)
    max_grad_norm: float = 1.0
    max_length: int = 128
    seed: int = 0
    threads: int | None = None       # torch.set_num_threads; None = leave as the launcher set it
    checkpoint_every: int = 0        # steps; 0 = only at the end
    log_every: int = 10
    # torch.compile the training forward/backward. A GPU step of small-batch adapter training is
    # launch-bound (a 1B model on an H200: kernels busy ~50% of the step): compiled, it took 0.52x
    # the time, for a one-off compile (~75 s there). DyLoRA stays eager (see train()).
    compile: bool = False

    def __post_init__(self):
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"train.schedule: unknown schedule {self.schedule!r}")
        for name in ("steps", "batch_size", "grad_accum", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name}: must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"train.lr: must be positive, got {self.lr}")


class Diverged(RuntimeError):
    """The loss became NaN/inf: the run stops instead of training on garbage."""


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1 - progress if schedule == "linear" else 1.0


def total_steps(config: TrainConfig, n_examples: int, world_size: int = 1) -> int:
    """Optimizer steps of a run: `steps`, or `epochs` over n examples (each epoch drops its ragged
    tail: n // (batch x workers) micro-batches), rounded up to a whole step."""
    if not config.epochs:
        return config.steps
    per_epoch = max(1, n_examples // (config.batch_size * world_size))
    return math.ceil(config.epochs * per_epoch / config.grad_accum)


def world() -> tuple[int, int]:
    """(this DDP worker's index, the number of workers): (0, 1) without torch.distributed."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def micro_batch_indices(m: int, n: int, batch: int, seed: int, worker: int, world_size: int) -> list[int]:
    """Examples of micro-batch m on this worker: epoch-wise seeded permutation, sharded."""
    per_epoch = max(1, n // (batch * world_size))       # drop the ragged tail
    epoch, pos = divmod(m, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    start = (pos * world_size + worker) * batch
    return perm[start:start + batch]


@dataclass
class TrainResult:
    steps: int
    losses: list[float]               # mean loss per optimizer step (all workers)
    train_tokens: int                 # non-pad tokens seen, all workers
    train_flops: float                # formula (cost.py), all workers
    seconds: float                    # training time of every segment (a resumed run adds its checkpoint's)
    truncated_examples: int
    resumed_from: int = 0


def _progress(total: int, start: int, enabled: bool):
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm
        return tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, leave=False)
    return None


def backward_passes(forward, batch: dict, todo: list[Pass], p_rows: torch.Tensor | None, grad_accum: int,
                    amp: bool) -> torch.Tensor:
    """Forward + backward each pass of one micro-batch (objectives.py); gradients accumulate in
    the adapter parameters. Returns the micro-batch's loss, detached, as it enters the step."""
    total = torch.zeros((), device=batch["input_ids"].device)
    for p in todo:
        if p.p_rows is not None:  # in place: the one tensor every layer reads
            p_rows.copy_(p.p_rows)
        with torch.autocast(batch["input_ids"].device.type, dtype=torch.bfloat16, enabled=amp):
            loss = forward(**batch).loss / grad_accum
        if p.weight != 1.0:
            loss = loss * p.weight
        loss.backward()
        total += loss.detach()
    return total


def _forward_fn(model, adapter, config: TrainConfig, device: torch.device, world_size: int, log):
    """What a step calls: the model, wrapped in DDP across workers (adapter gradients averaged)
    and torch.compile'd when asked (same parameters, so the same checkpoints)."""
    forward = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if not config.compile:
        return forward
    if METHODS[adapter.method].step_p is not None:
        log("train: compile is off for DyLoRA: its per-step train rank would recompile the graph for each rank "
            "(measured: one graph per rank, up to torch's recompile limit), which costs more than it saves")
        return forward
    return torch.compile(forward)


@dataclass(frozen=True)
class Hooks:
    """What leaves a run while it trains; every one optional.

    `progress(metrics)` runs every step on every worker; `checkpoint(path, metrics)` on every worker
    after each checkpoint (path None on workers other than worker 0). With `validate` (a validation
    loss, computed in eval mode) the metrics of every `validate_every`-th step but the last carry
    `val_loss`: what an early-stopping scheduler compares."""
    progress: Callable[[dict], None] | None = None
    checkpoint: Callable[[Path | None, dict], None] | None = None
    validate: Callable[[], float] | None = None
    validate_every: int = 0
    log: Callable[[str], None] = print


@dataclass
class _Loop:
    """A run's moving parts, set up once (in this order: the RNG draws must not move)."""
    model: torch.nn.Module
    adapter: AdapterConfig
    config: TrainConfig
    data: TokenizedData
    pad_id: int
    device: torch.device
    worker: int                      # this DDP worker's index (0 without DDP)
    world_size: int
    total: int
    params: list
    optimizer: torch.optim.Optimizer
    forward: Callable
    rank_rng: random.Random
    p_rows: torch.Tensor | None
    amp: bool

    def step(self, step: int, flop_model) -> tuple[float, int, list[float], int | None]:
        """One optimizer step: (loss averaged over workers, tokens on this worker, FLOPs of all workers
        per micro-batch, DyLoRA's train rank or None)."""
        c, n = self.config, len(self.data.input_ids)
        t = sample_train_rank(self.model, self.adapter, self.rank_rng)
        loss, tokens, flops = torch.zeros((), device=self.device), 0, []
        for micro in range(c.grad_accum):
            m = step * c.grad_accum + micro
            idx = micro_batch_indices(m, n, c.batch_size, c.seed, self.worker, self.world_size)
            batch = collate([self.data.input_ids[i] for i in idx], [self.data.labels[i] for i in idx], self.pad_id)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            todo = passes(self.adapter, len(idx), seed=c.seed, worker=self.worker, micro_batch=m, train_rank=t,
                          dtype=self.params[0].dtype)
            loss += backward_passes(self.forward, batch, todo, self.p_rows, c.grad_accum, self.amp)
            flops.append(sum(flop_model.train_step(*batch["input_ids"].shape, rank=p.flop_rank) for p in todo)
                         * self.world_size)
            tokens += int(batch["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(self.params, c.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.world_size > 1:
            dist.all_reduce(loss)
            loss /= self.world_size
        return float(loss), tokens, flops, t


def _setup(model, adapter: AdapterConfig, data: TokenizedData, config: TrainConfig, pad_id: int, device, log) -> _Loop:
    if config.threads:
        torch.set_num_threads(config.threads)
    worker, world_size = world()
    device = torch.device(device)
    n = len(data.input_ids)
    if n < config.batch_size * world_size:
        raise ValueError(f"train: {n} examples is fewer than one batch "
                         f"({config.batch_size} x {world_size} workers)")
    params = list(_adapter_params(model).values())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    forward = _forward_fn(model, adapter, config, device, world_size, log if worker == 0 else lambda _: None)
    rank_rng = random.Random(config.seed)  # same on every worker: DyLoRA's t agrees everywhere
    torch.manual_seed(config.seed + worker)
    # per_rank / stratified: the per-example P rows every adapter layer reads (objectives.py)
    p_rows = None
    if OBJECTIVES[adapter.objective].example_rows:
        p_rows = torch.zeros(config.batch_size, adapter.rank, device=device, dtype=params[0].dtype)
        set_example_p(model, p_rows)
    return _Loop(model, adapter, config, data, pad_id, device, worker, world_size, total_steps(config, n, world_size),
                 params, optimizer, forward, rank_rng, p_rows, amp=device.type == "cuda" and torch.cuda.is_bf16_supported())


def train(model, adapter: AdapterConfig, data: TokenizedData, config: TrainConfig, pad_id: int, *,
          device: str | torch.device = "cpu", checkpoint_dir: str | Path | None = None,
          resume_from: str | Path | None = None, hooks: Hooks = Hooks()) -> TrainResult:
    """Train the adapter parameters of `model` (adapted with `adapter`) on `data` (already tokenized
    and masked); progress, checkpoints and validation leave through `hooks`."""
    log = hooks.log
    loop = _setup(model, adapter, data, config, pad_id, device, log)
    fm, total, worker = flop_model(model), loop.total, loop.worker
    start, losses, tokens, flops, before = 0, [], 0, 0.0, 0.0
    if resume_from is not None:
        state = load_checkpoint(Path(resume_from), model, loop.optimizer, loop.rank_rng)
        start, losses, tokens, flops = state["step"], state["losses"], state["tokens"], state["flops"]
        before = state.get("seconds", 0.0)   # the segments trained before this one: a run's cost counts them all
        log(f"resumed from {resume_from} at step {start}/{total}")
    bar = _progress(total, start, enabled=worker == 0)
    t0 = time.perf_counter()
    model.train()
    for step in range(start, total):
        lr = config.lr * lr_factor(step, total, config.warmup_steps, config.schedule)
        for group in loop.optimizer.param_groups:
            group["lr"] = lr
        loss, step_tokens, step_flops, t = loop.step(step, fm)
        for f in step_flops:   # one at a time, as they were counted (the sum is bitwise that of earlier runs)
            flops += f
        tokens += step_tokens * loop.world_size
        if not math.isfinite(loss):
            raise Diverged(f"loss became {loss} at step {step + 1} (lr {config.lr:g}): diverged")
        losses.append(loss)
        elapsed = time.perf_counter() - t0
        metrics = {"step": step + 1, "train_loss": loss, "lr": lr, "train_rank": t or adapter.rank,
                   "tokens": tokens, "tokens_per_s": tokens / max(elapsed, 1e-9)}
        # not at the last step: a scheduler stopping a trial there would only lose its evaluation
        if hooks.validate is not None and hooks.validate_every and (step + 1) % hooks.validate_every == 0 \
                and step + 1 < total:
            model.eval()
            metrics["val_loss"] = hooks.validate()
            model.train()
        if hooks.progress is not None:
            hooks.progress(metrics)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        elif worker == 0 and config.log_every and ((step + 1) % config.log_every == 0 or step + 1 == total):
            log(f"step {step + 1}/{total}  loss {loss:.4f}  lr {lr:.2e}  {metrics['tokens_per_s']:.0f} tok/s")
        due = step + 1 == total or (config.checkpoint_every and (step + 1) % config.checkpoint_every == 0)
        if checkpoint_dir is not None and due:
            path = Path(checkpoint_dir) / f"step_{step + 1:06d}" if worker == 0 else None
            if path is not None:
                save_checkpoint(path, model, loop.optimizer, step + 1, loop.rank_rng,
                                {"losses": losses, "tokens": tokens, "flops": flops,
                                 "seconds": before + time.perf_counter() - t0})
            if hooks.checkpoint is not None:
                hooks.checkpoint(path, metrics)
    if bar is not None:
        bar.close()
    seconds = before + time.perf_counter() - t0
    _release(model, loop)
    return TrainResult(total, losses, tokens, flops, seconds, data.truncated, start)


def _release(model, loop: _Loop) -> None:
    """After the last step: the layers without per-example P rows, the model in eval mode, and DDP's
    reducer freed. It sits in reference cycles: free it now, while its process group lives, not at
    some later collection (or interpreter exit, where gloo's teardown can abort the process)."""
    if loop.p_rows is not None:
        set_example_p(model, None)
    model.eval()
    if loop.world_size > 1:
        loop.forward = None
        gc.collect()
