"""Rank-k inference rules (methods.RULES, served by layer.py): truncate, prefix and svd on hand-set factors
with exact answers, and what every registered rule must keep (forward = merge = export = function rows)."""
import math

import pytest
import torch
from torch import nn

import mlora_core as mc
from mlora_core.functions import function_key, function_rows
from mlora_core.layer import AdapterLayer, svd_factors
from mlora_core.methods import RULES, SVD

from .helpers import tiny_model


def hand_layer(method="matryoshka", rank=4, **cfg):
    layer = AdapterLayer(nn.Linear(6, 5, dtype=torch.float64),
                         mc.AdapterConfig(method=method, rank=rank, scaling="rank", alpha=4.0, **cfg))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        layer.lora_A.copy_(torch.randn(rank, 6, generator=g, dtype=torch.float64))
        layer.lora_B.copy_(torch.randn(5, rank, generator=g, dtype=torch.float64))
    return layer


def test_svd_factors_are_the_eckart_young_optimum():
    layer = hand_layer()                     # R = {1, 2, 4}, rank scaling: P = (7, 3, 1, 1)
    assert layer.p.tolist() == [7, 3, 1, 1]
    delta = (layer.lora_B @ torch.diag(layer.p) @ layer.lora_A).detach()
    sigma = torch.linalg.svdvals(delta)
    a_s, b_s = svd_factors(layer.lora_A, layer.lora_B, layer.p)
    for k in range(1, 5):
        err = torch.linalg.matrix_norm(delta - b_s[:, :k] @ a_s[:k])
        assert float(err) == pytest.approx(float(sigma[k:].square().sum().sqrt()), abs=1e-12)
    # the columns carry the singular values, in order; A_s has orthonormal rows
    torch.testing.assert_close(b_s.norm(dim=0), sigma[:4], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a_s @ a_s.T, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)


def test_svd_of_a_rank_one_update_is_exact_by_hand():
    # A = [[1, 0], [0, 1]], B = [[3, 0], [4, 0]], P = (1, 1): the update [[3, 0], [4, 0]] has rank 1,
    # singular value 5, right singular vector e1, left (0.6, 0.8)
    a = torch.eye(2, dtype=torch.float64)
    b = torch.tensor([[3.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    a_s, b_s = svd_factors(a, b, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(b_s[:, 0], torch.tensor([3.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(a_s[0], torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(b_s[:, 1], torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_svd_signs_are_deterministic_and_fp32_weights_work():
    layer = hand_layer()
    a1, b1 = svd_factors(layer.lora_A, layer.lora_B, layer.p)
    a2, b2 = svd_factors(-layer.lora_A, -layer.lora_B, layer.p)   # the same update
    torch.testing.assert_close(a1, a2, rtol=0, atol=1e-12)
    torch.testing.assert_close(b1, b2, rtol=0, atol=1e-12)
    assert all(float(b1[:, j].abs().max()) == float(b1[:, j].max()) for j in range(4))
    a32, b32 = svd_factors(layer.lora_A.float(), layer.lora_B.float(), layer.p.float())
    assert a32.dtype == torch.float32 and b32.dtype == torch.float32   # fp64 inside, the weights' dtype out
    torch.testing.assert_close(b32 @ a32, (b1 @ a1).float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["matryoshka", "lora"])
def test_each_rule_computes_its_formula(method):
    layer = hand_layer(method)
    x = torch.randn(3, 6, dtype=torch.float64)
    A, B, p, base = layer.lora_A, layer.lora_B, layer.p, layer.base(x)
    a_s, b_s = svd_factors(A, B, p)
    for k in (1, 2, 4):
        expected = {"truncate": base + (4.0 / k) * x @ A[:k].T @ B[:, :k].T,
                    "prefix": base + x @ A[:k].T @ torch.diag(p[:k]) @ B[:, :k].T,
                    "svd": base + x @ a_s[:k].T @ b_s[:, :k].T}
        for rule, want in expected.items():
            layer.rank, layer.rule = k, rule
            torch.testing.assert_close(layer(x), want, rtol=1e-10, atol=1e-10)
    # at full rank, prefix and svd are the trained update itself (the raw factors, exactly)
    layer.rank, layer.rule = 4, "svd"
    trained = layer.factors(None)
    assert all(u is v for u, v in zip(layer.factors(4, "svd"), trained))
    assert all(u is v for u, v in zip(layer.factors(4, "prefix"), trained))
    layer.rank = None
    layer.eval()
    torch.testing.assert_close(layer(x), base + x @ A.T @ torch.diag(p) @ B.T, rtol=1e-12, atol=1e-12)
    # and the SVD factors at full rank rebuild it to fp precision
    torch.testing.assert_close(b_s @ a_s, (B * p) @ A, rtol=1e-10, atol=1e-10)


def test_svd_cache_follows_the_weights():
    layer = hand_layer()
    a1, _, _ = layer.basis(SVD)
    assert layer.basis(SVD)[0] is a1           # cached
    with torch.no_grad():
        layer.lora_B.mul_(2.0)                 # a training step changes B in place
    a2, b2, _ = layer.basis(SVD)
    assert a2 is not a1
    torch.testing.assert_close(b2 @ a2, (layer.lora_B * layer.p) @ layer.lora_A, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rule", list(RULES))
def test_merge_under_each_rule_equals_serving_and_unmerge_restores(rule):
    model, targets = tiny_model("llama")
    mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=4, target_modules=targets))
    for _, layer in mc.adapter_layers(model):
        layer.lora_B.data.normal_(std=0.2)
    ids = torch.tensor([[3, 9, 1, 22, 7]])
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    mc.set_rank(model, 2, rule)
    with torch.no_grad():
        served = model(ids).logits
    mc.set_rank(model, None)
    mc.merge_adapters(model, 2, rule=rule)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, served, rtol=1e-4, atol=1e-5)
    mc.unmerge_adapters(model)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, w0[n], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="^rule:"):
        mc.set_rank(model, 2, "best")


@pytest.mark.parametrize("rule", list(RULES))
def test_export_at_rank_k_under_each_rule_loads_in_peft_and_in_mlora(rule, tmp_path):
    from peft import PeftModel

    model, targets = tiny_model("llama")
    mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=4, target_modules=targets))
    for _, layer in mc.adapter_layers(model):
        layer.lora_B.data.normal_(std=0.2)
    ids = torch.tensor([[3, 9, 1, 22, 7]])
    mc.set_rank(model, 2, rule)
    with torch.no_grad():
        ours = model(ids).logits
    mc.save_adapter(model, tmp_path / rule, rank=2, rule=rule)
    peft_model = PeftModel.from_pretrained(tiny_model("llama")[0], tmp_path / rule).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, ours, rtol=1e-4, atol=1e-5)
    reloaded = mc.load_adapter(tiny_model("llama")[0], tmp_path / rule)
    mc.set_rank(reloaded, 2)       # ours, reloaded, at its saved rank with the default rule
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, ours, rtol=1e-4, atol=1e-5)
    config, meta = mc.read_adapter_config(tmp_path / rule)
    assert meta["saved_rank"] == 2 and meta["rule"] == rule and config.rank == 2


def test_an_svd_export_cut_further_is_the_svd_at_that_rank(tmp_path):
    model, targets = tiny_model("llama")
    mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=4, target_modules=targets))
    for _, layer in mc.adapter_layers(model):
        layer.lora_B.data.normal_(std=0.2)
    mc.save_adapter(model, tmp_path / "svd3", rank=3, rule="svd")
    reloaded = mc.load_adapter(tiny_model("llama")[0], tmp_path / "svd3")
    ids = torch.tensor([[3, 9, 1, 22, 7]])
    mc.set_rank(model, 1, "svd")
    mc.set_rank(reloaded, 1)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-5)


