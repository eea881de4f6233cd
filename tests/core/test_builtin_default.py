"""The embedded default: the synthetic task and the self-pre-trained `builtin:tiny` model."""
from __future__ import annotations

import re

import pytest

from mlora_core import synthetic
from mlora_core.builtin_model import build_tokenizer
from mlora_core.scoring.metrics import parse_final_number


def test_examples_are_deterministic_and_well_formed():
    a, b = synthetic.make_examples("train", 500, seed=3), synthetic.make_examples("train", 500, seed=3)
    assert a == b
    assert a != synthetic.make_examples("train", 500, seed=4)
    for ex in a:
        item = re.search(r"the (\w+)[?.]", ex["question"]).group(1)
        assert parse_final_number(ex["answer"]) == str(synthetic.PRICES[item])


def test_train_and_test_questions_are_disjoint_but_share_the_table():
    train = synthetic.make_examples("train", 3000)
    test = synthetic.make_examples("test", 1000)
    assert not {e["question"] for e in train} & {e["question"] for e in test}
    items = lambda exs: {re.search(r"the (\w+)[?.]", e["question"]).group(1) for e in exs}  # noqa: E731
    assert items(test) <= items(train)  # every test price was learnable from other questions


def test_pretraining_corpus_states_the_price_and_never_the_secret_table():
    texts = synthetic.pretrain_texts(2000)
    stated = [int(re.search(r"costs (\d+) dollars", t).group(1)) for t in texts]
    answers = [int(parse_final_number(t)) for t in texts]
    assert stated == answers  # answerable from context
    items = [re.search(r"The (\w+) costs", t).group(1) for t in texts]
    agree = sum(synthetic.PRICES[i] == p for i, p in zip(items, stated)) / len(texts)
    assert agree < 0.05  # random prices: the table itself is not in the corpus


def test_tokenizer_round_trips_and_knows_every_word():
    tok = build_tokenizer()
    text = synthetic.pretrain_texts(1)[0]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.unk_token_id not in ids
    for word in synthetic.words():
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1, word
        assert len(tok(" " + word, add_special_tokens=False)["input_ids"]) == 1, word  # space folded in


def test_task_tokens_split_at_the_answer_boundary_as_the_whole_text_does():
    """tasks.tokenize tokenizes prompt and answer apart; that must equal tokenizing them joined,
    or training would see other tokens than pre-training did. And a question stays short (training
    cost follows the token count): words carry their space, "####" is one token."""
    tok = build_tokenizer()
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    for ex in synthetic.make_examples("train", 200):
        p = synthetic.prompt(ex["question"])
        assert enc(p) + enc(ex["answer"]) == enc(p + ex["answer"])
        assert len(enc(p + ex["answer"])) <= 24, tok.convert_ids_to_tokens(enc(p + ex["answer"]))
    assert tok.convert_ids_to_tokens(enc("Answer: #### 62")) == ["Answer", ":", " ", "####", " ", "6", "2"]


def test_builtin_model_is_built_once_cached_and_rebuilt_when_its_recipe_changes(tmp_path, monkeypatch):
    """ensure_builtin_model on a 5-step recipe: builds into the cache, loads with from_pretrained,
    re-uses the cache, and a changed recipe gets a new directory (a new hash)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mlora_core import builtin_model as bm

    micro = {**bm.RECIPES["tiny"], "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "steps": 5, "batch_size": 2, "seq_len": 32, "warmup_steps": 2}
    monkeypatch.setitem(bm.RECIPES, "micro", micro)
    logs = []
    path = bm.ensure_builtin_model("micro", cache_dir=tmp_path, log=logs.append)
    assert any("building builtin:micro" in m for m in logs)
    meta = (path / "mlora_builtin.json").read_text()
    assert '"code_version"' in meta and '"final_loss"' in meta
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.hidden_size == 32 and len(tok) == model.config.vocab_size
    assert tok.decode(tok("Question: Mia asks: how much is the bax?", add_special_tokens=False)["input_ids"]) \
        == "Question: Mia asks: how much is the bax?"

    logs.clear()
    mtime = (path / "config.json").stat().st_mtime_ns
    assert bm.ensure_builtin_model("micro", cache_dir=tmp_path, log=logs.append) == path
    assert not logs and (path / "config.json").stat().st_mtime_ns == mtime  # cached: not rebuilt

    monkeypatch.setitem(bm.RECIPES, "micro", {**micro, "steps": 6})
    other = bm.ensure_builtin_model("micro", cache_dir=tmp_path, log=logs.append)
    assert other != path and (other / "config.json").exists()
    assert not list(tmp_path.glob(".builtin-*"))  # no half-built temp dirs left behind


def test_unknown_builtin_model_is_a_clear_error(tmp_path):
    from mlora_core.builtin_model import ensure_builtin_model

    with pytest.raises(ValueError, match="unknown builtin model 'huge'"):
        ensure_builtin_model("huge", cache_dir=tmp_path)
