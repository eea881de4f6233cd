"""Aggregation of a sweep read back from MLflow: lr choice, seeds, envelope, cost fractions."""
import pytest

from orchestrator.results import Trial, aggregate, envelope, headline


def _trial(method, rank, seed, curve, hours, lr=1e-3, aurac=None):
    group = "matryoshka-diag" if method == "matryoshka" else f"lora-r{rank}"
    metrics = {"device_hours": hours, "total_flops": hours * 1e12}
    if aurac is not None:
        metrics["aurac"] = aurac
    return Trial(f"{group}-s{seed}-lr{lr}", f"run-{group}-{seed}-{lr}", method, method, rank,
                 "diag" if method == "matryoshka" else "-", lr, seed, "FINISHED", None, curve, metrics)


def test_three_seed_sweep_compares_the_matryoshka_arm_with_the_grid_like_for_like():
    trials = []
    for seed in range(3):
        trials.append(_trial("matryoshka", 4, seed, {1: 0.5, 4: 0.6}, hours=1.0, aurac=0.55))
        trials.append(_trial("lora", 1, seed, {1: 0.2}, hours=0.9))
        trials.append(_trial("lora", 4, seed, {1: 0.1, 4: 0.7 + 0.05 * seed}, hours=1.1))
    h = headline(aggregate(trials))
    m = h["matryoshka"]["matryoshka-diag"]
    assert m["arm_runs"] == 3 and m["grid_runs"] == 6
    assert m["device_hours"] == pytest.approx(1.0)          # one run, mean over seeds
    assert h["grid_device_hours"] == pytest.approx(6.0)      # every grid trial
    # 3 Matryoshka runs vs 3 grids of 2 runs: one run / one grid = 1.0 / 2.0
    assert m["cost_fraction"] == pytest.approx(0.5)
    assert m["flops_fraction"] == pytest.approx(0.5)
    # the envelope takes each rank's best grid arm, its mean over seeds
    assert h["envelope"] == pytest.approx({1: 0.2, 4: 0.75})


def test_the_lr_with_the_best_mean_over_seeds_is_chosen_per_arm():
    trials = [_trial("lora", 4, s, {4: acc}, 1.0, lr=lr)
              for lr, accs in ((1e-3, (0.9, 0.1)), (3e-3, (0.6, 0.6))) for s, acc in enumerate(accs)]
    g = aggregate(trials).groups["lora-r4"]
    assert g.lr == 3e-3 and g.mean == [pytest.approx(0.6)] and len(g.trials) == 2
    assert envelope(aggregate(trials)) == {4: pytest.approx(0.6)}
