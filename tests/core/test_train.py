import dataclasses
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mlora_core as mc
from mlora_core.builtin_model import build_tokenizer
from mlora_core.checkpoint import latest_checkpoint
from mlora_core.cost import flop_model
from mlora_core.data.tasks import TASKS, TaskConfig, load_examples
from mlora_core.data.tokenize import collate, tokenize
from mlora_core.io import load_tensors, read_json
from mlora_core.scoring.ranks import evaluate_ranks
from mlora_core.train import Diverged, TrainConfig

from .helpers import fit, tiny_llama


@pytest.fixture(scope="module")
def setup():
    tok = build_tokenizer()
    data = tokenize(tok, load_examples(TaskConfig("synthetic", n=64)), max_length=96)
    return tok, data


def adapted(tok, method="matryoshka", rank=4, seed=0, layers=2):
    model = tiny_llama(tok, seed, layers)
    return mc.add_adapters(model, mc.AdapterConfig(method=method, rank=rank, scaling="sqrt", alpha=1.0))


def test_loss_falls(setup):
    tok, data = setup
    model = adapted(tok)
    res = fit(model, data, TrainConfig(steps=25, batch_size=8, lr=1e-2, warmup_steps=3, log_every=0),
                tok.pad_token_id, log=lambda *_: None)
    assert len(res.losses) == 25 and res.train_tokens > 0 and res.train_flops > 0
    # a random-init base: the adapter can only shift it so far; the pretrained case is in test_run.py
    assert sum(res.losses[-5:]) / 5 < 0.97 * sum(res.losses[:5]) / 5


def test_same_seed_same_losses_and_resume_equals_uninterrupted(setup, tmp_path):
    tok, data = setup
    cfg = TrainConfig(steps=12, batch_size=8, lr=5e-3, warmup_steps=2, checkpoint_every=5, log_every=0)
    quiet = lambda *_: None  # noqa: E731
    full = fit(adapted(tok, "dylora"), data, cfg, tok.pad_token_id, log=quiet)
    again = fit(adapted(tok, "dylora"), data, cfg, tok.pad_token_id, checkpoint_dir=tmp_path / "c", log=quiet)
    assert full.losses == again.losses  # reproducible on CPU
    ckpt = tmp_path / "c" / "step_000005"
    assert ckpt.is_dir() and latest_checkpoint(tmp_path / "c").name == "step_000012"
    resumed_model = adapted(tok, "dylora")
    for _, layer in mc.adapter_layers(resumed_model):  # scramble: the adapter must come from the checkpoint
        layer.lora_A.data.normal_()
    resumed = fit(resumed_model, data, cfg, tok.pad_token_id, resume_from=ckpt, log=quiet)
    assert resumed.resumed_from == 5
    assert resumed.losses == pytest.approx(full.losses, rel=1e-6, abs=1e-7)
    # a run's cost counts every segment: restarted at its last step (nothing left to train), its
    # training time is the 12 steps' before the restart, not the ~0 s of its own segment
    done = tmp_path / "c" / "step_000012"
    before = read_json(done / "trainer_state.json")["seconds"]
    again_done = fit(adapted(tok, "dylora"), data, cfg, tok.pad_token_id, resume_from=done, log=quiet)
    assert again_done.losses == full.losses and before > 0
    assert before <= again_done.seconds < before + 0.5 * before + 0.05


@pytest.mark.slow  # torch.compile's one-off compile: ~40 s on 2 cores with a cold inductor cache
def test_compiled_training_follows_the_eager_trajectory(setup, tmp_path):
    # stratified: the objective whose per-example P changes every step. The compiled graph must read
    # it at run time (not bake it in) and must not recompile as it changes (one graph, not one per step)
    tok, data = setup
    quiet = lambda *_: None  # noqa: E731
    runs = {}
    for compiled in (False, True):
        model = tiny_llama(tok, layers=1)  # compile time grows with the graph; one layer shows the same
        mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=4, objective="stratified"))
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        # 3 steps: later ones run the compiled graph again on new weights and a new rank assignment
        cfg = TrainConfig(steps=3, batch_size=8, lr=5e-3, warmup_steps=0, log_every=0, compile=compiled)
        res = fit(model, data, cfg, tok.pad_token_id, checkpoint_dir=tmp_path / str(compiled), log=quiet)
        runs[compiled] = (res.losses, {n: p.detach() for n, p in model.named_parameters() if p.requires_grad})
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-4)
    assert runs[True][1].keys() == runs[False][1].keys()
    for name, weight in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][name], weight, rtol=1e-3, atol=1e-5)
    # checkpoints hold the model's own parameter names, not the compiled wrapper's ("_orig_mod.")
    saved = load_tensors(tmp_path / "True" / "step_000003" / "adapter.safetensors")
    assert saved.keys() == runs[False][1].keys()


