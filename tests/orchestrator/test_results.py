"""Aggregation of a sweep (results.py) on hand-made trials with exact answers: lr choice per
curve, seeds, envelope, cost shares, the per-rank verdict, the recommendation, the frontier."""
import pytest

from orchestrator.plan import TrialSpec
from orchestrator.results import Candidate, Trial, aggregate, cheapest_within, recommend, verdict
from orchestrator.summary import outcome


def _trial(spec, curves, hours, val=None):
    metrics = {"device_hours": hours, "total_flops": hours * 1e12}
    return Trial(spec, f"run-{spec.trial_id}", "FINISHED", None, curves, metrics, val or {})


def mat(seed, curve, hours=1.0, lr=1e-3, rule="truncate", objective="summed", val=None, budget=1):
    return _trial(TrialSpec("matryoshka", 4, lr, seed, objective, "diag", budget), {rule: curve}, hours,
                  {rule: val} if val else None)


def lora(rank, seed, curve, hours, lr=1e-3, budget=1):
    return _trial(TrialSpec("lora", rank, lr, seed, budget=budget), {"truncate": curve}, hours)


def test_three_seed_sweep_compares_one_run_with_one_grid():
    trials = []
    for seed in range(3):
        trials.append(mat(seed, {1: 0.5, 4: 0.6 + 0.03 * seed}, hours=1.0))
        trials.append(lora(1, seed, {1: 0.2}, hours=0.9))
        trials.append(lora(4, seed, {1: 0.1, 4: 0.7 + 0.05 * seed}, hours=1.1))
    result = aggregate(trials, tolerance=0.01)
    assert result.envelope == pytest.approx({1: 0.2, 4: 0.75})   # each LoRA-k at its own rank, mean over seeds
    assert result.grid.runs == 2 and result.grid.device_hours == pytest.approx(2.0)       # one run per rank
    assert result.grid.spent_device_hours == pytest.approx(6.0)                          # what the sweep spent
    m = result.best_matryoshka
    assert m.cost_share == pytest.approx(0.5) and m.flops_share == pytest.approx(0.5)
    assert m.seeds == 3 and m.aurac == pytest.approx((0.5 + 0.63) / 2)
    assert m.aurac_std == pytest.approx(0.015)   # AURACs 0.55, 0.565, 0.58
    # AURAC share over ranks 1..4: (0.5 + 0.63) / 2 / ((0.2 + 0.75) / 2)
    assert m.aurac_share == pytest.approx(1.13 / 0.95)
    assert m.within == (1,) and m.paid_off == "partly"            # above the grid at r1, below at r4
    assert outcome(m) == "pays off at ranks [1] only (cheaper than the grid)"
    assert (m.per_rank[4].accuracy, m.per_rank[4].grid) == (pytest.approx(0.63), pytest.approx(0.75))
    # per rank: Matryoshka wins rank 1 (0.5 vs 0.2); at rank 4 LoRA-4 (0.75) beats it (0.63)
    assert [(c.rank, c.arm, c.rule) for c in result.verdict] == [(1, "matryoshka-summed-diag-r4", "truncate"),
                                                                   (4, "lora-r4", "truncate")]
    # best accuracy anywhere 0.75 at rank 4 (nothing within 0.01 at rank 1)
    assert (result.recommended.rank, result.recommended.arm) == (4, "lora-r4")


def test_the_lr_with_the_best_mean_over_seeds_is_chosen_per_curve_on_validation_when_present():
    trials = [lora(4, s, {4: acc}, 1.0, lr=lr) for lr, accs in ((1e-3, (0.9, 0.1)), (3e-3, (0.6, 0.6)))
              for s, acc in enumerate(accs)]
    a = aggregate(trials).arms["lora-r4"]
    assert a.curves["truncate"].lr == 3e-3 and a.curves["truncate"].mean == (pytest.approx(0.6),)
    assert len(a.curves["truncate"].trial_ids) == 2
    # with validation curves the choice follows them, and the reported numbers stay test numbers
    trials = [mat(0, {1: 0.9, 4: 0.9}, lr=1e-3, val={1: 0.2, 4: 0.2}),
              mat(0, {1: 0.5, 4: 0.5}, lr=3e-3, val={1: 0.4, 4: 0.4})]
    result = aggregate(trials)
    c = result.arms["matryoshka-summed-diag-r4"].curves["truncate"]
    assert c.lr == 3e-3 and c.mean == (0.5, 0.5) and c.selected_on == "validation"
    # the selection bias removed: test would have picked lr 1e-3 and reported 0.9
    assert c.test_score == pytest.approx(0.5) and c.best_on_test == pytest.approx(0.9)
    assert result.selected_on == "validation"
    assert aggregate(trials[:1] + [mat(0, {1: 0.5, 4: 0.5}, lr=3e-3)]).selected_on == "test"  # one lacks validation


