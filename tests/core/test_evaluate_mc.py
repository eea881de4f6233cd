"""Multiple choice scored once per question (evaluate.choice_scores, "packed": the prompt once, the
choices under a 4D mask, a shared prompt prefix from its cached keys/values, logits only where
scored) against the straightforward path ("reference": one sequence per choice): the same
per-choice log-likelihoods, answers and eval loss. SmolLM2's check is in test_real_model.py."""
import dataclasses

import pytest
import torch
import transformers as tf

import mlora_core as mc
from mlora_core.data.example import Example
from mlora_core.data.tasks import TaskConfig, load_examples
from mlora_core.data.tokenize import tokenize
from mlora_core.scoring.choice import choice_scores, multiple_choice, multiple_choice_reference, packable
from mlora_core.scoring.loss import eval_loss
from mlora_core.scoring.metrics import MetricConfig
from mlora_core.scoring.ranks import evaluate_ranks

from .helpers import tiny_llama

REL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def arc(tok):
    """ARC-Easy questions (3-5 choices, some long), the same behind a shared preamble (the prefix
    cache's case, as a chat template's system turn), and hand-made edge cases: an empty choice,
    one choice, a duplicate."""
    examples = load_examples(TaskConfig("arc_easy", source="offline", split="validation", n=10))
    preamble = [dataclasses.replace(e, prompt="Read the question, then answer it. " + e.prompt) for e in examples]
    odd = [Example("Question: yes?\nAnswer:", "", choices=("", " yes", " no"), label=0),
           Example("Question: one?\nAnswer:", " one", choices=(" one",), label=0),
           Example("Question: same?\nAnswer:", " a b", choices=(" a b", " c", " a b"), label=2)]
    return examples, preamble, odd


def adapted(tok, method="matryoshka", rank=4, attn="sdpa", seed=0):
    model = tiny_llama(tok, seed)
    model.config._attn_implementation = attn
    mc.add_adapters(model, mc.AdapterConfig(method=method, rank=rank, scaling="sqrt", alpha=1.0))
    torch.manual_seed(seed + 1)
    for _, layer in mc.adapter_layers(model):   # B random: every rank (and rule) is a different function
        torch.nn.init.normal_(layer.lora_B, std=0.2)
    return model.eval()


def assert_same(model, tok, examples, batch_size=3):
    ref = choice_scores(model, tok, examples, 4, "cpu", "reference")
    new = choice_scores(model, tok, examples, batch_size, "cpu", "packed")
    torch.testing.assert_close(new.scores, ref.scores, rtol=REL, atol=1e-6)
    assert [int(s.argmax()) for s in new.per_example(examples)] == [int(s.argmax()) for s in ref.per_example(examples)]
    assert new.correct(examples) == ref.correct(examples)
    return ref, new


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("method", ["matryoshka", "lora"])
def test_packed_scores_equal_the_reference_at_every_rank_and_rule(tok, arc, attn, method):
    examples, preamble, odd = arc
    model = adapted(tok, method, attn=attn)
    seen = set()
    for rank in (1, 2, 4):
        for rule in ("truncate", "prefix", "svd"):
            mc.set_rank(model, rank, rule)
            ref, new = assert_same(model, tok, examples + odd)
            seen.add(tuple(ref.scores.tolist()))
            assert new.tokens < ref.tokens / 2   # the prompt once, not once per choice
            assert_same(model, tok, preamble, batch_size=4)
    assert len(seen) >= 7   # the ranks and rules do differ (LoRA and the full-rank rules may coincide)
    mc.set_rank(model, None)
    assert_same(model, tok, examples, batch_size=1)


def test_the_shared_prefix_is_forwarded_once(tok, arc):
    examples, preamble, _ = arc
    model = adapted(tok)
    mc.set_rank(model, 2)
    plain, cached = (choice_scores(model, tok, ex, 4, "cpu", "packed") for ex in (examples, preamble))
    preamble_tokens = len(tok("Read the question, then answer it. ", add_special_tokens=False)["input_ids"])
    # roughly: each question pays for its own text only; the preamble's tokens are paid once
    assert cached.tokens < plain.tokens + 2 * preamble_tokens


