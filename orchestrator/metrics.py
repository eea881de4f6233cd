"""A trial's MLflow metrics: named by one schema (the *_key functions), written by trial_metrics and
read back by curves (no MLflow import here, so Ray workers can use it too).

    acc_{rule}_rank_{k}, eval_loss_{rule}_rank_{k}   accuracy / eval loss at rank k under each rule
    aurac_{rule}, aurac_log2_{rule}                   its AURAC (linear, log2 rank)
    acc_rank_{k}, eval_loss_rank_{k}, aurac, aurac_log2   the same for the primary rule (eval.rules[0])
    train_flops, total_flops, device_hours, ...       cost (mlora_core.cost.Cost.as_metrics)
    trainable_params, peak_memory_mb, setup_seconds, truncated_examples
    val_acc_{rule}_rank_{k}, val_eval_loss_{rule}_rank_{k}, val_aurac_{rule}, ...   the same on the
                                                      validation set (hyperparameters are chosen on it)
"""
from __future__ import annotations

EXTRA_KEYS = ("trainable_params", "peak_memory_mb", "setup_seconds", "truncated_examples")
SPLITS = {"test": "", "val": "val_"}      # split -> metric-name prefix


def acc_key(rule: str | None, k: int, split: str = "test", kind: str = "acc") -> str:
    """acc (or eval_loss) at rank k under `rule` (None: the primary names) on `split`."""
    return f"{SPLITS[split]}{kind}_{rule + '_' if rule else ''}rank_{k}"


def aurac_key(rule: str | None, split: str = "test", log2: bool = False) -> str:
    return f"{SPLITS[split]}aurac{'_log2' if log2 else ''}{'_' + rule if rule else ''}"


def curve_metrics(curve: dict, rule: str | None, split: str = "test") -> dict[str, float]:
    """Metrics of one rank curve (RankCurve.as_dict()); rule None = the primary names."""
    out = {}
    for k, acc, loss in zip(curve["ranks"], curve["accuracy"], curve["eval_loss"]):
        out[acc_key(rule, k, split)], out[acc_key(rule, k, split, "eval_loss")] = float(acc), float(loss)
    out[aurac_key(rule, split)] = float(curve["aurac"])
    out[aurac_key(rule, split, log2=True)] = float(curve["aurac_log2"])
    return out


def trial_metrics(result: dict) -> dict[str, float]:
    """Every summary metric of a finished trial, from mlora_core's RunResult.as_dict()."""
    out = curve_metrics(result["curve"], None)
    for split, curves in (("test", result.get("curves", {})), ("val", result.get("val_curves", {}))):
        for rule, curve in curves.items():
            out.update(curve_metrics(curve, rule, split))
    out.update({k: float(v) for k, v in result["cost"].items()})
    out.update({k: float(result[k]) for k in EXTRA_KEYS if k in result})
    return out


def curves(metrics: dict[str, float], rules, max_rank: int, split: str = "test") -> dict[str, dict[int, float]]:
    """{rule: {rank: accuracy}} of a trial, read by name: every rule of the sweep (in the sweep's
    order) at every rank up to the trial's that it was scored at."""
    out = {}
    for rule in rules:
        curve = {k: metrics[key] for k in range(1, max_rank + 1) if (key := acc_key(rule, k, split)) in metrics}
        if curve:
            out[rule] = curve
    return out


def report_every(steps: int) -> int:
    """Steps between a trial's progress reports to Tune: ~50 a trial, never more often than every
    10 steps (each report is a hop worker -> Tune -> driver, CPU a 2-core machine takes from
    training). Early stopping compares validation losses at these steps."""
    return max(10, steps // 50)


def search_score(metrics: dict[str, float], method: str, rank: int, rule: str) -> float | None:
    """What an arm's lr is chosen by (decisions.selection_score), on a trial's validation metrics
    under `rule`. None without validation (or, for a LoRA-k, without its own rank scored)."""
    from .decisions import selection_score
    curve = curves(metrics, (rule,), rank, "val").get(rule)
    one_run = method != "lora"
    if not curve or (not one_run and rank not in curve):
        return None
    return selection_score(curve, rank, one_run)


__all__ = ["acc_key", "aurac_key", "curve_metrics", "curves", "report_every", "search_score", "trial_metrics"]
