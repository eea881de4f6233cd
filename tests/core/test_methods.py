"""The registries of the method's variants (mlora_core/methods.py): each entry carries its behaviour,
so a variant is one entry: what plan, cost, validation, P, the passes and serving read."""
import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import mlora_core as mc
from mlora_core.functions import function_rows
from mlora_core.methods import (
    BASES,
    METHODS,
    OBJECTIVES,
    RULES,
    SCALINGS,
    SCHEDULES,
    TRAINED,
    Rule,
    default_rules,
    passes_per_step,
)
from mlora_core.objectives import passes

CORE = Path(mc.__file__).parent


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_each_objective_states_the_passes_the_training_loop_makes(objective):
    """The registry's passes per step (what the plan prices) is what objectives.passes() runs."""
    cfg = mc.AdapterConfig(method="matryoshka", rank=8, train_ranks=(1, 2, 8), objective=objective)
    made = passes(cfg, 6, seed=0, worker=0, micro_batch=0)
    assert OBJECTIVES[objective].n_passes(len(cfg.train_ranks)) == len(made)
    assert passes_per_step("matryoshka", objective, 8, cfg.train_ranks) == (len(made), 8)
    assert {p.flop_rank for p in made} == {8}
    assert all((p.p_rows is not None) == OBJECTIVES[objective].example_rows for p in made)
    assert set(OBJECTIVES) == {"summed", "per_rank", "stratified"}


def test_methods_own_their_objectives_and_dylora_runs_at_the_mean_of_r():
    assert mc.AdapterConfig(method="lora").objective == "summed"        # a method's own, not a Matryoshka knob
    for method in ("lora", "dylora"):
        with pytest.raises(ValueError, match=f"^objective: method '{method}' trains with"):
            mc.AdapterConfig(method=method, objective="stratified")
    assert passes_per_step("dylora", "summed", 8, (1, 2, 4, 8)) == (1, 15 / 4)
    assert set(METHODS) == {"lora", "dylora", "matryoshka"}
    # only DyLoRA draws a rank a step: its P then is the rank-t sub-adapter's
    assert [m for m, entry in METHODS.items() if entry.step_p] == ["dylora"]


def test_p_is_the_methods_unless_the_objective_trains_another():
    """Matryoshka's P is its nested sum under summed; the nested losses train a plain LoRA at full rank."""
    c = lambda **kw: mc.AdapterConfig(rank=4, train_ranks=(1, 2, 4), scaling="rank", alpha=4.0, **kw)  # noqa: E731
    assert mc.p_vector(c(method="matryoshka")).tolist() == [7, 3, 1, 1]
    for objective in ("per_rank", "stratified"):
        assert mc.p_vector(c(method="matryoshka", objective=objective)).tolist() == [1, 1, 1, 1]
    assert mc.p_vector(c(method="dylora"), train_rank=2).tolist() == [2, 2, 0, 0]
    assert mc.p_vector(c(method="lora"), train_rank=2).tolist() == [1, 1, 1, 1]   # no step P: ignored
    with pytest.raises(ValueError, match=r"^train_rank: 5 is not an integer in \[1, 4\]$"):
        mc.p_vector(c(method="dylora"), train_rank=5)


def test_a_rule_trained_at_full_rank_serves_the_trained_function_there():
    """prefix, svd and magnitude at k = r are the trained update for any P; truncate is not for summed."""
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


def test_a_new_rule_is_one_entry(monkeypatch, tmp_path):
    """A rule registered at run time (serve the last k components) works in forward, merge, export and
    the function rows with no other change: no module branches on a rule's name."""
    from mlora_core.methods import Basis
    last_first = Basis("reversed", lambda a, b, p: (a.flip(0), b.flip(1), p.flip(0)))
    monkeypatch.setitem(RULES, "last", Rule("last", last_first, lambda c, p, k: p[:k], True, "the last k"))
    monkeypatch.setitem(BASES, "reversed", last_first)
    model = mc.add_adapters(nn.Sequential(nn.Linear(6, 5, dtype=torch.float64)),
                            mc.AdapterConfig(method="lora", rank=4, scaling="none", target_modules=["0"]))
    layer = model[0]
    with torch.no_grad():
        layer.lora_B.normal_()
    want = layer.lora_B[:, 2:] @ layer.lora_A[2:]          # the last two components, P = 1
    torch.testing.assert_close(layer.delta_weight(2, "last"), want, rtol=0, atol=1e-15)
    x = torch.randn(3, 6, dtype=torch.float64)
    model.eval()
    mc.set_rank(model, 2, "last")
    served = model(x)
    torch.testing.assert_close(served, layer.base(x) + x @ want.T, rtol=1e-12, atol=1e-12)
    mc.set_rank(model, None)
    [(basis, _, rows)] = function_rows(model, [(2, "last")])
    mc.inject.set_function_rows(model, (basis, rows.expand(3, -1)))
    torch.testing.assert_close(model(x), served, rtol=1e-12, atol=1e-12)
    mc.inject.set_function_rows(model, None)
    mc.save_adapter(model, tmp_path / "last", rank=2, rule="last")
    reloaded = mc.load_adapter(nn.Sequential(nn.Linear(6, 5, dtype=torch.float64)), tmp_path / "last")
    reloaded[0].base.load_state_dict(layer.base.state_dict())
    torch.testing.assert_close(reloaded[0].delta_weight(), want, rtol=0, atol=1e-15)


def test_defaults_are_declared_by_the_entries():
    assert default_rules() == ("truncate", "prefix", "svd")      # magnitude is opt-in
    assert TRAINED is RULES["truncate"].basis is RULES["prefix"].basis
    assert set(BASES) == {"trained", "svd", "magnitude"}
    assert set(SCALINGS) == {"none", "rank", "sqrt"} and set(SCHEDULES) == {"diag", "binary", "geometric", "top"}


def _name_comparisons(path: Path) -> list[str]:
    """`x == "name"` / `x != "name"` / `x in ("name", ...)` with a registered variant's name."""
    names = set(METHODS) | set(OBJECTIVES) | set(RULES) | set(SCALINGS) | set(SCHEDULES)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            consts = [c for c in [node.left, *node.comparators] for c in ([c] if not isinstance(c, ast.Tuple)
                                                                        else c.elts)]
            hits = [c.value for c in consts if isinstance(c, ast.Constant) and c.value in names]
            found += [f"{path.name}:{node.lineno} {h}" for h in hits]
    return found


@pytest.mark.parametrize("module", ["layer.py", "inject.py", "export.py", "p_schedule.py", "objectives.py",
                                    "functions.py", "config.py", "cost.py"])
def test_no_module_branches_on_a_variants_name(module):
    assert _name_comparisons(CORE / module) == []
