"""The three Matryoshka objectives (mlora_core/objectives.py): exact gradients on hand-built cases."""
import random
from collections import Counter

import pytest
import torch

import mlora_core as mc
from mlora_core.builtin_model import build_tokenizer
from mlora_core.data.tasks import TaskConfig, load_examples
from mlora_core.data.tokenize import collate, tokenize
from mlora_core.objectives import Pass, assign_ranks, passes, stratified_rng
from mlora_core.p_schedule import nested_p, rank_weights
from mlora_core.train import TrainConfig, backward_passes

from .helpers import fit, tiny_llama

R = (1, 2, 4)


@pytest.fixture(scope="module")
def tok_data():
    tok = build_tokenizer()
    return tok, tokenize(tok, load_examples(TaskConfig("synthetic", n=64)), max_length=96)


def adapted(tok, objective="summed", schedule="diag", method="matryoshka"):
    model = tiny_llama(tok).double()
    cfg = mc.AdapterConfig(method=method, rank=4, train_ranks=R, scaling="sqrt", alpha=2.0, p_schedule=schedule,
                           objective=objective if method == "matryoshka" else None)
    mc.add_adapters(model, cfg)
    torch.manual_seed(1)
    for _, layer in mc.adapter_layers(model):  # B = 0 at init would make every rank's gradient alike
        layer.lora_B.data.normal_(std=0.1)
    model.train()
    return model, cfg


def grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out


def run_passes(model, cfg, batch, todo):
    rows = torch.zeros(batch["input_ids"].shape[0], cfg.rank, dtype=torch.float64)
    mc.set_example_p(model, rows)
    loss = backward_passes(model, batch, todo, rows, grad_accum=1, amp=False)
    mc.set_example_p(model, None)
    return loss, grads(model)


def batch_of(tok, data, idx):
    return collate([data.input_ids[i] for i in idx], [data.labels[i] for i in idx], tok.pad_token_id)


def separate_forwards(model, batch, weights):
    """The reference: one plain forward per rank t, truncated at t (s(t) A[:t] B[:t]), weighted."""
    total = 0.0
    for t, w in weights.items():
        for _, layer in mc.adapter_layers(model):
            layer.train_rank = t
        loss = w * model(**batch).loss
        loss.backward()
        total += float(loss.detach())
    for _, layer in mc.adapter_layers(model):
        layer.train_rank = None
    return total, grads(model)


@pytest.mark.parametrize("schedule", ["diag", "geometric"])
def test_per_rank_gradient_is_the_weighted_sum_of_separate_per_rank_gradients(tok_data, schedule):
    tok, data = tok_data
    model, cfg = adapted(tok, "per_rank", schedule)
    batch = batch_of(tok, data, range(6))
    todo = passes(cfg, 6, seed=0, worker=0, micro_batch=0, dtype=torch.float64)
    assert [p.weight for p in todo] == pytest.approx(list(rank_weights(cfg).values()))
    loss, got = run_passes(model, cfg, batch, todo)
    ref_loss, want = separate_forwards(model, batch, rank_weights(cfg))
    assert float(loss) == pytest.approx(ref_loss, rel=1e-6)  # the reported loss is accumulated in fp32
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-13)  # fp64: summation order
    # and it is not the summed objective's gradient
    summed, _ = adapted(tok, "summed", schedule)
    summed.load_state_dict(model.state_dict())
    _, g_summed = run_passes(summed, cfg, batch, [Pass(1.0, None, cfg.rank)])
    assert not torch.allclose(g_summed["model.layers.0.self_attn.q_proj.lora_A"],
                              got["model.layers.0.self_attn.q_proj.lora_A"])


def test_rank_weights_exact_values():
    cfg = lambda s: mc.AdapterConfig(rank=16, train_ranks=(1, 4, 16), p_schedule=s)  # noqa: E731
    assert rank_weights(cfg("diag")) == pytest.approx({1: 1 / 3, 4: 1 / 3, 16: 1 / 3})
    assert rank_weights(cfg("binary")) == rank_weights(cfg("diag"))   # same weights once normalised
    assert rank_weights(cfg("geometric")) == pytest.approx({1: 4 / 7, 4: 2 / 7, 16: 1 / 7})
    assert rank_weights(cfg("top")) == pytest.approx({1: 1 / 7, 4: 2 / 7, 16: 4 / 7})


