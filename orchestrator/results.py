"""A sweep's trials, aggregated into one frozen SweepResult that the end-of-sweep summary, the
report and the registry all take as input: nothing downstream re-derives a choice. Pure: typed
trials in (record.py reads them from MLflow, the source of truth), numbers out; no I/O.

    trial      one MLflow run: an arm at one lr and seed (its TrialSpec and its curves)
    arm        what the report compares (plan.TrialSpec.arm): lora-r4, dylora-r16,
               matryoshka-per_rank-diag-r16, lora-r4-x2, ...; one run of it costs `run_cost`
    curve      an arm served under one rank-k rule: accuracy vs rank, mean +- std over seeds at
               the lr chosen for that curve
    candidate  a curve at one rank: an adapter a user could deploy there, at its arm's cost

The choices, each made here once:
  - lr, per curve: the best mean over seeds of its AURAC (one-run arms) or of its accuracy at
    its own rank (LoRA-k), on validation when trials have validation curves, else on test
  - the grid: one LoRA-k per rank, each at the least budget the sweep ran it at (more budgets
    are arms of their own); envelope: at rank k, the grid's LoRA-k at its own rank
  - verdict at rank k: the cheapest candidate (FLOPs of one run) within `tolerance` of the best
    accuracy at k
  - recommended: the smallest rank holding a candidate within `tolerance` of the best accuracy
    anywhere, and the cheapest such candidate there (what the registry registers)
  - best Matryoshka: the Matryoshka curve with the highest AURAC; it "paid off" when it costs less
    than the grid (FLOPs) and is within `tolerance` of the envelope (or above) at every rank
    ("partly": at some ranks)
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from mlora_core.aurac import aurac

from .frontier import compute_frontier
from .plan import TrialSpec, grid_of

COST_KEYS = ("device_hours", "total_flops", "train_flops", "wall_seconds", "cost_usd", "train_tokens")


@dataclass(frozen=True)
class Trial:
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
        """What the lr is chosen by: validation if the trial has it (and not `on_test`), else test."""
        curve = (None if on_test else self.val_curves.get(rule)) or self.curves.get(rule) or {}
        if not curve:
            return 0.0
        if not self.spec.one_run:
            return curve.get(self.rank, 0.0)
        return aurac(list(curve), list(curve.values()))


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
    grid: dict                                   # the LoRA grid: runs, one-grid cost, what the sweep spent on it
    one_run: tuple[dict, ...]                    # every one-run curve against the grid, best first
    best_matryoshka: dict | None                 # the first Matryoshka entry of one_run
    verdict: tuple[Candidate, ...]               # per rank: best accuracy for the least compute
    recommended: Candidate | None
    frontier: dict                               # the cost plot's points (cost_frontier)
    searches: tuple[dict, ...] = ()              # per arm with several lrs: lr vs validation score
    compute: dict = field(default_factory=dict)  # one run vs grids at every compute, break-evens (frontier.py)

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
    good = [c for c in candidates if c.accuracy >= best - tolerance - 1e-12]
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
    k = min(c.rank for c in candidates if c.accuracy >= best - tolerance - 1e-12)
    return cheapest_within([c for c in candidates if c.rank == k], best, tolerance)


def grid_arms(arms: dict[str, Arm]) -> list[Arm]:
    """The LoRA grid: per rank, the LoRA-k arm with results at the least budget the sweep ran it at."""
    return [arms[s.arm] for s in grid_of(a.spec for a in arms.values() if a.curves)]


def _envelope(grid: list[Arm]) -> dict[int, float]:
    # every rule is s(r) A B at a LoRA's own rank: any curve gives it
    env = {a.rank: next(iter(a.curves.values())).at(a.rank) for a in grid}
    return {k: v for k, v in env.items() if v is not None}


def _grid(arms: dict[str, Arm], grid: list[Arm]) -> dict:
    lora = [a for a in arms.values() if not a.one_run]
    return {"runs": len(grid), "device_hours": sum(a.run_cost["device_hours"] for a in grid),
            "flops": sum(a.run_cost["total_flops"] for a in grid), "trials": sum(len(a.trials) for a in lora),
            "spent_device_hours": sum(a.total_cost["device_hours"] for a in lora)}


def _against_grid(arm: Arm, curve: Curve, env: dict[int, float], grid: dict, tolerance: float) -> dict:
    """One one-run curve against the LoRA grid: AURAC share of the envelope's (over the ranks
    both have), cost share of one grid, and at which ranks it is within tolerance of it."""
    common = [k for k in curve.ranks if k in env]
    entry = {"arm": arm.name, "rule": curve.rule, "label": curve.label, "method": arm.method,
             "objective": arm.spec.objective, "p_schedule": arm.spec.p_schedule, "budget": arm.spec.budget, "lr": curve.lr,
             "seeds": len(curve.trial_ids), "aurac": curve.aurac, "aurac_std": curve.aurac_std,
             "aurac_log2": curve.aurac_log2, "device_hours": arm.run_cost["device_hours"],
             "flops": arm.run_cost["total_flops"],
             "cost_share": arm.run_cost["device_hours"] / grid["device_hours"] if grid["device_hours"] else None,
             "flops_share": arm.run_cost["total_flops"] / grid["flops"] if grid["flops"] else None,
             "per_rank": {k: {"accuracy": curve.at(k), "std": dict(zip(curve.ranks, curve.std))[k],
                              "grid": env.get(k)} for k in curve.ranks},
             "aurac_share": None, "within": [k for k in common if curve.at(k) >= env[k] - tolerance - 1e-12]}
    if len(common) >= 1:
        e_sub = aurac(common, [env[k] for k in common])
        entry["aurac_share"] = aurac(common, [curve.at(k) for k in common]) / e_sub if e_sub else None
    cheaper = entry["flops_share"] is not None and entry["flops_share"] < 1   # FLOPs: load-independent
    everywhere = bool(common) and len(entry["within"]) == len(common)
    entry["paid_off"] = "yes" if cheaper and everywhere else "partly" if cheaper and entry["within"] else "no"
    entry["outcome"] = (
        "pays off: as good as the grid at every rank, for less compute" if cheaper and everywhere else
        f"pays off at ranks {entry['within']} only (cheaper than the grid)" if cheaper and entry["within"] else
        "no cheaper than the grid, though as good at every rank" if everywhere else
        "does not pay off: no cheaper than the grid, and worse at some rank" if not cheaper else
        "does not pay off: cheaper, but worse than the grid at every rank")
    return entry


def search_trace(arm: Arm, rule: str) -> dict | None:
    """An arm's lr choice under `rule`: each lr's selection score (validation when present; mean over
    the seeds every lr ran), the chosen lr, and the trials it took against the grid it replaces."""
    curve = arm.curves.get(rule)
    done = [t for t in arm.trials if t.ok and rule in t.curves]
    lrs = sorted({t.lr for t in done})
    if curve is None or len(lrs) < 2:
        return None
    common = set.intersection(*({t.seed for t in done if t.lr == lr} for lr in lrs)) or {t.seed for t in done}
    points = [{"lr": lr, "score": statistics.fmean(t.score(rule) for t in done if t.lr == lr and t.seed in common)}
              for lr in lrs]
    seeds, tried = {t.seed for t in arm.trials}, {t.lr for t in arm.trials}
    return {"arm": arm.name, "rule": rule, "points": points, "chosen": curve.lr, "selected_on": curve.selected_on,
            "searched": any(t.spec.sample is not None for t in arm.trials), "trials": len(arm.trials),
            "lrs_tried": len(tried), "grid_trials": len(tried) * len(seeds)}


def _usable(curves: list[dict[int, float]], ranks: list[int]) -> list[float]:
    """At deployment rank j: the best accuracy any adapter of the set reaches at a rank <= j."""
    out = []
    for j in ranks:
        best = 0.0
        for c in curves:
            below = [k for k in c if k <= j]
            if below:
                best = max(best, c[j] if j in c else c[max(below)])
        out.append(best)
    return out


def cost_frontier(arms: dict[str, Arm], ranks: list[int]) -> dict:
    """Points (FLOPs and device-hours, AURAC of the adapters you get) for the LoRA grid grown rank by
    rank and for every single run served under each rule; plus which points are Pareto-optimal in
    FLOPs (a function of the config, like the verdict's choices; device-hours move with load)."""
    if not ranks:
        return {"ranks": [], "points": []}
    lora = grid_arms(arms)
    points, spent, flops, own = [], 0.0, 0.0, []
    for i, a in enumerate(lora):
        spent, flops = spent + a.run_cost["device_hours"], flops + a.run_cost["total_flops"]
        own.append({a.rank: next(iter(a.curves.values())).at(a.rank)})
        label = "LoRA " + ("+".join(f"r{x.rank}" for x in lora[:i + 1]) if i < 3 else f"r{lora[0].rank}..r{a.rank}")
        points.append({"label": label, "kind": "lora-grid", "rule": None, "device_hours": spent, "flops": flops,
                       "aurac": aurac(ranks, _usable(own, ranks))})
    singles = [a for a in arms.values() if a.one_run] + lora[-1:]
    for a in singles:
        for c in a.curves.values():
            points.append({"label": c.label, "kind": a.method, "rule": c.rule, "device_hours": a.run_cost["device_hours"],
                           "flops": a.run_cost["total_flops"],
                           "aurac": aurac(ranks, _usable([dict(zip(c.ranks, c.mean))], ranks))})
    for p in points:  # Pareto: no other point is at most as costly and at least as good, one strictly
        p["pareto"] = not any(q is not p and q["flops"] <= p["flops"] and q["aurac"] >= p["aurac"]
                              and (q["flops"] < p["flops"] or q["aurac"] > p["aurac"]) for q in points)
    return {"ranks": ranks, "points": points}


def aggregate(trials: list[Trial], tolerance: float = 0.01, tracking_uri: str = "", parent_run_id: str = "",
              rules: tuple[str, ...] | None = None) -> SweepResult:
    """Everything the summary, report and registry need, computed once. `rules`: the sweep's, in its
    order (the first is the primary); default: as the trials' curves list them."""
    order = {"matryoshka": 0, "dylora": 1, "lora": 2}
    trials = sorted(trials, key=lambda t: (order.get(t.method, 3), t.rank, t.arm, t.lr, t.seed))
    rules = tuple(rules or dict.fromkeys(r for t in trials for r in t.curves))
    by_arm: dict[str, list[Trial]] = {}
    for t in trials:
        by_arm.setdefault(t.arm, []).append(t)
    arms = {name: _arm(name, ts, rules) for name, ts in by_arm.items()}
    grid_runs = grid_arms(arms)
    env = _envelope(grid_runs)
    env_aurac = aurac(list(env), list(env.values())) if env else None
    env_aurac2 = aurac(list(env), list(env.values()), log2=True) if env else None
    grid = _grid(arms, grid_runs)
    one_run = sorted((_against_grid(a, c, env, grid, tolerance) for a in arms.values() if a.one_run
                      for c in a.curves.values()), key=lambda e: -e["aurac"])
    candidates = _candidates(arms)
    ranks = sorted({c.rank for c in candidates})
    searches = tuple(s for a in arms.values() if rules and (s := search_trace(a, rules[0])) is not None)
    return SweepResult(tracking_uri, parent_run_id, tolerance, rules, tuple(trials), arms, env, env_aurac, env_aurac2,
                       grid, tuple(one_run), next((e for e in one_run if e["method"] == "matryoshka"), None),
                       verdict(candidates, tolerance), recommend(candidates, tolerance), cost_frontier(arms, ranks),
                       searches, compute_frontier(arms, env, grid["flops"], tolerance))


