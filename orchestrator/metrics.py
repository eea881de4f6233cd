"""A trial's MLflow metrics: written by one function, read back by one (no MLflow import here,
so Ray workers can use it too).

    acc_{rule}_rank_{k}, eval_loss_{rule}_rank_{k}   accuracy / eval loss at rank k under each rule
    aurac_{rule}, aurac_log2_{rule}                   its AURAC (linear, log2 rank)
    acc_rank_{k}, eval_loss_rank_{k}, aurac, aurac_log2   the same for the primary rule (eval.rules[0])
    train_flops, total_flops, device_hours, ...       cost (mlora_core.cost.Cost.as_metrics)
    trainable_params, peak_memory_mb, setup_seconds, truncated_examples
    val_acc_{rule}_rank_{k}, val_eval_loss_{rule}_rank_{k}, val_aurac_{rule}, ...   the same on the
                                                      validation set (hyperparameters are chosen on it)
"""
from __future__ import annotations

import re

EXTRA_KEYS = ("trainable_params", "peak_memory_mb", "setup_seconds", "truncated_examples")
_ACC = re.compile(r"^acc_(?:(?P<rule>[a-z]+)_)?rank_(?P<k>\d+)$")


def curve_metrics(curve: dict, rule: str | None) -> dict[str, float]:
    """Metrics of one rank curve (RankCurve.as_dict()); rule None = the primary names."""
    tag = f"{rule}_" if rule else ""
    out = {}
    for k, acc, loss in zip(curve["ranks"], curve["accuracy"], curve["eval_loss"]):
        out[f"acc_{tag}rank_{k}"], out[f"eval_loss_{tag}rank_{k}"] = float(acc), float(loss)
    out[f"aurac{'_' + rule if rule else ''}"] = float(curve["aurac"])
    out[f"aurac_log2{'_' + rule if rule else ''}"] = float(curve["aurac_log2"])
    return out


def trial_metrics(result: dict) -> dict[str, float]:
    """Every summary metric of a finished trial, from mlora_core's RunResult.as_dict()."""
    out = curve_metrics(result["curve"], None)
    for rule, curve in result.get("curves", {}).items():
        out.update(curve_metrics(curve, rule))
    for rule, curve in result.get("val_curves", {}).items():
        out.update({f"val_{k}": v for k, v in curve_metrics(curve, rule).items()})
    out.update({k: float(v) for k, v in result["cost"].items()})
    out.update({k: float(result[k]) for k in EXTRA_KEYS if k in result})
    return out


def report_every(steps: int) -> int:
    """Steps between a trial's progress reports to Tune: ~50 a trial, never more often than every
    10 steps (each report is a hop worker -> Tune -> driver, CPU a 2-core machine takes from
    training). Early stopping compares validation losses at these steps."""
    return max(10, steps // 50)


def search_score(metrics: dict[str, float], method: str, rank: int, rule: str) -> float | None:
    """What an arm's lr is chosen by, on validation: AURAC under the rule (an adapter for every
    rank) or, for a fixed-rank LoRA, its accuracy at its own rank. None without validation."""
    return metrics.get(f"val_acc_{rule}_rank_{rank}" if method == "lora" else f"val_aurac_{rule}")


def curves_of(metrics: dict[str, float]) -> dict[str, dict[int, float]]:
    """{rule: {rank: accuracy}} from a trial's metrics; the primary names under '' (a trial
    logged before rules existed has only those)."""
    out: dict[str, dict[int, float]] = {}
    for key, value in metrics.items():
        if m := _ACC.match(key):
            out.setdefault(m["rule"] or "", {})[int(m["k"])] = value
    return {rule: dict(sorted(c.items())) for rule, c in out.items()}


__all__ = ["curve_metrics", "curves_of", "report_every", "search_score", "trial_metrics"]