def test_dylora_trains_eager_when_compile_is_asked(setup):
    # its per-step train rank would recompile the graph for every rank: a costly no-gain
    tok, data = setup
    lines = []
    cfg = TrainConfig(steps=3, batch_size=8, lr=5e-3, warmup_steps=0, log_every=0)
    eager = fit(adapted(tok, "dylora"), data, cfg, tok.pad_token_id, log=lambda *_: None)
    asked = fit(adapted(tok, "dylora"), data, dataclasses.replace(cfg, compile=True), tok.pad_token_id,
                  log=lines.append)
    assert asked.losses == eager.losses
    assert any("compile is off for DyLoRA" in line for line in lines)


def test_divergence_is_detected(setup):
    tok, data = setup
    model = adapted(tok)
    for _, layer in mc.adapter_layers(model):
        layer.lora_A.data.fill_(float("inf"))
    with pytest.raises(Diverged, match="diverged"):
        fit(model, data, TrainConfig(steps=3, batch_size=8, log_every=0), tok.pad_token_id, log=lambda *_: None)


def test_flop_formula_matches_flop_counter(setup):
    tok, data = setup
    model = tiny_llama(tok, layers=3)
    model.config._attn_implementation = "eager"  # attention as plain matmuls the counter sees
    mc.add_adapters(model, mc.AdapterConfig(method="matryoshka", rank=8))
    batch = collate(data.input_ids[:8], data.labels[:8], tok.pad_token_id)
    model.train()
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    measured = counter.get_total_flops()
    predicted = flop_model(model).train_step(*batch["input_ids"].shape, rank=8)
    assert abs(predicted - measured) / measured < 0.10, (predicted, measured)


def test_evaluate_every_rank_gives_curve(setup):
    tok, _ = setup
    model = adapted(tok)
    exs = load_examples(TaskConfig("synthetic", split="test", n=12))
    curves, evaluations, _ = evaluate_ranks(model, tok, exs, (1, 2, 4), TASKS["synthetic"].metric, batch_size=5,
                                            max_new_tokens=4, log=lambda *_: None)
    (curve,) = curves.values()
    assert curve.ranks == (1, 2, 4) and len(curve.accuracy) == 3 and all(0 <= a <= 1 for a in curve.accuracy)
    assert curve.aurac == mc.aurac(curve.ranks, curve.accuracy)
    assert [k for k, _ in evaluations] == [1, 2, 4] and min(n for _, n in evaluations) > 0
    assert all(l.rank is None for _, l in mc.adapter_layers(model))


def test_evaluate_scores_each_rule_and_each_distinct_function_once(setup):
    tok, _ = setup
    model = adapted(tok, method="matryoshka", rank=4)
    for _, layer in mc.adapter_layers(model):
        layer.lora_B.data.normal_(std=0.3)
    exs = load_examples(TaskConfig("synthetic", split="test", n=6))
    curves, evaluations, _ = evaluate_ranks(model, tok, exs, (1, 4), TASKS["synthetic"].metric,
                                            rules=("truncate", "prefix", "svd"), batch_size=6, max_new_tokens=3,
                                            log=lambda *_: None)
    assert list(curves) == ["truncate", "prefix", "svd"]
    # rank 1: three different functions; rank 4: truncate (s(4)) differs from the trained update,
    # which prefix and svd both are at full rank: 3 + 2 evaluations, not 6
    assert [k for k, _ in evaluations] == [1, 1, 1, 4, 4]
    assert curves["prefix"].eval_loss[1] == curves["svd"].eval_loss[1]
    assert curves["truncate"].eval_loss[1] != curves["prefix"].eval_loss[1]
    lora = adapted(tok, method="lora", rank=4)
    _, evaluations, _ = evaluate_ranks(lora, tok, exs, (4,), TASKS["synthetic"].metric, rules=("truncate", "prefix", "svd"),
                                       batch_size=6, max_new_tokens=3, log=lambda *_: None)
    assert evaluations[0][0] == 4 and len(evaluations) == 1  # every rule is s(r) A B at full rank


