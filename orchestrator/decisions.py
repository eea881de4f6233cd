"""The two tests every choice of a sweep is made with, each written once: what an arm's learning
rate is chosen by (`selection_score`) and whether an accuracy counts as good as the best
(`within`). Pure and import-light (no MLflow, no pydantic), so Ray workers use it too.
"""
from __future__ import annotations

from mlora_core.aurac import aurac

SLACK = 1e-12   # float noise: 0.9 - 0.01 is 0.89000000000000001, an accuracy of 0.89 is within it


def selection_score(curve: dict[int, float], rank: int, one_run: bool) -> float:
    """What an arm's lr is chosen by, from a trial's {rank: accuracy} curve under one rule: its
    AURAC for a one-run arm (one adapter for every rank), its accuracy at its own rank for a
    fixed-rank LoRA-k (0.0 where it has none). {1: 0.2, 4: 0.6}, LoRA-4: 0.6; Matryoshka: 0.4."""
    if not one_run:
        return curve.get(rank, 0.0)
    return aurac(list(curve), list(curve.values())) if curve else 0.0


def within(accuracy: float, best: float, tolerance: float) -> bool:
    """As good as `best` for the verdict: at most `tolerance` below it (0.795 is within 0.01 of 0.80)."""
    return accuracy >= best - tolerance - SLACK


__all__ = ["selection_score", "within"]
