"""The magnitude rule (one entry in methods.RULES): serve the k trained components of largest
||B_j|| |P_j| ||A_j||, on hand-set factors with exact answers."""
import pytest
import torch
from torch import nn

import mlora_core as mc
from mlora_core.methods import default_rules

from .helpers import tiny_model


def hand_lora():
    """LoRA, scaling none (P = 1): A = I_3, B's columns of norm 1, 3, 2, so sizes 1, 3, 2."""
    model = mc.add_adapters(nn.Sequential(nn.Linear(3, 4, dtype=torch.float64)),
                            mc.AdapterConfig(method="lora", rank=3, scaling="none", target_modules=["0"]))
    layer = model[0]
    with torch.no_grad():
        layer.lora_A.copy_(torch.eye(3, dtype=torch.float64))
        layer.lora_B.copy_(torch.tensor([[1.0, 0, 0], [0, 3, 0], [0, 0, 2], [0, 0, 0]], dtype=torch.float64))
    return model, layer


def test_magnitude_serves_the_largest_components_where_prefix_serves_the_first():
    model, layer = hand_lora()
    b = layer.lora_B.detach()
    assert torch.equal(layer.delta_weight(1, "magnitude"), b[:, [1]] @ torch.eye(3, dtype=torch.float64)[[1]])
    assert torch.equal(layer.delta_weight(2, "magnitude"), b[:, [1, 2]] @ torch.eye(3, dtype=torch.float64)[[1, 2]])
    # its error is the dropped components' size: 1 at k = 2 (prefix drops the size-2 one: 2)
    full = layer.delta_weight(None).detach()
    err = lambda rule, k: float(torch.linalg.matrix_norm(full - layer.delta_weight(k, rule).detach()))  # noqa: E731
    assert (err("magnitude", 1), err("magnitude", 2)) == (pytest.approx(5 ** 0.5), pytest.approx(1.0))
    assert (err("prefix", 1), err("prefix", 2)) == (pytest.approx(13 ** 0.5), pytest.approx(2.0))
    # orthogonal components: magnitude is the SVD's optimum; and at k = r the trained factors themselves
    for k in (1, 2):
        torch.testing.assert_close(layer.delta_weight(k, "magnitude"), layer.delta_weight(k, "svd"),
                                   rtol=0, atol=1e-12)
    assert all(u is v for u, v in zip(layer.factors(3, "magnitude"), layer.factors(None)))


def test_magnitude_weighs_p_and_follows_the_weights():
    """Matryoshka's P enters the size: R = {1, 2, 4}, rank scaling alpha 4: P = (7, 3, 1, 1)."""
    layer = mc.AdapterLayer(nn.Linear(4, 4, dtype=torch.float64),
                            mc.AdapterConfig(method="matryoshka", rank=4, scaling="rank", alpha=4.0))
    with torch.no_grad():
        layer.lora_A.copy_(torch.eye(4, dtype=torch.float64))
        layer.lora_B.copy_(torch.diag(torch.tensor([1.0, 2.0, 5.0, 4.0], dtype=torch.float64)))
    assert layer.p.tolist() == [7, 3, 1, 1]                    # sizes 7, 6, 5, 4: the trained order
    a, b, s = layer.factors(2, "magnitude")                    # P folded into B: one row for all layers
    assert a.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]] and b.diagonal().tolist() == [7, 6] and s == 1.0
    with torch.no_grad():
        layer.lora_B.mul_(torch.tensor([1.0, 1.0, 10.0, 1.0], dtype=torch.float64))   # sizes 7, 6, 50, 4
    a, b, _ = layer.factors(2, "magnitude")
    assert a.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0]] and b[[2, 0], [0, 1]].tolist() == [50, 7]


def test_magnitude_is_one_function_in_forward_merge_rows_and_export(tmp_path):
    from peft import PeftModel

    from mlora_core.functions import function_rows
    model, targets = tiny_model("llama")
    mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=4, target_modules=targets)).eval()
    for _, layer in mc.adapter_layers(model):   # each layer its own order of components
        layer.lora_B.data.normal_(std=0.2)
    ids = torch.tensor([[3, 9, 1, 22, 7]])
    mc.set_rank(model, 2, "magnitude")
    with torch.no_grad():
        served = model(ids).logits
        mc.set_rank(model, 2, "prefix")
        assert not torch.allclose(model(ids).logits, served)   # a different cut of this adapter
        mc.set_rank(model, None)
        [(basis, _, rows)] = function_rows(model, [(2, "magnitude")])
        mc.inject.set_function_rows(model, (basis, rows))
        torch.testing.assert_close(model(ids).logits, served, rtol=1e-5, atol=1e-6)
        mc.inject.set_function_rows(model, None)
        mc.merge_adapters(model, 2, rule="magnitude")
        torch.testing.assert_close(model(ids).logits, served, rtol=1e-4, atol=1e-5)
        mc.unmerge_adapters(model)
    mc.save_adapter(model, tmp_path / "m", rank=3, rule="magnitude")
    reloaded = mc.load_adapter(tiny_model("llama")[0], tmp_path / "m")
    mc.set_rank(reloaded, 2)           # cut further, the export is still the rule's answer
    peft_model = PeftModel.from_pretrained(tiny_model("llama")[0], tmp_path / "m").eval()
    mc.set_rank(model, 3, "magnitude")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, served, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(peft_model(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-5)


def test_magnitude_is_not_in_the_default_rules():
    """Registered, so a config may name it, but not scored unless named: the default sweep is unchanged."""
    assert "magnitude" in mc.RULES and "magnitude" not in default_rules()
