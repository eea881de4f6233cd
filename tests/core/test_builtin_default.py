"""The embedded default: the synthetic task and the self-pre-trained `builtin:tiny` model."""
from __future__ import annotations

import os
import re

import pytest

from mlora_core import synthetic
from mlora_core.builtin_model import build_tokenizer
from mlora_core.tasks import parse_final_number


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
