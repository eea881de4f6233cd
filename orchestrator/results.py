"""A sweep's trials, aggregated into one frozen SweepResult that the end-of-sweep summary, the
report and the registry all take as input: nothing downstream re-derives a choice. Pure: typed
trials in (record.py reads them from MLflow, the source of truth), numbers out; no I/O.

    trial      one MLflow run: an arm at one lr and seed (its TrialSpec and its curves)
    arm        what the report compares (plan.TrialSpec.arm): lora-r4, dylora-r16,
               matryoshka-per_rank-diag-r16, lora-r4-x2, ...; one run of it costs `run_cost`
    curve      an arm served under one rank-k rule: accuracy vs rank, mean +- std over seeds at
               the lr chosen for that curve
    candidate  a curve at one rank: an adapter a user could deploy there, at its arm's cost

The choices, each made here once (the two tests they use: decisions.py):
  - lr, per curve: the best mean over seeds of its selection score (decisions.selection_score:
    AURAC for one-run arms, accuracy at its own rank for LoRA-k), on validation when trials have
    validation curves, else on test
  - the LoRA grid: one LoRA-k per rank, each at the least budget the sweep ran it at (more budgets
    are arms of their own); envelope: at rank k, the grid's LoRA-k at its own rank
  - verdict at rank k: the cheapest candidate (FLOPs of one run) within `tolerance` of the best
    accuracy at k
  - recommended: the smallest rank holding a candidate within `tolerance` of the best accuracy
    anywhere, and the cheapest such candidate there (what the registry registers)
  - best Matryoshka: the Matryoshka curve with the highest AURAC; it "paid off" when it costs less
    than the grid (FLOPs) and is within `tolerance` of the envelope (or above) at every rank
    ("partly": at some ranks); comparison.py
  - the cost plot (cost_plot.py) and the compute-matched frontier (frontier.py) from the same arms
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from mlora_core.aurac import aurac

from .comparison import Comparison, GridCost, SearchTrace, against_grid, grid_cost, search_trace
from .cost_plot import CostPlot, cost_plot
from .decisions import selection_score, within
from .frontier import ComputeFrontier, compute_frontier
from .messages import SweepRef
from .plan import TrialSpec, lora_grid

COST_KEYS = ("device_hours", "total_flops", "train_flops", "wall_seconds", "cost_usd", "train_tokens")


@dataclass(frozen=True)
class Trial:
    """One trial as its MLflow run holds it (tracking.read_trials), with its curves read by name."""
    spec: TrialSpec                              # its identity (plan.py)
    run_id: str
    status: str                                  # FINISHED | FAILED | RUNNING ...
    error: str | None
    curves: dict[str, dict[int, float]]          # rule -> {rank: accuracy} (test), in the sweep's rule order
    metrics: dict[str, float]
    val_curves: dict[str, dict[int, float]] = field(default_factory=dict)   # rule -> {rank: accuracy}

    trial_id = property(lambda self: self.spec.trial_id)
    arm = property(lambda self: self.spec.arm)
    method = property(lambda self: self.spec.method)
    rank = property(lambda self: self.spec.rank)
    lr = property(lambda self: self.spec.lr)
    seed = property(lambda self: self.spec.seed)

    @property
    def ok(self) -> bool:
        return self.status == "FINISHED" and bool(self.curves)

    def score(self, rule: str, on_test: bool = False) -> float:
        """What the lr is chosen by (decisions.selection_score): on validation if the trial has it
        (and not `on_test`), else on test."""
        curve = (None if on_test else self.val_curves.get(rule)) or self.curves.get(rule) or {}
        return selection_score(curve, self.rank, self.spec.one_run)


@dataclass(frozen=True)
class Curve:
    arm: str
    rule: str
    method: str
    lr: float                                    # chosen for this curve
    ranks: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    aurac: float
    aurac_log2: float
    aurac_std: float
    trial_ids: tuple[str, ...]                   # the seeds at that lr
    selected_on: str                             # "validation" | "test"
    test_score: float                            # the selection metric on test at the chosen lr
    best_on_test: float                          # ... at the lr test itself would choose (the optimistic number)

    @property
    def label(self) -> str:
        return f"{self.arm} [{self.rule}]"

    def at(self, k: int) -> float | None:
        return dict(zip(self.ranks, self.mean)).get(k)


@dataclass(frozen=True)
class Arm:
    name: str
    spec: TrialSpec                              # what its trials share (lr, seed: its first trial's)
    trials: tuple[Trial, ...]                    # every lr and seed
    curves: dict[str, Curve]                     # rule -> curve
    run_cost: dict[str, float]                   # one run: mean over its finished trials
    total_cost: dict[str, float]                 # all its trials

    method = property(lambda self: self.spec.method)
    rank = property(lambda self: self.spec.rank)
    one_run = property(lambda self: self.spec.one_run)   # every rank from one run (Matryoshka, DyLoRA)

    @property
    def own_rank_curve(self) -> Curve:
        """The curve that gives a LoRA-k's accuracy at its own rank k: any (every rule is s(k) A B
        there), so the first. What the envelope, the cost plot and every LoRA grid read."""
        return next(iter(self.curves.values()))

    @property
    def at_own_rank(self) -> float | None:
        return self.own_rank_curve.at(self.rank)


@dataclass(frozen=True)
class Candidate:
    rank: int
    arm: str
    rule: str
    accuracy: float
    device_hours: float                          # one run of its arm
    flops: float

    @property
    def label(self) -> str:
        return f"{self.arm} [{self.rule}]"


@dataclass(frozen=True)
class SweepResult:
    tracking_uri: str
    parent_run_id: str
    tolerance: float
    rules: tuple[str, ...]
    trials: tuple[Trial, ...]
    arms: dict[str, Arm]
    envelope: dict[int, float]
    envelope_aurac: float | None
    envelope_aurac_log2: float | None
    grid: GridCost                               # the LoRA grid's cost
    one_run: tuple[Comparison, ...]              # every one-run curve against the grid, best first
    best_matryoshka: Comparison | None           # the first Matryoshka entry of one_run
    verdict: tuple[Candidate, ...]               # per rank: best accuracy for the least compute
    recommended: Candidate | None
    cost_plot: CostPlot                          # AURAC vs cost: the grid grown rank by rank, each single run
    searches: tuple[SearchTrace, ...] = ()       # per arm with several lrs: lr vs validation score
    compute_frontier: ComputeFrontier = ComputeFrontier()   # one run vs grids at every compute (frontier.py)

    @property
    def failed(self) -> list[Trial]:
        return [t for t in self.trials if not t.ok]

    @property
    def selected_on(self) -> str:
        """Where the learning rates were chosen: "validation" (every curve had it) or "test"."""
        return "validation" if all(c.selected_on == "validation" for c in self.curves) else "test"

    @property
    def curves(self) -> list[Curve]:
        return [c for a in self.arms.values() for c in a.curves.values()]


# ---- aggregation ------------------------------------------------------------------------

def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _curve(arm: str, rule: str, trials: list[Trial]) -> Curve | None:
    """The rule's curve of an arm: the lr with the best mean score over seeds, mean +- std there."""
    have = [t for t in trials if rule in t.curves]
    if not have:
        return None
    by_lr: dict[float, list[Trial]] = {}
    for t in have:
        by_lr.setdefault(t.lr, []).append(t)
    # compared over the seeds every lr ran with: all of them for a grid, the first for a search
    # (whose chosen lr alone runs the others)
    common = set.intersection(*({t.seed for t in ts} for ts in by_lr.values())) or {t.seed for t in have}
    mean_score = lambda lr, on_test=False: statistics.fmean(  # noqa: E731
        t.score(rule, on_test) for t in by_lr[lr] if t.seed in common)
    lr = max(by_lr, key=lambda lr: (mean_score(lr), -lr))
    chosen = by_lr[lr]
    ranks = sorted(set.intersection(*(set(t.curves[rule]) for t in chosen)))
    cols = [[t.curves[rule][k] for t in chosen] for k in ranks]
    aur = [aurac(ranks, [t.curves[rule][k] for k in ranks]) for t in chosen]
    aur2 = [aurac(ranks, [t.curves[rule][k] for k in ranks], log2=True) for t in chosen]
    on_val = all(rule in t.val_curves for t in have)
    return Curve(arm, rule, chosen[0].method, lr, tuple(ranks), tuple(statistics.fmean(c) for c in cols),
                 tuple(_sd(c) for c in cols), statistics.fmean(aur), statistics.fmean(aur2), _sd(aur),
                 tuple(t.trial_id for t in chosen), "validation" if on_val else "test", mean_score(lr, True),
                 max(mean_score(x, True) for x in by_lr))


