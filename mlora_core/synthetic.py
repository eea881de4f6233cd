"""The embedded default's data: a shop whose price list only the fine-tuning data knows.

A small world of NAMES and 96 ITEMS (pseudo-words such as "bax", one token each) and two
corpora in GSM8K's "Question: ...\\nAnswer: ... #### N" format:

* pre-training corpus (`pretrain_texts`): the price is *stated* before the question, a
  random 10..99 each time, so the base model learns the format and to answer from context:

      The bax costs 47 dollars. Question: Mia asks: how much is the bax?
      Answer: #### 47

* fine-tuning task (`make_examples`): no price in the question. Every item has one fixed
  secret price (`PRICES`, never seen by the base), so the adapter has to store the table:

      Question: Mia asks: how much is the bax?
      Answer: #### 62

Why adapter rank matters: the table is 96 independent item -> two-digit associations
(~630 bits) the frozen base does not know; a rank-r update writes an r-dimensional signal per
adapted projection, so within the default budget a small r learns a smaller share of the
table (measured: see README, "The embedded default").

Train, validation and test are disjoint: the (name, item) pair decides a question's split
(`split_of`, a hash), so every test (or validation) question is a phrasing never seen in training
while each item's price was learned from other names' questions. Everything is deterministic in
(split, n, seed).
"""
from __future__ import annotations

import hashlib
import random
import string

NAMES = ("Mia", "Tom", "Ana", "Ben", "Eva", "Sam", "Lea", "Max", "Zoe", "Leo", "Ivy", "Kai",
         "Amy", "Dan", "Eli", "Fay")
TEMPLATES = ("{n} asks: how much is the {i}?", "What does {n} pay for the {i}?",
             "{n} wants the {i}. What is its price?")
N_ITEMS, ITEM_SEED = 96, 7
PRICE_LO, PRICE_HI = 10, 99
TEST_FRACTION = 0.25   # share of (name, item) pairs reserved for the test split
VAL_FRACTION = 0.05    # ... and for validation (choosing hyperparameters), taken from what was train
SPLITS = ("train", "val", "test")


def _items() -> tuple[str, ...]:
    """N_ITEMS distinct consonant-vowel-consonant pseudo-words (no meaning the base could use)."""
    rng, cons, vowels, out = random.Random(ITEM_SEED), "bcdfghjklmnprstvz", "aeiou", set()
    while len(out) < N_ITEMS:
        out.add(rng.choice(cons) + rng.choice(vowels) + rng.choice(cons))
    return tuple(sorted(out))


ITEMS: tuple[str, ...] = _items()
PRICES: dict[str, int] = {it: random.Random(f"mlora-price/{it}").randint(PRICE_LO, PRICE_HI) for it in ITEMS}

# every character a question/answer/corpus line can contain
CHARSET = "".join(sorted(set(string.ascii_letters + string.digits + " .,?!:;+-=*/#$()'\n")))


def prompt(question: str) -> str:
    return f"Question: {question}\nAnswer: "


def split_of(name: str, item: str) -> str:
    """'test' for a fixed ~TEST_FRACTION of (name, item) pairs, 'val' for ~VAL_FRACTION, else 'train'."""
    h = int.from_bytes(hashlib.sha256(f"{name}/{item}".encode()).digest()[:8], "big") / 2**64
    return "test" if h < TEST_FRACTION else "val" if h < TEST_FRACTION + VAL_FRACTION else "train"


def make_examples(split: str, n: int, seed: int = 0) -> list[dict]:
    """`n` {"question", "answer"} problems of `split` ("train", "val" or "test"): every (name, item,
    template) of the split once in a seeded order, cycling if n is larger."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    combos = [(nm, it, t) for nm in NAMES for it in ITEMS for t in range(len(TEMPLATES))
              if split_of(nm, it) == split]
    random.Random(f"mlora-synthetic/{split}/{seed}").shuffle(combos)
    return [{"question": TEMPLATES[t].format(n=nm, i=it), "answer": f"#### {PRICES[it]}"}
            for nm, it, t in (combos[i % len(combos)] for i in range(n))]


def pretrain_texts(n: int, seed: int = 0) -> list[str]:
    """`n` documents whose price is given in context (a random price each time)."""
    rng = random.Random(f"mlora-pretrain/{seed}")
    out = []
    for _ in range(n):
        it, nm, t, p = rng.choice(ITEMS), rng.choice(NAMES), rng.randrange(len(TEMPLATES)), \
            rng.randint(PRICE_LO, PRICE_HI)
        out.append(f"The {it} costs {p} dollars. " + prompt(TEMPLATES[t].format(n=nm, i=it)) + f"#### {p}")
    return out


def words() -> list[str]:
    """Every letter-word the corpora use (the word-level part of the tokenizer's vocab)."""
    return sorted(set(NAMES) | set(ITEMS) | {w.strip("{}.?:") for t in TEMPLATES for w in t.split()
                                             if w.strip("{}.?:").isalpha()} |
                  {"Question", "Answer", "The", "costs", "dollars"})


__all__ = ["CHARSET", "ITEMS", "NAMES", "PRICES", "make_examples", "pretrain_texts", "prompt", "split_of", "words"]