def test_a_searched_arm_is_chosen_on_its_first_seed_and_reported_over_all():
    # samples at three lrs on seed 0; the chosen one (3e-3) also ran seeds 1 and 2
    trials = [lora(4, 0, {4: acc}, 1.0, lr=lr) for lr, acc in ((1e-3, 0.5), (3e-3, 0.7), (1e-2, 0.6))]
    trials += [lora(4, s, {4: acc}, 1.0, lr=3e-3) for s, acc in ((1, 0.8), (2, 0.9))]
    c = aggregate(trials).arms["lora-r4"].curves["truncate"]
    assert c.lr == 3e-3 and len(c.trial_ids) == 3 and c.mean == (pytest.approx(0.8),)


def test_each_rule_gets_its_own_curve_and_lr():
    trials = [_trial(TrialSpec("matryoshka", 4, lr, 0, "summed", "diag"),
                     {"truncate": {1: 0.1 if lr == 1e-3 else 0.0, 4: 0.1}, "svd": {1: 0.3 if lr == 3e-3 else 0.2, 4: 0.9}},
                     1.0) for lr in (1e-3, 3e-3)]
    arm = aggregate(trials).arms["matryoshka-summed-diag-r4"]
    assert arm.curves["truncate"].lr == 1e-3 and arm.curves["svd"].lr == 3e-3


def test_verdict_takes_the_cheapest_candidate_within_tolerance():
    cands = [Candidate(4, "lora-r4", "truncate", 0.80, 1.0, 1.0), Candidate(4, "matryoshka", "svd", 0.795, 0.4, 0.4),
             Candidate(4, "lora-r16", "svd", 0.70, 2.0, 2.0), Candidate(1, "lora-r1", "truncate", 0.3, 0.9, 0.9)]
    assert cheapest_within(cands[:3], 0.80, 0.01).arm == "matryoshka"      # 0.795 is within 0.01, and cheaper
    assert cheapest_within(cands[:3], 0.80, 0.001).arm == "lora-r4"
    assert [(c.rank, c.arm) for c in verdict(cands, 0.01)] == [(1, "lora-r1"), (4, "matryoshka")]
    # recommended: the best accuracy anywhere is 0.80 (rank 4); rank 1 has nothing within 0.01
    assert (recommend(cands, 0.01).rank, recommend(cands, 0.01).arm) == (4, "matryoshka")
    assert recommend(cands, 0.6).rank == 1                                # a loose tolerance takes rank 1
    assert recommend([], 0.01) is None


def test_paid_off_when_cheaper_and_within_tolerance_at_every_rank():
    trials = [mat(0, {1: 0.45, 4: 0.9}, hours=1.0), lora(1, 0, {1: 0.45}, 1.0), lora(4, 0, {1: 0.0, 4: 0.905}, 1.0)]
    m = aggregate(trials, tolerance=0.01).best_matryoshka
    assert m.within == (1, 4) and m.paid_off == "yes" and m.cost_share == pytest.approx(0.5)
    assert outcome(m) == "pays off: as good as the grid at every rank, for less compute"
    trials[0] = mat(0, {1: 0.45, 4: 0.9}, hours=2.5)                       # as good, but dearer than the grid
    m = aggregate(trials, tolerance=0.01).best_matryoshka
    assert m.paid_off == "no" and outcome(m) == "no cheaper than the grid, though as good at every rank"
    trials[0] = mat(0, {1: 0.1, 4: 0.1}, hours=0.5)                        # cheaper, but worse everywhere
    m = aggregate(trials, tolerance=0.01).best_matryoshka
    assert m.paid_off == "no" and outcome(m) == "does not pay off: cheaper, but worse than the grid at every rank"