def test_svd_of_a_bf16_base_is_computed_in_high_precision():
    layer = AdapterLayer(nn.Linear(64, 48).to(torch.bfloat16), mc.AdapterConfig(rank=8))
    assert layer.lora_A.dtype == torch.float32     # adapters stay fp32 on a bf16 base
    layer.lora_B.data.normal_()
    a_s, b_s, _ = layer.basis(SVD)
    delta = (layer.lora_B.detach().double() * layer.p.double()) @ layer.lora_A.detach().double()
    sigma = torch.linalg.svdvals(delta)
    err = torch.linalg.matrix_norm(delta - (b_s[:, :3] @ a_s[:3]).double())
    assert float(err) == pytest.approx(float(sigma[3:].square().sum().sqrt()), rel=1e-5)
    assert math.isfinite(float(err))


@pytest.mark.parametrize("method", ["matryoshka", "lora"])
def test_function_rows_of_every_rule_compute_what_set_rank_serves(method):
    """functions.function_rows: each (rank, rule) as a P row on its rule's basis, looked up by name in
    every layer; equal function keys are the same function."""
    model = mc.add_adapters(nn.Sequential(nn.Linear(6, 5, dtype=torch.float64), nn.Linear(5, 5, dtype=torch.float64)),
                            mc.AdapterConfig(method=method, rank=4, scaling="rank", alpha=4.0, target_modules=["0", "1"]))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():      # two layers, each its own weights (layer 1's components in the reverse order
        for layer in model:    # of size): one row must serve both
            layer.lora_B.normal_(generator=g)
        model[1].lora_B.mul_(torch.tensor([1e-3, 1e-2, 1.0, 10.0], dtype=torch.float64))
    model.eval()
    functions = [(k, rule) for k in (1, 2, 4) for rule in RULES]
    x = torch.randn(1, 6, dtype=torch.float64)
    served = {}
    for k, rule in functions:
        mc.set_rank(model, k, rule)
        served[k, rule] = model(x)[0]
    mc.set_rank(model, None)
    groups = function_rows(model, functions)
    assert {basis for basis, _, _ in groups} == {r.basis.name for r in RULES.values()}
    for basis, idx, rows in groups:
        mc.inject.set_function_rows(model, (basis, rows))
        out = model(x.expand(len(idx), -1))
        mc.inject.set_function_rows(model, None)
        for j, i in enumerate(idx):
            torch.testing.assert_close(out[j], served[functions[i]], rtol=1e-12, atol=1e-12)
    keys = {f: function_key(model, *f) for f in functions}
    for f in functions:
        for g in functions:
            if keys[f] == keys[g]:
                torch.testing.assert_close(served[f], served[g], rtol=0, atol=0)
    # at full rank every rule trained there is the trained update: one key; LoRA's truncate too
    at_r = {keys[4, rule] for rule in RULES if RULES[rule].trained_at_full_rank or method == "lora"}
    assert len(at_r) == 1 and keys[1, "svd"] != keys[1, "prefix"]