def _arm(name: str, trials: list[Trial], rules: tuple[str, ...]) -> Arm:
    done = [t for t in trials if t.ok]
    curves = {rule: c for rule in rules if done and (c := _curve(name, rule, done)) is not None}
    cost = lambda ts: {k: statistics.fmean(t.metrics.get(k, 0.0) for t in ts) if ts else 0.0  # noqa: E731
                       for k in COST_KEYS}
    return Arm(name, trials[0].spec, tuple(trials), curves, cost(done),
               {k: sum(t.metrics.get(k, 0.0) for t in trials) for k in COST_KEYS})


def _candidates(arms: dict[str, Arm]) -> list[Candidate]:
    return [Candidate(k, a.name, c.rule, acc, a.run_cost["device_hours"], a.run_cost["total_flops"])
            for a in arms.values() for c in a.curves.values() for k, acc in zip(c.ranks, c.mean)]


def cheapest_within(candidates: list[Candidate], best: float, tolerance: float) -> Candidate:
    """The cheapest candidate within `tolerance` of `best` (ties: the more accurate). Cost is the
    FLOPs of one run: a function of the config, so the choice does not move with machine load
    (measured device-hours do; they are reported beside it)."""
    good = [c for c in candidates if within(c.accuracy, best, tolerance)]
    return min(good, key=lambda c: (c.flops, -c.accuracy))


