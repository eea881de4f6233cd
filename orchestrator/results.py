"""A sweep, read back from MLflow (the source of truth), as one frozen SweepResult that the
end-of-sweep summary, the report and the registry all take as input: nothing downstream
re-reads MLflow or re-derives a choice.

    trial      one MLflow run: an arm at one lr and seed
    arm        what the report compares (plan.TrialSpec.arm): lora-r4, dylora-r16,
               matryoshka-per_rank-diag-r16, ...; one run of it costs `run_cost`
    curve      an arm served under one rank-k rule: accuracy vs rank, mean +- std over seeds at
               the lr chosen for that curve
    candidate  a curve at one rank: an adapter a user could deploy there, at its arm's cost

The choices, each made here once:
  - lr, per curve: the best mean over seeds of its AURAC (one-run arms) or of its accuracy at
    its own rank (LoRA-k), on validation when trials have validation curves, else on test
  - envelope: at rank k, LoRA-k's accuracy at its own rank (the grid: one run per rank)
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
from pathlib import Path

from mlora_core.aurac import aurac
from mlora_core.io import read_json

from .metrics import curves_of

COST_KEYS = ("device_hours", "total_flops", "train_flops", "wall_seconds", "cost_usd", "train_tokens")


@dataclass(frozen=True)
class Trial:
    trial_id: str
    run_id: str
    arm: str
    method: str
    rank: int
    objective: str
    p_schedule: str
    budget: int
    lr: float
    seed: int
    status: str                                  # FINISHED | FAILED | RUNNING ...
    error: str | None
    curves: dict[str, dict[int, float]]          # rule -> {rank: accuracy} (test)
    metrics: dict[str, float]
    val_curves: dict[str, dict[int, float]] = field(default_factory=dict)   # rule -> {rank: accuracy}
    sample: int | None = None                    # a searched arm's n-th sampled lr (None: grid)

    @property
    def ok(self) -> bool:
        return self.status == "FINISHED" and bool(self.curves)

    def score(self, rule: str, on_test: bool = False) -> float:
        """What the lr is chosen by: validation if the trial has it (and not `on_test`), else test."""
        curve = (None if on_test else self.val_curves.get(rule)) or self.curves.get(rule) or {}
        if not curve:
            return 0.0
        if self.method == "lora":
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
    method: str
    rank: int
    objective: str
    p_schedule: str
    budget: int
    trials: tuple[Trial, ...]                    # every lr and seed
    curves: dict[str, Curve]                     # rule -> curve
    run_cost: dict[str, float]                   # one run: mean over its finished trials
    total_cost: dict[str, float]                 # all its trials

    @property
    def one_run(self) -> bool:
        """Serves every rank from one run (Matryoshka, DyLoRA), unlike the LoRA grid."""
        return self.method != "lora"


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
    frontier: dict
    searches: tuple[dict, ...] = ()              # per arm with several lrs: lr vs validation score

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


# ---- reading ----------------------------------------------------------------------------

def trial_from_run(run) -> Trial:
    """An MLflow run -> Trial. The plan logged every identity param (plan.trial_params)."""
    p, m, tags = run.data.params, run.data.metrics, run.data.tags
    curves = curves_of({k: v for k, v in m.items() if not k.startswith("val_")})
    primary = curves.pop("", {})
    if not curves and primary:  # a run logged before rules existed: its one curve was truncation
        curves = {"truncate": primary}
    val = curves_of({k.removeprefix("val_"): v for k, v in m.items() if k.startswith("val_")})
    val.pop("", None)
    return Trial(trial_id=tags["mlora.trial_id"], run_id=run.info.run_id, arm=p["arm"],
                 method=p["method"], rank=int(p["rank"]), objective=p["objective"],
                 p_schedule=p["p_schedule"], budget=int(p["budget"]), lr=float(p["lr"]),
                 seed=int(p["seed"]), status=run.info.status, error=tags.get("mlora.error"), curves=curves,
                 metrics=dict(m), val_curves=val,
                 sample=None if p.get("sample", "-") == "-" else int(p["sample"]))  # "-": a grid trial


def load_sweep(tracking_uri: str, parent_run_id: str, tolerance: float = 0.01) -> SweepResult:
    from . import tracking
    runs = tracking.trial_runs(tracking_uri, parent_run_id)
    return aggregate([trial_from_run(r) for r in runs], tolerance, tracking_uri, parent_run_id)


def read_sweep_state(output_dir) -> dict:
    """OUTPUT_DIR/sweep.json (tracking URI, parent run, resolved experiment), or a clear error."""
    path = Path(output_dir) / "sweep.json"
    if not path.is_file():
        raise FileNotFoundError(f"{output_dir} holds no sweep (no sweep.json)")
    return read_json(path)


def load_output_dir(output_dir, tracking_uri: str | None = None) -> tuple[dict, SweepResult]:
    """(sweep.json, SweepResult) of a sweep's output dir, with the tolerance its config set."""
    state = read_sweep_state(output_dir)
    tolerance = state.get("experiment", {}).get("registry", {}).get("tolerance", 0.01)
    return state, load_sweep(tracking_uri or state["tracking_uri"], state["parent_run_id"], tolerance)


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
    first = trials[0]
    return Arm(name, first.method, first.rank, first.objective, first.p_schedule, first.budget, tuple(trials),
               curves, cost(done), {k: sum(t.metrics.get(k, 0.0) for t in trials) for k in COST_KEYS})


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