def small_run_config(tok, tmp_path, **overrides):
    """A RunConfig for mlora_core.run on a tiny saved base (4 LoRA steps on the synthetic task)."""
    from mlora_core.run import RunConfig
    base = tmp_path / "base"
    tiny_llama(tok).save_pretrained(base)
    tok.save_pretrained(base)
    fields = dict(model=str(base), train_task=TaskConfig("synthetic", n=32), eval_task=TaskConfig("synthetic", split="test", n=4),
                  adapter=mc.AdapterConfig(method="lora", rank=4, eval_ranks=(4,)),
                  train=TrainConfig(steps=4, batch_size=8, lr=1e-2, warmup_steps=1, log_every=0, seed=3))
    return RunConfig(**{**fields, **overrides})


def test_run_is_a_function_of_its_config_not_of_the_callers_rng(setup, tmp_path):
    # run() seeds A's initialisation itself: before, A came from whatever state loading left
    # torch's global RNG in, and two runs of one config drifted apart from step 1
    from mlora_core.run import run
    cfg = small_run_config(setup[0], tmp_path)
    losses = []
    for i, junk in enumerate((1, 1000)):
        torch.rand(junk)  # a caller (or a loader) that used the RNG differently
        losses.append(run(cfg, tmp_path / f"run{i}", log=lambda *_: None).losses)
    assert losses[0] == losses[1] and losses[0][1] != losses[0][0]


def test_cost_counts_every_device_a_worker_holds(setup, tmp_path):
    # a worker with 2 priced devices (2 CPU cores, or 2 GPUs) costs twice the device-hours
    from mlora_core.run import RunConfig, run
    cfg = small_run_config(setup[0], tmp_path, devices_per_worker=2, price_per_device_hour=1.0)
    cost = run(cfg, tmp_path / "run", log=lambda *_: None).cost
    assert cost.devices == 2
    assert cost.device_hours == pytest.approx(cost.wall_seconds * 2 / 3600)
    assert cost.dollars == pytest.approx(cost.device_hours)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # travels to Ray workers as a dict


def test_lr_factor_exact_values():
    from mlora_core.train import lr_factor
    # warmup 2 of 10 steps: linear ramp to 1, then the schedule over the 8 steps left
    assert [lr_factor(s, 10, 2, "constant") for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    assert [lr_factor(s, 10, 2, "linear") for s in (2, 6, 9)] == [1.0, 0.5, 0.125]
    assert [lr_factor(s, 10, 2, "cosine") for s in (2, 6)] == [1.0, pytest.approx(0.5)]
    assert lr_factor(9, 10, 2, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert lr_factor(0, 10, 0, "linear") == 1.0   # no warmup: the first step at the full lr


def test_multiple_choice_picks_the_likeliest_choice_and_counts_its_tokens(setup):
    """A 'model' whose next-token distribution is one fixed vector: a choice's score is the sum of
    its tokens' log-probabilities, so the choice made of the favoured token wins."""
    from mlora_core.data.example import Example
    from mlora_core.scoring.choice import multiple_choice

    tok, _ = setup

    class Fixed(torch.nn.Module):
        def __init__(self, favoured: int):
            super().__init__()
            self.bias = torch.zeros(len(tok))
            self.bias[favoured] = 8.0

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": self.bias.expand(*input_ids.shape, -1)})()

    choices = (" asks", " Mia")   # one token each: the builtin vocabulary holds known words with their space
    ids = [tok(c, add_special_tokens=False)["input_ids"] for c in choices]
    assert all(len(i) == 1 for i in ids), ids
    right = Example(prompt="Question: who?\nAnswer:", completion="", choices=choices, label=1)
    wrong = Example(prompt="Question: who?\nAnswer:", completion="", choices=choices, label=0)
    correct, tokens = multiple_choice(Fixed(ids[1][0]), tok, [right, wrong, right], batch_size=4, device="cpu")
    assert correct == 2
    per_pair = len(tokenize(tok, [Example(right.prompt, " Mia")], max_length=10_000).input_ids[0])
    assert tokens == 3 * 2 * per_pair
