import random

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

import mlora_core as mc
from mlora_core.layer import AdapterLayer

torch.manual_seed(0)


def make_layer(base=None, dtype=torch.float64, **cfg):
    base = base or nn.Linear(12, 10, dtype=dtype)
    layer = AdapterLayer(base, mc.AdapterConfig(**{"rank": 8, **cfg}))
    with torch.no_grad():  # B = 0 at init; give it values so the adapter path is exercised
        layer.lora_B.normal_()
    return layer


def base_out(layer, x):
    return layer.base(x)


@pytest.mark.parametrize("schedule", ["diag", "binary", "geometric", "top"])
@pytest.mark.parametrize("scaling", ["none", "rank", "sqrt"])
def test_matryoshka_forward_is_sum_of_nested_subadapters(schedule, scaling):
    layer = make_layer(method="matryoshka", scaling=scaling, alpha=3.0, p_schedule=schedule)
    x = torch.randn(5, 12, dtype=torch.float64)
    A, B, c = layer.lora_A, layer.lora_B, layer.config
    R = c.train_ranks
    w = {"diag": [1.0] * len(R), "binary": [1 / len(R)] * len(R), "geometric": [0.5 ** i for i in range(len(R))],
         "top": [0.5 ** (len(R) - 1 - i) for i in range(len(R))]}[schedule]
    explicit = sum(wi * mc.scale(c, t) * (x @ A[:t].T @ B[:, :t].T) for wi, t in zip(w, R))
    assert torch.allclose(layer(x), base_out(layer, x) + explicit, rtol=1e-12, atol=1e-12)


def test_lora_forward_is_constant_scale():
    layer = make_layer(method="lora", scaling="rank", alpha=16.0)
    x = torch.randn(3, 12, dtype=torch.float64)
    expected = base_out(layer, x) + 2.0 * (x @ layer.lora_A.T @ layer.lora_B.T)  # 16/8
    assert torch.allclose(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_dylora_truncates_to_sampled_rank_and_samples_every_train_rank():
    base = nn.Sequential(nn.Linear(12, 10, dtype=torch.float64))
    model = mc.add_adapters(base, mc.AdapterConfig(method="dylora", rank=8, scaling="sqrt", target_modules=["0"]))
    layer = model[0]
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 12, dtype=torch.float64)
    rng, seen = random.Random(0), set()
    model.train()
    for _ in range(200):
        t = mc.sample_train_rank(model, layer.config, rng)
        seen.add(t)
        expected = layer.base(x) + mc.scale(layer.config, t) * (x @ layer.lora_A[:t].T @ layer.lora_B[:, :t].T)
        assert torch.allclose(model(x), expected, rtol=1e-12, atol=1e-12)
    assert seen == {1, 2, 4, 8}
    model.eval()  # outside training, DyLoRA runs at full rank
    full = layer.base(x) + mc.scale(layer.config, 8) * (x @ layer.lora_A.T @ layer.lora_B.T)
    assert torch.allclose(model(x), full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["lora", "dylora", "matryoshka"])
def test_truncated_output_equals_plain_lora_of_rank_k(method):
    layer = make_layer(method=method, scaling="rank", alpha=4.0)
    x = torch.randn(4, 12, dtype=torch.float64)
    for k in (1, 3, 8):
        plain = AdapterLayer(layer.base, mc.AdapterConfig(method="lora", rank=k, scaling="rank", alpha=4.0))
        with torch.no_grad():
            plain.lora_A.copy_(layer.lora_A[:k])
            plain.lora_B.copy_(layer.lora_B[:, :k])
        layer.rank = k
        assert torch.allclose(layer(x), plain(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("base_factory", [lambda: nn.Linear(12, 10), lambda: Conv1D(10, 12)])
@pytest.mark.parametrize("rank", [None, 2, 8])
def test_merge_equals_unmerged_and_unmerge_restores(base_factory, rank):
    layer = make_layer(base=base_factory(), method="matryoshka", scaling="sqrt", alpha=2.0)
    layer.lora_B.data = layer.lora_B.data.float()
    x = torch.randn(6, 12)
    w0 = layer.base.weight.detach().clone()
    layer.rank = rank
    y_unmerged = layer(x)
    layer.rank = None
    layer.merge(rank)
    assert torch.allclose(layer(x), y_unmerged, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(layer.base.weight, w0)
    layer.unmerge()
    assert torch.allclose(layer.base.weight, w0, rtol=0, atol=1e-6)


def test_conv1d_matches_linear_with_transposed_weight():
    conv = Conv1D(10, 12)
    lin = nn.Linear(12, 10)
    with torch.no_grad():
        lin.weight.copy_(conv.weight.T)
        lin.bias.copy_(conv.bias)
    cfg = dict(method="matryoshka", scaling="rank", alpha=8.0)
    a, b = make_layer(base=conv, dtype=None, **cfg), make_layer(base=lin, dtype=None, **cfg)
    with torch.no_grad():
        b.lora_A.copy_(a.lora_A)
        b.lora_B.copy_(a.lora_B)
    x = torch.randn(2, 3, 12)
    assert torch.allclose(a(x), b(x), atol=1e-5)


def test_only_a_and_b_get_gradients():
    model = nn.Sequential(nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 4))
    mc.add_adapters(model, mc.AdapterConfig(rank=4, target_modules=["0", "2"]))
    model(torch.randn(3, 12)).sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"0.lora_A", "0.lora_B", "2.lora_A", "2.lora_B"}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == with_grad


def test_init_is_identity_and_a_is_kaiming_uniform():
    layer = AdapterLayer(nn.Linear(64, 32), mc.AdapterConfig(rank=8))
    x = torch.randn(4, 64)
    assert torch.equal(layer(x), layer.base(x))  # B = 0
    bound = 1 / 64 ** 0.5  # kaiming_uniform(a=sqrt(5)) on fan_in=64
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.5 * bound


def test_set_rank_validates():
    model = mc.add_adapters(nn.Sequential(nn.Linear(4, 4)), mc.AdapterConfig(rank=4, target_modules=["0"]))
    for bad in (0, 5):
        with pytest.raises(ValueError, match="rank"):
            mc.set_rank(model, bad)
    mc.merge_adapters(model, 2)
    with pytest.raises(RuntimeError, match="unmerge"):
        mc.set_rank(model, 2)


def test_deepcopy_keeps_an_unmerged_adapter_unmerged():
    import copy

    import mlora_core as mc
    from tests.core.helpers import tiny_model
    model, targets = tiny_model("llama")
    mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=4, target_modules=targets))
    clone = copy.deepcopy(model)
    mc.set_rank(clone, 2)  # raised "adapters are merged" when `merged` was an identity sentinel
    mc.merge_adapters(clone, rank=2)
    assert all(layer.merged for _, layer in mc.adapter_layers(clone))
    assert not any(layer.merged for _, layer in mc.adapter_layers(model))
