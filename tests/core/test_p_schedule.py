import math

import pytest
import torch

import mlora_core as mc
from mlora_core.layer import AdapterLayer


def test_default_ranks_are_powers_of_two():
    c = mc.AdapterConfig(rank=16)
    assert c.train_ranks == (1, 2, 4, 8, 16) and c.eval_ranks == (1, 2, 4, 8, 16)
    assert mc.AdapterConfig(rank=12).train_ranks == (1, 2, 4, 8, 12)


@pytest.mark.parametrize("scaling,s", [("none", lambda t: 1.0), ("rank", lambda t: 16 / t),
                                       ("sqrt", lambda t: 16 / math.sqrt(t))])
def test_matryoshka_diag_p_is_nested_sum_of_scales(scaling, s):
    c = mc.AdapterConfig(method="matryoshka", rank=8, scaling=scaling, alpha=16.0)
    p = mc.p_vector(c, dtype=torch.float64)
    # R = {1, 2, 4, 8}: P_1 = s1+s2+s4+s8, P_2 = s2+s4+s8, P_3..4 = s4+s8, P_5..8 = s8
    expected = [s(1) + s(2) + s(4) + s(8), s(2) + s(4) + s(8)] + [s(4) + s(8)] * 2 + [s(8)] * 4
    assert torch.allclose(p, torch.tensor(expected, dtype=torch.float64))
    binary = mc.p_vector(c.__class__(**{**c.to_dict(), "p_schedule": "binary"}), dtype=torch.float64)
    assert torch.allclose(binary, p / 4)


def test_rank_scaling_exact_values():
    p = mc.p_vector(mc.AdapterConfig(method="matryoshka", rank=16, scaling="rank", alpha=16.0))
    assert p.tolist() == [31, 15, 7, 7, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1]


def test_geometric_schedule_weights_halve_per_rank():
    c = mc.AdapterConfig(method="matryoshka", rank=4, scaling="none", p_schedule="geometric")
    assert mc.p_vector(c).tolist() == [1 + 0.5 + 0.25, 0.5 + 0.25, 0.25, 0.25]


def test_top_schedule_weights_double_per_rank():
    c = mc.AdapterConfig(method="matryoshka", rank=4, scaling="none", p_schedule="top")
    assert mc.p_vector(c).tolist() == [0.25 + 0.5 + 1, 0.5 + 1, 1, 1]


def test_lora_p_is_constant_scale_of_max_rank():
    c = mc.AdapterConfig(method="lora", rank=8, scaling="rank", alpha=4.0)
    assert mc.p_vector(c).tolist() == [0.5] * 8


def test_dylora_p_truncates_at_sampled_rank():
    c = mc.AdapterConfig(method="dylora", rank=8, scaling="sqrt", alpha=2.0)
    assert mc.p_vector(c, train_rank=4).tolist() == pytest.approx([1.0] * 4 + [0.0] * 4)
    assert mc.p_vector(c).tolist() == pytest.approx([2 / math.sqrt(8)] * 8)


def test_p_belongs_to_each_layer_not_a_process_cache():
    lin = lambda: torch.nn.Linear(4, 4)  # noqa: E731
    a = AdapterLayer(lin(), mc.AdapterConfig(method="matryoshka", rank=4, scaling="rank", alpha=4.0))
    b = AdapterLayer(lin(), mc.AdapterConfig(method="matryoshka", rank=4, scaling="none"))
    c = AdapterLayer(lin(), mc.AdapterConfig(method="lora", rank=4, scaling="rank", alpha=4.0))
    assert a.p.tolist() == [4 + 2 + 1, 2 + 1, 1, 1]
    assert b.p.tolist() == [3, 2, 1, 1]
    assert c.p.tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("kwargs,field", [
    (dict(rank=0), "rank"), (dict(rank=-3), "rank"), (dict(rank=2.5), "rank"),
    (dict(rank=4, train_ranks=(8,)), "train_ranks"), (dict(rank=4, eval_ranks=(0, 2)), "eval_ranks"),
    (dict(method="qlora"), "method"), (dict(scaling="log"), "scaling"),
    (dict(p_schedule="cosine"), "p_schedule"), (dict(alpha=0), "alpha"), (dict(dropout=1.5), "dropout"),
    (dict(target_modules=()), "target_modules"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        mc.AdapterConfig(**kwargs)


def test_config_dict_round_trip():
    c = mc.AdapterConfig(method="dylora", rank=8, train_ranks=(2, 8), target_modules=["q_proj"])
    assert mc.AdapterConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown keys"):
        mc.AdapterConfig.from_dict({"rnak": 4})


def test_one_rank_bound_check_everywhere(tmp_path):
    """config.check_rank: the one check of a rank k of an adapter of max rank r, one line naming the field."""
    from mlora_core.config import check_rank
    from mlora_core.p_schedule import nested_p
    assert check_rank(3, 4) == 3
    for bad in (0, 5, 2.0, True, "2"):
        with pytest.raises(ValueError, match=rf"^rank: {bad!r} is not an integer in \[1, 4\]$"):
            check_rank(bad, 4)
    model = mc.add_adapters(torch.nn.Sequential(torch.nn.Linear(4, 4)), mc.AdapterConfig(rank=4, target_modules=["0"]))
    line = r"^rank: 5 is not an integer in \[1, 4\]$"
    for call in (lambda: mc.set_rank(model, 5), lambda: model[0].factors(5), lambda: model[0].delta_weight(5, "svd"),
                 lambda: mc.merge_adapters(model, 5), lambda: mc.save_adapter(model, tmp_path / "a", rank=5)):
        with pytest.raises(ValueError, match=line):
            call()
    with pytest.raises(ValueError, match=r"^train_rank: 0 is not an integer in \[1, 4\]$"):
        nested_p(model[0].config, 0)
    with pytest.raises(ValueError, match=r"^eval_ranks: 8 is not an integer in \[1, 4\]$"):
        mc.AdapterConfig(rank=4, eval_ranks=(1, 8))
