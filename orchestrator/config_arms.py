"""The experiment schema's arms (config.py's `arms:` and `search:`): what each arm trains, at which
budgets and learning rates, and how its learning rate is chosen (a grid of lrs, or Optuna)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from mlora_core.methods import OBJECTIVES, SCHEDULES

from .config_base import PosFloat, PosInt, Strict, distinct

Objective = Literal[tuple(OBJECTIVES)]  # type: ignore[valid-type]
Schedule = Literal[tuple(SCHEDULES)]  # type: ignore[valid-type]


class LrRange(Strict):
    low: PosFloat
    high: PosFloat
    log: bool = True                        # sample log-uniformly (learning rates span decades)

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low: must be below high, got low={self.low:g}, high={self.high:g}")
        return self


class Search(Strict):
    """How an arm's learning rate is chosen: every value of `lrs` (grid), or Optuna's TPE through
    Ray Tune (`num_samples` lrs from `lr` on the first seed, on the arm's validation metric; the
    chosen lr then runs on the other seeds)."""
    algorithm: Literal["grid", "optuna"] = "grid"
    num_samples: PosInt = 6                 # optuna: lrs tried per arm
    lr: LrRange | None = None               # optuna: the range searched
    seed: Annotated[int, Field(ge=0, strict=True)] = 0   # optuna: the TPE sampler's seed

    @model_validator(mode="after")
    def _range_for_optuna(self):
        if self.algorithm == "optuna" and self.lr is None:
            raise ValueError("lr: optuna needs a range to search, e.g. {low: 1.0e-4, high: 1.0e-2}")
        return self


class Arm(Strict):
    lrs: list[PosFloat] | None = None       # default: the experiment's lrs
    target_modules: list[str] | str | None = Field(   # default: adapter.target_modules (per-arm ablations)
        None, description="a list of module names, or one regex string (\"all-linear\": every linear layer)")
    search: Search | None = None            # default: the experiment's search
    # x training.steps (rounded to a whole step), to compare arms at equal compute: [1, 1.5, 3]
    budgets: list[PosFloat] = [1.0]

    @field_validator("lrs", "budgets")
    @classmethod
    def _listsdistinct(cls, v):
        return distinct(v)


class MatryoshkaArm(Arm):
    # one list for every objective, or one per objective ({summed: [diag], stratified: [top]})
    p_schedules: list[Schedule] | dict[Objective, list[Schedule]] = ["diag"]
    # summed: the paper's one P-weighted forward; per_rank: |R| forwards (one per train rank);
    # stratified: one forward, each example at one train rank (mlora_core/objectives.py);
    # stratified_share: stratified with component updates x 1/share (measured worse: findings.md section 8)
    objectives: list[Objective] = ["summed"]
    # one list for every objective, or one per objective ({summed: [1], per_rank: [1], stratified: [1, 3]})
    budgets: list[PosFloat] | dict[Objective, list[PosFloat]] = Field(
        [1.0], description=f"a list of numbers > 0 ([1, 1.5, 3]), or such a list per objective ({{stratified: [1, 3]}}; "
                         f"objectives: {', '.join(OBJECTIVES)})")

    @field_validator("objectives")
    @classmethod
    def _arm_listsdistinct(cls, v):
        return distinct(v)

    @field_validator("budgets", "p_schedules")
    @classmethod
    def _listsdistinct(cls, v):
        for values in (v.values() if isinstance(v, dict) else [v]):
            distinct(values)
        return v

    @model_validator(mode="after")
    def _one_list_per_objective(self):
        for name in ("budgets", "p_schedules"):
            given = getattr(self, name)
            if isinstance(given, dict) and (missing := [o for o in self.objectives if o not in given]):
                raise ValueError(f"{name}: none given for objectives {missing}")
        return self

    def budgets_for(self, objective: str) -> list[float]:
        return self.budgets[objective] if isinstance(self.budgets, dict) else self.budgets

    def schedules_for(self, objective: str) -> list[str]:
        return self.p_schedules[objective] if isinstance(self.p_schedules, dict) else self.p_schedules


class LoraArm(Arm):
    ranks: list[PosInt] | None = None       # the fixed-rank grid; default: the eval ranks

    @field_validator("ranks")
    @classmethod
    def _ranksdistinct(cls, v):
        return distinct(v)


class DyloraArm(Arm):
    pass


class Arms(Strict):
    """The arms to run. Without an `arms:` key: Matryoshka (diag) + the LoRA grid; with one,
    exactly the arms it lists (`lora: {}` = the grid over the eval ranks)."""
    matryoshka: MatryoshkaArm | None = None
    lora: LoraArm | None = None
    dylora: DyloraArm | None = None


__all__ = ["Arm", "Arms", "DyloraArm", "LoraArm", "LrRange", "MatryoshkaArm", "Search", "distinct"]
