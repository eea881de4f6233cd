"""The registries of the method's names (mlora_core/methods.py): what plan, cost and validation read."""
import pytest

import mlora_core as mc
from mlora_core.methods import METHODS, OBJECTIVES, RULES, passes_per_step
from mlora_core.objectives import passes


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_each_objective_states_the_passes_the_training_loop_makes(objective):
    """The registry's passes per step (what the plan prices) is what objectives.passes() runs."""
    cfg = mc.AdapterConfig(method="matryoshka", rank=8, train_ranks=(1, 2, 8), objective=objective)
    made = passes(cfg, 6, seed=0, worker=0, micro_batch=0)
    assert OBJECTIVES[objective].passes(len(cfg.train_ranks)) == len(made)
    assert passes_per_step("matryoshka", objective, 8, cfg.train_ranks) == (len(made), 8)
    assert {p.flop_rank for p in made} == {8}


def test_methods_own_their_objectives_and_dylora_runs_at_the_mean_of_r():
    assert mc.AdapterConfig(method="lora").objective == "summed"        # a method's own, not a Matryoshka knob
    for method in ("lora", "dylora"):
        with pytest.raises(ValueError, match=f"^objective: method '{method}' trains with"):
            mc.AdapterConfig(method=method, objective="stratified")
    assert passes_per_step("dylora", "summed", 8, (1, 2, 4, 8)) == (1, 15 / 4)
    assert set(METHODS) == {"lora", "dylora", "matryoshka"}


def test_a_rule_trained_at_full_rank_serves_the_trained_function_there():
    """prefix and svd at k = r are the trained update for any P; truncate is not for the summed objective."""
    import torch
    from torch import nn
    model = mc.add_adapters(nn.Sequential(nn.Linear(6, 5, dtype=torch.float64)),
                            mc.AdapterConfig(method="matryoshka", rank=4, target_modules=["0"]))
    layer = model[0]
    with torch.no_grad():
        layer.lora_B.normal_()
    trained = layer.delta_weight(None)
    for name, rule in RULES.items():
        same = torch.allclose(layer.delta_weight(4, name), trained, atol=1e-10)
        assert same == rule.trained_at_full_rank, name
    with pytest.raises(ValueError, match="^rule: unknown rule 'best'"):
        mc.set_rank(model, 2, "best")