def test_the_cost_plot_grows_the_grid_and_marks_the_pareto_front():
    trials = [mat(0, {1: 0.5, 4: 0.5}, hours=1.0), lora(1, 0, {1: 0.4}, 1.0), lora(4, 0, {1: 0.0, 4: 0.9}, 1.0)]
    plot = aggregate(trials).cost_plot
    assert plot.ranks == (1, 4)
    pts = {p.label: p for p in plot.points}
    assert pts["LoRA r1"].device_hours == 1.0 and pts["LoRA r1"].aurac == pytest.approx(0.4)
    assert pts["LoRA r1"].flops == 1e12 and pts["LoRA r1+r4"].flops == 2e12      # the grid's cost adds up
    # r1 + r4: rank 1 from LoRA-1 (0.4), rank 4 from LoRA-4 (0.9)
    assert pts["LoRA r1+r4"].device_hours == 2.0 and pts["LoRA r1+r4"].aurac == pytest.approx(0.65)
    assert pts["matryoshka-summed-diag-r4 [truncate]"].aurac == pytest.approx(0.5)
    # LoRA-4 alone (truncated): rank 1 gets 0.0
    assert pts["lora-r4 [truncate]"].aurac == pytest.approx(0.45)
    assert {p.label for p in plot.points if p.pareto} == {"matryoshka-summed-diag-r4 [truncate]", "LoRA r1+r4"}


def test_the_grid_is_each_rank_at_its_least_budget_and_longer_lora_runs_are_arms_of_their_own():
    trials = [lora(1, 0, {1: 0.2}, 1.0), lora(4, 0, {1: 0.1, 4: 0.6}, 1.0),
              lora(1, 0, {1: 0.4}, 3.0, budget=3), lora(4, 0, {1: 0.2, 4: 0.9}, 3.0, budget=3),
              mat(0, {1: 0.3, 4: 0.7}, hours=1.0, budget=1.5)]
    result = aggregate(trials, tolerance=0.01)
    assert result.envelope == {1: 0.2, 4: 0.6} and result.grid.runs == 2         # budget 1: the grid
    assert result.grid.device_hours == 2.0 and result.grid.spent_device_hours == 8.0
    assert set(result.arms) == {"lora-r1", "lora-r4", "lora-r1-x3", "lora-r4-x3", "matryoshka-summed-diag-r4-x1.5"}
    assert [(c.rank, c.arm) for c in result.verdict] == [(1, "lora-r1-x3"), (4, "lora-r4-x3")]   # best per rank
    assert result.best_matryoshka.within == (1, 4) and result.best_matryoshka.budget == 1.5


def test_the_frontier_compares_the_best_one_run_and_the_best_grid_at_every_compute_and_finds_both_break_evens():
    """Hand-made: LoRA-1 and LoRA-4 at budgets 1 and 2 (4 grids), Matryoshka at 1, 2 and 3; FLOPs = budget."""
    trials = [lora(1, 0, {1: 0.2}, 1.0), lora(1, 0, {1: 0.4}, 2.0, budget=2),
              lora(4, 0, {1: 0.0, 4: 0.6}, 1.0), lora(4, 0, {1: 0.0, 4: 0.9}, 2.0, budget=2),
              mat(0, {1: 0.1, 4: 0.5}, 1.0), mat(0, {1: 0.3, 4: 0.65}, 2.0, budget=2),
              mat(0, {1: 0.4, 4: 0.9}, 3.0, budget=3)]
    f = aggregate(trials, tolerance=0.01).compute_frontier
    assert sorted((g.label, g.flops) for g in f.grids) == [
        ("LoRA r1x1 + r4x1", 2e12), ("LoRA r1x1 + r4x2", 3e12), ("LoRA r1x2 + r4x1", 3e12), ("LoRA r1x2 + r4x2", 4e12)]
    rows = {r.flops: r for r in f.rows}
    assert sorted(rows) == [1e12, 2e12, 3e12, 4e12] and rows[1e12].grid is None   # no grid costs 1
    assert rows[2e12].one_run.label == "matryoshka-summed-diag-r4-x2 [truncate]"
    assert rows[2e12].grid.aurac == pytest.approx(0.4)                            # (0.2 + 0.6) / 2
    assert rows[3e12].grid.label == "LoRA r1x1 + r4x2" and rows[3e12].grid.aurac == pytest.approx(0.55)
    # one run matches the envelope (least budgets: 0.2, 0.6) from x2 (0.3, 0.65) = the grid's 2 TFLOPs
    assert f.one_run_matches_grid.flops == 2e12 and f.one_run_matches_grid_share == pytest.approx(1.0)
    # the best one run (x3: 0.4, 0.9) is matched only by the grid at 2x on both ranks
    assert f.best_one_run.flops == 3e12
    assert f.grid_matches_best_one_run.label == "LoRA r1x2 + r4x2"
    assert f.grid_matches_best_one_run_share == pytest.approx(2.0)