def _envelope(arms: dict[str, Arm]) -> dict[int, float]:
    env = {}
    for a in arms.values():
        if a.method == "lora" and a.curves:
            own = next(iter(a.curves.values())).at(a.rank)  # every rule is s(r) A B at its own rank
            if own is not None:
                env[a.rank] = max(env.get(a.rank, 0.0), own)
    return dict(sorted(env.items()))


def _grid(arms: dict[str, Arm]) -> dict:
    lora = [a for a in arms.values() if a.method == "lora" and a.curves]
    return {"runs": len(lora), "device_hours": sum(a.run_cost["device_hours"] for a in lora),
            "flops": sum(a.run_cost["total_flops"] for a in lora),
            "trials": sum(len(a.trials) for a in arms.values() if a.method == "lora"),
            "spent_device_hours": sum(a.total_cost["device_hours"] for a in arms.values() if a.method == "lora")}


def _against_grid(arm: Arm, curve: Curve, env: dict[int, float], grid: dict, tolerance: float) -> dict:
    """One one-run curve against the LoRA grid: AURAC share of the envelope's (over the ranks
    both have), cost share of one grid, and at which ranks it is within tolerance of it."""
    common = [k for k in curve.ranks if k in env]
    entry = {"arm": arm.name, "rule": curve.rule, "label": curve.label, "method": arm.method,
             "objective": arm.objective, "p_schedule": arm.p_schedule, "budget": arm.budget, "lr": curve.lr,
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
            "searched": any(t.sample is not None for t in arm.trials), "trials": len(arm.trials),
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
    """Points (device-hours, AURAC of the adapters you get) for the LoRA grid grown rank by rank
    and for every single run served under each rule; plus which points are Pareto-optimal."""
    if not ranks:
        return {"ranks": [], "points": []}
    lora = sorted((a for a in arms.values() if a.method == "lora" and a.curves), key=lambda a: a.rank)
    points, spent, own = [], 0.0, []
    for i, a in enumerate(lora):
        spent += a.run_cost["device_hours"]
        own.append({a.rank: next(iter(a.curves.values())).at(a.rank)})
        label = "LoRA " + ("+".join(f"r{x.rank}" for x in lora[:i + 1]) if i < 2 else f"r{lora[0].rank}..r{a.rank}")
        points.append({"label": label, "kind": "lora-grid", "device_hours": spent,
                       "aurac": aurac(ranks, _usable(own, ranks))})
    singles = [a for a in arms.values() if a.one_run] + lora[-1:]
    for a in singles:
        for c in a.curves.values():
            points.append({"label": c.label, "kind": a.method, "device_hours": a.run_cost["device_hours"],
                           "aurac": aurac(ranks, _usable([dict(zip(c.ranks, c.mean))], ranks))})
    for p in points:  # Pareto: no other point is at most as costly and at least as good, one strictly
        p["pareto"] = not any(q is not p and q["device_hours"] <= p["device_hours"] and q["aurac"] >= p["aurac"]
                              and (q["device_hours"] < p["device_hours"] or q["aurac"] > p["aurac"]) for q in points)
    return {"ranks": ranks, "points": points}


def aggregate(trials: list[Trial], tolerance: float = 0.01, tracking_uri: str = "",
              parent_run_id: str = "") -> SweepResult:
    """Everything the summary, report and registry need, computed once."""
    order = {"matryoshka": 0, "dylora": 1, "lora": 2}
    trials = sorted(trials, key=lambda t: (order.get(t.method, 3), t.rank, t.arm, t.lr, t.seed))
    rules = tuple(dict.fromkeys(r for t in trials for r in t.curves))
    by_arm: dict[str, list[Trial]] = {}
    for t in trials:
        by_arm.setdefault(t.arm, []).append(t)
    arms = {name: _arm(name, ts, rules) for name, ts in by_arm.items()}
    env = _envelope(arms)
    env_aurac = aurac(list(env), list(env.values())) if env else None
    env_aurac2 = aurac(list(env), list(env.values()), log2=True) if env else None
    grid = _grid(arms)
    one_run = sorted((_against_grid(a, c, env, grid, tolerance) for a in arms.values() if a.one_run
                      for c in a.curves.values()), key=lambda e: -e["aurac"])
    candidates = _candidates(arms)
    ranks = sorted({c.rank for c in candidates})
    searches = tuple(s for a in arms.values() if rules and (s := search_trace(a, rules[0])) is not None)
    return SweepResult(tracking_uri, parent_run_id, tolerance, rules, tuple(trials), arms, env, env_aurac, env_aurac2,
                       grid, tuple(one_run), next((e for e in one_run if e["method"] == "matryoshka"), None),
                       verdict(candidates, tolerance), recommend(candidates, tolerance), cost_frontier(arms, ranks),
                       searches)


# ---- the summary ------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def verdict_lines(result: SweepResult) -> list[str]:
    """The answer in words: per rank what to deploy, whether Matryoshka paid off, what to serve."""
    lines = []
    for c in result.verdict:
        grid = result.envelope.get(c.rank)
        lines.append(f"rank {c.rank:>4}: {c.label} {c.accuracy:.3f} at {c.flops / 1e12:.3g} TFLOPs, "
                     f"{c.device_hours:.4f} device-h a run"
                     + (f"  (LoRA-{c.rank} at its own rank: {grid:.3f})" if grid is not None else ""))
    m = result.best_matryoshka
    if m is not None:
        spread = f" +- {m['aurac_std']:.3f} over {m['seeds']} seeds" if m["seeds"] > 1 else ""
        lines.append(f"best Matryoshka: {m['label']} (objective {m['objective']}, budget x{m['budget']}, lr "
                     f"{m['lr']:.1e}): AURAC {m['aurac']:.3f}{spread} = {_pct(m['aurac_share'])} of the grid "
                     f"envelope's, for {_pct(m['flops_share'])} of the grid's FLOPs ({_pct(m['cost_share'])} of its "
                     f"device-hours; {result.grid['runs']} run{'s' if result.grid['runs'] != 1 else ''}): "
                     f"{m['outcome']} (within {result.tolerance:g} of the grid: ranks {m['within'] or 'none'})")
    if result.recommended is not None:
        r = result.recommended
        lines.append(f"recommended: rank {r.rank}, {r.label} ({r.accuracy:.3f}; the smallest rank within "
                     f"{result.tolerance:g} of the best accuracy, its cheapest adapter)")
    if result.curves:
        lines.append(f"learning rates chosen on {result.selected_on}; every accuracy above is on the test set"
                     + ("" if result.selected_on == "validation" else " (so optimistic: the best of the lrs tried)"))
    for s in result.searches:
        if s["searched"]:
            lines.append(f"search {s['arm']}: {s['trials']} trials ({s['lrs_tried']} lrs on the first seed, the "
                         f"chosen lr {s['chosen']:.2e} on the others) where a grid of those lrs x seeds runs "
                         f"{s['grid_trials']}")
    return lines


def print_summary(result: SweepResult) -> dict:
    """The end-of-sweep table (every arm under every rule) and verdict; returns parent-run metrics."""
    ranks = sorted({k for c in result.curves for k in c.ranks})
    head = f"{'arm [rule]':<44} {'lr':>8} {'seeds':>5} " + " ".join(f"{'r' + str(k):>6}" for k in ranks) + \
        f" {'AURAC':>6} {'log2':>6} {'dev-h':>8}"
    print("\n" + head + "\n" + "-" * len(head))
    for a in result.arms.values():
        for c in a.curves.values():
            cells = " ".join(f"{c.at(k):6.3f}" if c.at(k) is not None else f"{'':>6}" for k in ranks)
            print(f"{c.label:<44} {c.lr:8.1e} {len(c.trial_ids):>5} {cells} {c.aurac:6.3f} {c.aurac_log2:6.3f} "
                  f"{a.run_cost['device_hours']:8.4f}")
    for t in result.failed:
        print(f"{t.trial_id:<44} {t.status}: {t.error or 'no result'}")
    print("\n" + "\n".join(verdict_lines(result)))
    metrics = {"failed_trials": len(result.failed), "grid_device_hours": result.grid["device_hours"]}
    if result.envelope_aurac is not None:
        metrics["envelope_aurac"] = result.envelope_aurac
    m = result.best_matryoshka
    if m is not None:
        metrics.update(best_matryoshka_aurac=m["aurac"])
        if m["cost_share"] is not None:
            metrics["best_matryoshka_cost_share"] = m["cost_share"]
        if m["aurac_share"] is not None:
            metrics["best_matryoshka_aurac_share"] = m["aurac_share"]
    if result.recommended is not None:
        metrics.update(recommended_rank=result.recommended.rank, recommended_accuracy=result.recommended.accuracy)
    return metrics
