"""Hyperparameter search on Ray Tune: Optuna's TPE per searched arm, and ASHA within each arm.

`SweepSearcher` is the one Tune Searcher of a sweep that searches: it hands out the planned
trials (the arms whose lrs are a fixed list) and, for each searched arm (plan.SearchGroup), asks that arm's own Ray Tune
`OptunaSearch` for `num_samples` learning rates on the first seed, then repeats the best one
(on validation: metrics.search_score) on the other seeds. Arms never share a study: LoRA-1's
best lr says nothing about Matryoshka's.

Resume: Tune checkpoints the searcher with the experiment (save/restore below) and
`Tuner.restore` brings it back. Trials started after that checkpoint are unknown to the restored
state, so the first suggestion after a restore reconciles with MLflow, the source of truth:
a finished sample is told to its study as an evaluated point, an unfinished one is handed out
again with its exact spec (its trial continues its own MLflow run). No sample is lost or run twice.

`PerArmASHA` runs one ASHA scheduler per arm, so trials compete only with their own arm's lrs
and seeds (ASHA over a whole sweep would stop LoRA-1 for losing to LoRA-16).
"""
from __future__ import annotations

import pickle
from collections.abc import Callable

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from . import tracking
from .messages import TrialContext
from .plan import SearchGroup, TrialSpec

METRIC = "search_score"


