import json

import pytest
import torch

import mlora_core as mc

from .helpers import tiny_model
from .test_inject import train_a_few_steps

peft = pytest.importorskip("peft")


def trained(arch, method="matryoshka", rank=8, seed=0):
    model, targets = tiny_model(arch, seed=seed)
    mc.add_adapters(model, mc.AdapterConfig(method=method, rank=rank, scaling="sqrt", alpha=2.0,
                                            target_modules=targets))
    ids = torch.randint(0, 64, (2, 12))
    train_a_few_steps(model, {"input_ids": ids}, steps=4)
    return model, ids


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_peft_loads_our_export_at_every_rank(arch, tmp_path):
    model, ids = trained(arch)
    for k in (1, 2, 4, 8, None):
        mc.set_rank(model, k)
        ours = model(input_ids=ids).logits
        out = mc.save_adapter(model, tmp_path / f"r{k}", rank=k)
        base, _ = tiny_model(arch)  # same seed -> same base weights
        peft_model = peft.PeftModel.from_pretrained(base, str(out)).eval()
        theirs = peft_model(input_ids=ids).logits
        assert torch.allclose(ours, theirs, atol=1e-5), f"rank {k}"
        assert json.loads((out / "adapter_config.json").read_text())["r"] == (k or 8)


def test_load_adapter_round_trip_full_and_truncated(tmp_path):
    model, ids = trained("qwen2", method="matryoshka")
    mc.save_adapter(model, tmp_path / "full")
    mc.save_adapter(model, tmp_path / "r4", rank=4)
    fresh, _ = tiny_model("qwen2")
    mc.load_adapter(fresh, tmp_path / "full")
    cut, _ = tiny_model("qwen2")
    mc.load_adapter(cut, tmp_path / "r4")
    config, meta = mc.read_adapter_config(tmp_path / "r4")
    assert config.rank == 4 and config.train_ranks == (1, 2, 4) and meta["saved_rank"] == 4
    for k in (None, 1, 2, 4, 8):
        mc.set_rank(model, k)
        mc.set_rank(fresh, k)
        assert torch.equal(model(input_ids=ids).logits, fresh(input_ids=ids).logits)
        if k is not None and k <= 4:
            mc.set_rank(cut, k)
            assert torch.equal(model(input_ids=ids).logits, cut(input_ids=ids).logits)


def test_corrupt_and_mismatched_files_fail_clearly(tmp_path):
    model, _ = trained("llama", rank=4)
    path = mc.save_adapter(model, tmp_path / "a")
    weights = path / "mlora_adapter.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated, as by a kill mid-copy
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        mc.load_adapter(tiny_model("llama")[0], path)
    weights.write_bytes(good)
    other, targets = tiny_model("llama")
    mc.add_adapters(other, mc.AdapterConfig(rank=8, target_modules=targets))
    with pytest.raises(ValueError, match=r"has shape \(4, 32\), the model expects \(8, 32\)"):
        mc.load_adapter(other, path)
    (path / "mlora_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="not an mlora adapter"):
        mc.load_adapter(tiny_model("llama")[0], path)


def test_saves_are_atomic_and_leave_no_temp_files(tmp_path):
    model, _ = trained("llama", rank=2)
    path = mc.save_adapter(model, tmp_path / "a")
    assert sorted(p.name for p in path.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "mlora_adapter.safetensors", "mlora_config.json"]