def test_stratified_on_every_example_at_every_rank_equals_per_rank(tok_data):
    tok, data = tok_data
    model, cfg = adapted(tok, "stratified")
    idx = list(range(5))
    # the batch holds every example once at every rank: its one-forward loss is the per-rank mean
    replicated = batch_of(tok, data, idx * len(R))
    rows = torch.stack([nested_p(cfg, t, torch.float64) for t in R for _ in idx])
    loss, got = run_passes(model, cfg, replicated, [Pass(1.0, rows, cfg.rank)])
    per_rank, _ = adapted(tok, "per_rank")
    per_rank.load_state_dict(model.state_dict())
    ref_loss, want = run_passes(per_rank, cfg, batch_of(tok, data, idx), passes(
        mc.AdapterConfig(**{**cfg.to_dict(), "objective": "per_rank"}), len(idx), seed=0, worker=0, micro_batch=0,
        dtype=torch.float64))
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-6)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-8, atol=1e-12)


def test_stratified_rows_follow_the_assignment_per_example():
    cfg = mc.AdapterConfig(rank=4, train_ranks=R, scaling="rank", alpha=4.0, objective="stratified")
    (p,) = passes(cfg, 6, seed=3, worker=0, micro_batch=7)
    ranks = assign_ranks(6, rank_weights(cfg), stratified_rng(3, 0, 7))
    expected = [[4 / t if j < t else 0.0 for j in range(4)] for t in ranks]
    assert p.p_rows.tolist() == expected and p.weight == 1.0 and p.flop_rank == 4


def test_balanced_assignment_covers_every_rank_and_is_reproducible():
    uniform = {1: 1 / 3, 4: 1 / 3, 16: 1 / 3}
    for m in range(200):
        ranks = assign_ranks(16, uniform, stratified_rng(0, 0, m))
        counts = Counter(ranks)
        assert set(counts) == {1, 4, 16} and sorted(counts.values()) in ([5, 5, 6],)
        assert ranks == assign_ranks(16, uniform, stratified_rng(0, 0, m))   # a function of the seed
    assert [assign_ranks(3, uniform, stratified_rng(0, 0, m)).count(4) for m in range(50)] == [1] * 50
    # DDP workers and different seeds draw their own
    assert assign_ranks(16, uniform, stratified_rng(0, 1, 0)) != assign_ranks(16, uniform, stratified_rng(0, 0, 0))
    # weighted: floor or ceil of batch * w per rank, and on average exactly batch * w (unbiased)
    geometric = {1: 4 / 7, 4: 2 / 7, 16: 1 / 7}
    totals = Counter()
    for m in range(7000):
        counts = Counter(assign_ranks(16, geometric, random.Random(m)))
        assert all(abs(counts[t] - 16 * w) < 1 for t, w in geometric.items()), counts
        totals.update(counts)
    for t, w in geometric.items():
        assert totals[t] / 7000 == pytest.approx(16 * w, rel=0.01)


def test_objective_is_a_matryoshka_setting_and_sets_the_full_rank_p():
    with pytest.raises(ValueError, match="^objective:"):
        mc.AdapterConfig(method="lora", objective="per_rank")
    with pytest.raises(ValueError, match="^objective:"):
        mc.AdapterConfig(objective="nested")
    # trained to nest, the full-rank adapter is plain s(r) A B (its P is LoRA's)
    cfg = mc.AdapterConfig(rank=4, train_ranks=R, scaling="rank", alpha=4.0, objective="per_rank")
    assert mc.p_vector(cfg).tolist() == [1.0] * 4
    assert mc.p_vector(mc.AdapterConfig(rank=4, train_ranks=R, scaling="rank", alpha=4.0)).tolist() == [7, 3, 1, 1]


@pytest.mark.parametrize("objective", ["per_rank", "stratified"])
def test_nested_objectives_train_and_resume_exactly(tok_data, objective, tmp_path):
    tok, data = tok_data
    quiet = lambda *_: None  # noqa: E731
    cfg = TrainConfig(steps=4, batch_size=4, lr=3e-2, warmup_steps=0, checkpoint_every=2, log_every=0)
    fresh = lambda obj: adapted(tok, obj)[0].float()  # noqa: E731
    full = fit(fresh(objective), data, cfg, tok.pad_token_id, checkpoint_dir=tmp_path, log=quiet)
    assert full.losses[-1] < full.losses[0]
    model = fresh(objective)
    resumed = fit(model, data, cfg, tok.pad_token_id, resume_from=tmp_path / "step_000002", log=quiet)
    assert resumed.losses == full.losses
    assert all(layer.example_p is None for _, layer in mc.adapter_layers(model))  # taken away after training
    summed = fit(fresh("summed"), data, cfg, tok.pad_token_id, log=quiet)
    # cost: per_rank runs |R| full passes a step, stratified one (the adapter at full rank either way)
    assert full.train_flops == pytest.approx(summed.train_flops * (len(R) if objective == "per_rank" else 1))