class _Arm:
    """One searched arm's state: its study, its samples and their validation scores."""

    def __init__(self, group: SearchGroup):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)   # not a line per study in the sweep's output
        self.group = group
        dist = optuna.distributions.FloatDistribution(group.low, group.high, log=group.log)
        # TPE models the scores only after n_startup_trials random draws (Optuna's default 10 would
        # make a 6-sample search pure random search): half the budget explores, half exploits
        startup = max(2, group.num_samples // 2)
        self.study = OptunaSearch(space={"lr": dist}, metric=METRIC, mode="max",
                                  sampler=optuna.samplers.TPESampler(seed=group.sampler_seed, n_startup_trials=startup))
        self.samples: dict[int, TrialSpec] = {}          # sample index -> the trial that ran it
        self.asked: set[int] = set()                     # samples this study proposed (not adopted ones)
        self.scores: dict[int, float | None] = {}        # ... its validation score (None: failed/stopped)
        self.todo: list[TrialSpec] = []                  # handed out next: re-issued trials, then repeats
        self.repeated = False

    def key(self, index: int) -> str:
        return f"{self.group.arm}/{index}"

    def next(self) -> TrialSpec | str | None:
        """A trial to run, None (wait for results), or Searcher.FINISHED."""
        if self.todo:
            return self.todo.pop(0)
        if len(self.samples) < self.group.num_samples:
            index = len(self.samples)
            lr = float(self.study.suggest(self.key(index))["lr"])
            self.samples[index] = self.group.sample(index, lr)
            self.asked.add(index)
            return self.samples[index]
        if len(self.scores) < self.group.num_samples:
            return None
        if not self.repeated:
            self.repeated = True
            scored = {i: s for i, s in self.scores.items() if s is not None}
            if scored:
                self.todo = self.group.repeats(self.samples[max(scored, key=lambda i: (scored[i], -i))])
                return self.next()
        return Searcher.FINISHED

    def complete(self, spec: TrialSpec, score: float | None, error: bool) -> None:
        if spec.seed != self.group.seeds[0] or spec.sample in self.scores:
            return   # a repeat, or a sample already told (adopted from MLflow)
        self.scores[spec.sample] = score
        if spec.sample in self.asked:
            self.study.on_trial_complete(self.key(spec.sample), {METRIC: score} if score is not None else None,
                                         error=error)
        else:   # adopted from MLflow after a restore: the study hears of it as an evaluated point
            self.study.add_evaluated_point({"lr": spec.lr}, score if score is not None else 0.0, error=score is None)

    def adopt(self, spec: TrialSpec, finished: bool, score: float | None, known: set[str]) -> None:
        """A trial of this arm that MLflow has and this state does not (started after the last
        checkpoint): a finished sample joins the study; anything unfinished runs again."""
        if spec.trial_id in known or spec.trial_id in {t.trial_id for t in self.todo}:
            return
        if spec.seed == self.group.seeds[0]:
            # the restored study has not drawn this sample yet: draw it and drop it (its draw is what
            # ran, or what would have, had the history matched), so its random state moves on as it
            # did before the restore and the next sample is new, not this one again
            self.study.suggest(self.key(spec.sample))
            self.study.on_trial_complete(self.key(spec.sample), None, error=True)
            self.samples[spec.sample] = spec
            if finished:
                self.complete(spec, score, error=score is None)
                return
        elif finished:
            self.repeated = True
            return
        self.todo.append(spec)


class SweepSearcher(Searcher):
    def __init__(self, planned: list[TrialSpec], groups: list[SearchGroup], ctx: TrialContext, primary_rule: str):
        # no metric for Tune itself: it would demand it in every progress report; the arms' studies
        # read METRIC from the final one (worker.py)
        super().__init__(metric=None, mode=None)
        self._ctx = ctx.to_dict()                         # what every trial gets (Tune's config: plain data)
        self._sweep = ctx.sweep
        self._rule = primary_rule
        self._planned = list(planned)                     # planned trials not handed out yet
        self._arms = {g.arm: _Arm(g) for g in groups}
        self._issued: dict[str, TrialSpec] = {}           # Tune's trial id -> spec
        self._synced = False

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True   # the arms carry their own spaces; the metric is METRIC

    def suggest(self, trial_id: str):
        if not self._synced:
            self._sync()
        spec = self._planned.pop(0) if self._planned else None
        states = []
        for arm in self._arms.values() if spec is None else ():
            # one arm at a time: an arm's next() draws a sample, which must then run
            states.append(arm.next())
            if isinstance(states[-1], TrialSpec):
                spec = states[-1]
                break
        if spec is None:
            return Searcher.FINISHED if all(s == Searcher.FINISHED for s in states) else None
        self._issued[trial_id] = spec
        return {"spec": spec.as_dict(), "ctx": self._ctx}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        spec = self._issued.get(trial_id)
        if spec is not None and spec.arm in self._arms and spec.sample is not None:
            score = (result or {}).get(METRIC)
            self._arms[spec.arm].complete(spec, float(score) if score is not None else None, error)

    def _sync(self) -> None:
        """Adopt the searched arms' MLflow runs this state does not know (see the module doc)."""
        from .metrics import search_score
        self._synced = True
        if not self._arms:
            return
        known = {t.trial_id for t in self._issued.values()} | {t.trial_id for a in self._arms.values()
                                                               for t in a.samples.values()}
        runs = [t for t in tracking.read_trials(self._sweep)
                if t.spec.arm in self._arms and t.spec.sample is not None]
        for run in sorted(runs, key=lambda t: t.spec.sample):   # in sample order: each adoption replays one draw
            finished = run.status == "FINISHED"
            score = search_score(run.metrics, run.spec.method, run.spec.rank, self._rule) if finished else None
            self._arms[run.spec.arm].adopt(run.spec, finished, score, known)

    def save(self, checkpoint_path: str) -> None:
        # Tune's own searchers pickle their state the same way; this file is written and read by the sweep
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        self._synced = False


class PerArmASHA(FIFOScheduler):
    """ASHA within each arm (trial config spec.arm); arms do not compete."""

    def __init__(self, make: Callable[[str], TrialScheduler]):
        super().__init__()
        self._make = make
        self._by_arm: dict[str, TrialScheduler] = {}

    def _of(self, trial) -> TrialScheduler:
        arm = trial.config["spec"]["arm"]
        if arm not in self._by_arm:
            self._by_arm[arm] = self._make(arm)
        return self._by_arm[arm]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial):
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial):
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial):
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"ASHA per arm ({len(self._by_arm)} arms)"