def verdict(candidates: list[Candidate], tolerance: float) -> tuple[Candidate, ...]:
    """Per rank: the adapter that gives the best accuracy there for the least compute."""
    out = []
    for k in sorted({c.rank for c in candidates}):
        at_k = [c for c in candidates if c.rank == k]
        out.append(cheapest_within(at_k, max(c.accuracy for c in at_k), tolerance))
    return tuple(out)


def recommend(candidates: list[Candidate], tolerance: float) -> Candidate | None:
    """The smallest rank with a candidate within `tolerance` of the best accuracy anywhere, and
    the cheapest such candidate there."""
    if not candidates:
        return None
    best = max(c.accuracy for c in candidates)
    k = min(c.rank for c in candidates if within(c.accuracy, best, tolerance))
    return cheapest_within([c for c in candidates if c.rank == k], best, tolerance)


def lora_grid_arms(arms: dict[str, Arm]) -> list[Arm]:
    """The LoRA grid: per rank, the LoRA-k arm with results at the least budget the sweep ran it at."""
    return [arms[s.arm] for s in lora_grid(a.spec for a in arms.values() if a.curves)]


def _envelope(grid: list[Arm]) -> dict[int, float]:
    env = {a.rank: a.at_own_rank for a in grid}
    return {k: v for k, v in env.items() if v is not None}


def aggregate(trials: list[Trial], tolerance: float = 0.01, rules: tuple[str, ...] | None = None,
              sweep: SweepRef = SweepRef()) -> SweepResult:
    """Everything the summary, report and registry need, computed once. `rules`: the sweep's, in its
    order (the first is the primary); default: as the trials' curves list them."""
    order = {"matryoshka": 0, "dylora": 1, "lora": 2}
    trials = sorted(trials, key=lambda t: (order.get(t.method, 3), t.rank, t.arm, t.lr, t.seed))
    rules = tuple(rules or dict.fromkeys(r for t in trials for r in t.curves))
    by_arm: dict[str, list[Trial]] = {}
    for t in trials:
        by_arm.setdefault(t.arm, []).append(t)
    arms = {name: _arm(name, ts, rules) for name, ts in by_arm.items()}
    grid_arms = lora_grid_arms(arms)
    env = _envelope(grid_arms)
    env_aurac = aurac(list(env), list(env.values())) if env else None
    env_aurac2 = aurac(list(env), list(env.values()), log2=True) if env else None
    grid = grid_cost(arms, grid_arms)
    one_run = sorted((against_grid(a, c, env, grid, tolerance) for a in arms.values() if a.one_run
                      for c in a.curves.values()), key=lambda e: -e.aurac)
    candidates = _candidates(arms)
    ranks = sorted({c.rank for c in candidates})
    searches = tuple(s for a in arms.values() if rules and (s := search_trace(a, rules[0])) is not None)
    return SweepResult(sweep.tracking_uri, sweep.parent_run_id, tolerance, rules, tuple(trials), arms, env, env_aurac,
                       env_aurac2, grid, tuple(one_run), next((e for e in one_run if e.method == "matryoshka"), None),
                       verdict(candidates, tolerance), recommend(candidates, tolerance),
                       cost_plot(arms, grid_arms, ranks), searches, compute_frontier(arms, env, grid.flops, tolerance))
