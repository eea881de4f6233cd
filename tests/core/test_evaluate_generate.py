"""Exact match and eval loss of every (rank, rule) function in one pass (evaluate.function_rows:
each example under each function, P rows on shared factors, batched by length) against one
function at a time (set_rank): the same completions, losses and curves."""
import pytest
import torch

import mlora_core as mc
from mlora_core.data.tasks import TASKS, TaskConfig, load_examples
from mlora_core.functions import function_rows
from mlora_core.scoring.generate import generate, generate_each
from mlora_core.scoring.loss import eval_loss, loss_terms
from mlora_core.scoring.metrics import parse_final_number
from mlora_core.scoring.ranks import evaluate_ranks

from .helpers import tiny_llama

RULES = ("truncate", "prefix", "svd")
FUNCTIONS = [(k, rule) for k in (1, 2, 4) for rule in RULES]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tok):
    model = mc.add_adapters(tiny_llama(tok), mc.AdapterConfig(method="matryoshka", rank=4, scaling="sqrt", alpha=1.0))
    torch.manual_seed(1)
    for _, layer in mc.adapter_layers(model):   # B random: every rank and rule is a different function
        torch.nn.init.normal_(layer.lora_B, std=0.3)
    return model.eval()


@pytest.fixture(scope="module")
def examples():
    return load_examples(TaskConfig("synthetic", split="test", n=10))


def one_at_a_time(model, fn, *args):
    out = {}
    for k, rule in FUNCTIONS:
        mc.set_rank(model, k, rule)
        out[k, rule] = fn(*args)
    mc.set_rank(model, None)
    return out


def test_rows_group_functions_by_the_factors_they_share(model):
    groups = {basis: [FUNCTIONS[i] for i in idx] for basis, idx, _ in function_rows(model, FUNCTIONS)}
    assert groups["svd"] == [(1, "svd"), (2, "svd")]   # svd at full rank is the trained update itself
    assert sorted(groups["trained"]) == sorted(f for f in FUNCTIONS if f not in groups["svd"])
    [(basis, _, rows)] = function_rows(model, [(2, "truncate"), (4, "prefix")])
    assert basis == "trained"
    layer = next(mc.adapter_layers(model))[1]
    assert torch.equal(rows[0], torch.tensor([mc.scale(layer.config, 2)] * 2 + [0.0, 0.0]))
    assert torch.equal(rows[1], layer.p)


def test_all_functions_generate_the_completions_of_one_at_a_time(model, tok, examples):
    prompts = [e.prompt for e in examples]
    alone = one_at_a_time(model, lambda: generate(model, tok, prompts, max_new_tokens=6, batch_size=4)[0])
    assert len({tuple(t) for t in alone.values()}) >= 4, "functions must differ, or the check proves nothing"
    together = {}
    for basis, idx, rows in function_rows(model, FUNCTIONS):
        texts, tokens = generate_each(model, tok, prompts * len(idx), 6, "cpu", 7,
                                  (basis, rows.repeat_interleave(len(prompts), 0)))
        assert min(tokens) > 0
        for j, i in enumerate(idx):
            together[FUNCTIONS[i]] = texts[j * len(prompts):(j + 1) * len(prompts)]
    assert together == alone
    assert all(layer.function_rows is None for _, layer in mc.adapter_layers(model))


def test_all_functions_give_the_eval_loss_of_one_at_a_time(model, tok, examples):
    alone = one_at_a_time(model, lambda: loss_terms(model, tok, examples, 64, 4, "cpu")[0])
    for basis, idx, rows in function_rows(model, FUNCTIONS):
        sums, counts, _ = loss_terms(model, tok, examples * len(idx), 64, 5, "cpu",
                                      (basis, rows.repeat_interleave(len(examples), 0)))
        assert counts.min() > 0
        for j, i in enumerate(idx):
            torch.testing.assert_close(sums[j * len(examples):(j + 1) * len(examples)], alone[FUNCTIONS[i]],
                                       rtol=1e-5, atol=1e-6)


def test_evaluate_ranks_gives_the_curves_of_one_function_at_a_time(model, tok, examples):
    curves, evaluations, _ = evaluate_ranks(model, tok, examples, (1, 2, 4), TASKS["synthetic"].metric, rules=RULES,
                                            batch_size=8, max_new_tokens=6, max_length=64, log=lambda *_: None)
    for rule in RULES:
        for i, k in enumerate((1, 2, 4)):
            mc.set_rank(model, k, rule)
            texts, _ = generate(model, tok, [e.prompt for e in examples], max_new_tokens=6, batch_size=8)
            correct = sum(parse_final_number(t) == e.answer for t, e in zip(texts, examples))
            loss, _ = eval_loss(model, tok, examples, 64, 8, "cpu")
            assert curves[rule].accuracy[i] == correct / len(examples)
            assert curves[rule].eval_loss[i] == pytest.approx(loss, rel=1e-6)
    mc.set_rank(model, None)
    assert len(evaluations) == 8 and all(n > 0 for _, n in evaluations)   # 9 functions, svd at 4 = prefix at 4