def test_eval_loss_from_the_same_forward_equals_eval_loss(tok, arc):
    examples, preamble, odd = arc
    model = adapted(tok)
    mc.set_rank(model, 2)
    for exs in (examples + odd, preamble):
        data = tokenize(tok, exs, 10_000)
        shortest_prompt = min(sum(x == -100 for x in labels) for labels in data.labels)
        median = sorted(map(len, data.input_ids))[len(exs) // 2]
        # median: cuts some answers or their EOS; shortest prompt + 2: cuts nearly all, keeps a token
        assert tokenize(tok, exs, median).truncated > 0
        for max_length in (10_000, median, shortest_prompt + 2):
            loss, _ = eval_loss(model, tok, exs, max_length, 4, "cpu")
            new = choice_scores(model, tok, exs, 3, "cpu", "packed", loss_max_length=max_length)
            assert new.loss_sum / new.loss_count == pytest.approx(loss, rel=REL)


def test_evaluate_ranks_gives_the_reference_curves_from_one_forward_a_rank(tok, arc):
    examples, _, _ = arc
    model = adapted(tok)
    rules = ("truncate", "svd")
    curves, evaluations, _ = evaluate_ranks(model, tok, examples, (1, 2, 4), MetricConfig("multiple_choice"), rules=rules,
                                            batch_size=4, max_length=70, log=lambda *_: None)
    for rule in rules:
        for i, k in enumerate((1, 2, 4)):
            mc.set_rank(model, k, rule)
            loss, _ = eval_loss(model, tok, examples, 70, 4, "cpu")
            correct, _ = multiple_choice_reference(model, tok, examples, 4, "cpu")
            assert curves[rule].accuracy[i] == correct / len(examples)
            assert curves[rule].eval_loss[i] == pytest.approx(loss, rel=REL)
    packed_tokens = choice_scores(model, tok, examples, 4, "cpu", "packed").tokens
    assert {n for _, n in evaluations} == {packed_tokens}   # no eval-loss forward of its own
    assert {k for k, _ in evaluations} == {1, 2, 4}


def test_other_architectures_and_a_sliding_window(tok, arc):
    examples, preamble, _ = arc
    special = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    small = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, **special)
    torch.manual_seed(0)
    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=256,
                                            **special))
    windowed = tf.MistralForCausalLM(tf.MistralConfig(sliding_window=24, **small))   # shorter than the prompts
    for model in (gpt2.eval(), windowed.eval()):
        assert packable(model)
        assert_same(model, tok, examples)
        assert_same(model, tok, preamble)
    unwindowed = tf.MistralForCausalLM(tf.MistralConfig(sliding_window=None, **small)).eval()
    unwindowed.load_state_dict(windowed.state_dict())
    assert not torch.allclose(choice_scores(unwindowed, tok, examples, 4, "cpu", "packed").scores,
                              choice_scores(windowed, tok, examples, 4, "cpu", "packed").scores)   # the window mattered
    mixed = tf.Qwen2ForCausalLM(tf.Qwen2Config(use_sliding_window=True, sliding_window=24, max_window_layers=1, **small))
    assert not packable(mixed)   # sliding and full layers: one 4D mask cannot say it, the reference path scores


def test_auto_falls_back_to_the_reference_for_what_it_cannot_pack(tok, arc):
    examples, _, _ = arc

    class Wrapped(torch.nn.Module):   # a model that only offers model(...).logits
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    model = adapted(tok)
    assert packable(model) and not packable(Wrapped(model))
    assert multiple_choice(Wrapped(model), tok, examples, 4, "cpu") == multiple_choice_reference(model, tok, examples, 4, "cpu")
    assert multiple_choice(model, tok, examples, 4, "cpu")[0] == multiple_choice_reference(model, tok, examples, 4, "cpu")[0]
    with pytest.raises(ValueError, match="method"):
        choice_scores(model, tok, examples, 4, "cpu", "fast")
