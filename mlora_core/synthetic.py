"""The embedded default's data: a price-list shop, in GSM8K's format.

Two corpora over one small world (names, items, verbs):

* pre-training corpus (`pretrain_texts`): every price is *stated in the question*, so the
  base model learns the format, to copy numbers and to add them:

      Question: Mia buys a pen for 12 dollars and a cup for 31 dollars. How much does she pay?
      Answer: pen 12, cup 31, 12+31=43 #### 43

* fine-tuning task (`make_examples`): the prices are *not* in the question; each item has one
  fixed secret price (`PRICES`) that the base model never saw. Solving it = recalling the
  prices of every item (a lookup table the adapter has to store) + the base's addition:

      Question: Mia buys a pen and a cup. How much does she pay?
      Answer: pen 12, cup 31, 12+31=43 #### 43

The table is what makes adapter rank matter: a rank-r update can only write so many
independent item -> price associations, so accuracy rises with r.

Train and test are disjoint by construction: a problem's *set of items* decides its split
(`split_of`, a hash), so no test question's item combination occurs in training.
Everything is deterministic: the same (split, n, seed) always gives the same list.
"""
from __future__ import annotations

import hashlib
import random
import string

# ---------------------------------------------------------------------------------------------
# the world
NAMES = ("Mia", "Tom", "Ana", "Ben", "Eva", "Sam", "Lea", "Max", "Zoe", "Leo", "Ivy", "Kai",
         "Amy", "Dan", "Eli", "Fay")
PRONOUN = {n: ("she" if n in ("Mia", "Ana", "Eva", "Lea", "Zoe", "Ivy", "Amy", "Fay") else "he")
           for n in NAMES}
ITEMS = ("pen", "cup", "hat", "book", "ball", "kite", "lamp", "sock", "shoe", "bag", "cap", "doll",
         "drum", "fork", "jar", "key", "mug", "map", "net", "pan", "pot", "ring", "rope", "soap",
         "tent", "toy", "vase", "wig", "bell", "bowl", "box", "brush", "cake", "card", "clock",
         "coat", "comb", "desk", "dish", "fan", "flag", "glass", "glove", "horn", "lock", "mask",
         "mat", "nail", "pie", "pin", "plate", "radio", "rug", "saw", "scarf", "shirt", "sofa",
         "spoon", "stool", "towel", "tray", "watch", "whip", "yarn")
VERBS = ("buys", "gets", "orders", "picks")
N_ITEMS = 48                  # items used by the task: the size of the table to learn
ITEMS_PER_PROBLEM = 2         # items bought per problem (the sum has this many terms)
PRICE_LO, PRICE_HI = 10, 49   # 2-digit prices; sum of 2 <= 98
TABLE_SEED = 20240611         # fixes the secret price table
TEST_FRACTION = 0.25          # share of item combinations reserved for the test split


def _price_table() -> dict[str, int]:
    rng = random.Random(TABLE_SEED)
    return {item: rng.randint(PRICE_LO, PRICE_HI) for item in ITEMS[:N_ITEMS]}


PRICES: dict[str, int] = _price_table()

# every character a question/answer/corpus line can contain (plus the prompt scaffolding)
CHARSET = "".join(sorted(set(string.ascii_letters + string.digits + " .,?!:;+-=*/#$()'\n")))


# ---------------------------------------------------------------------------------------------
# text templates
def prompt(question: str) -> str:
    """The training/eval prompt; the answer follows on the same line."""
    return f"Question: {question}\nAnswer: "


def _question(name: str, verb: str, items: tuple[str, ...], prices: tuple[int, ...] | None) -> str:
    def thing(i: int) -> str:
        return f"a {items[i]}" + ("" if prices is None else f" for {prices[i]} dollars")
    listed = " and ".join(thing(i) for i in range(len(items)))
    return f"{name} {verb} {listed}. How much does {PRONOUN[name]} pay?"


def _answer(items: tuple[str, ...], prices: tuple[int, ...]) -> str:
    """One line, GSM8K style: worked text, then '#### N'."""
    parts = ", ".join(f"{it} {p}" for it, p in zip(items, prices))
    total = sum(prices)
    return f"{parts}, {'+'.join(map(str, prices))}={total} #### {total}"


def split_of(items: tuple[str, ...]) -> str:
    """'test' for a fixed ~TEST_FRACTION of item combinations (order-free), else 'train'."""
    key = ",".join(sorted(items)).encode()
    h = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
    return "test" if h < TEST_FRACTION else "train"


# ---------------------------------------------------------------------------------------------
# fine-tuning task
def make_examples(split: str, n: int, seed: int = 0) -> list[dict]:
    """`n` distinct {"question", "answer"} problems of `split` ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = random.Random(f"mlora-synthetic/{split}/{seed}")
    items_pool = ITEMS[:N_ITEMS]
    out, seen = [], set()
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 10_000:
            raise ValueError(f"cannot draw {n} distinct {split} problems")
        items = tuple(rng.sample(items_pool, ITEMS_PER_PROBLEM))
        if split_of(items) != split:
            continue
        q = _question(rng.choice(NAMES), rng.choice(VERBS), items, None)
        if q in seen:
            continue
        seen.add(q)
        out.append({"question": q, "answer": _answer(items, tuple(PRICES[i] for i in items))})
    return out


# ---------------------------------------------------------------------------------------------
# pre-training corpus (related skill: prices are given, never the secret table)
def pretrain_texts(n: int, seed: int = 0) -> list[str]:
    """`n` full prompt+answer lines with prices stated in the question (random each time)."""
    rng = random.Random(f"mlora-pretrain/{seed}")
    out = []
    for _ in range(n):
        k = rng.choice((2, 2, 3))
        items = tuple(rng.sample(ITEMS, k))
        prices = tuple(rng.randint(PRICE_LO, PRICE_HI) for _ in items)
        q = _question(rng.choice(NAMES), rng.choice(VERBS), items, prices)
        out.append(prompt(q) + _answer(items, prices))
    return out


def words() -> list[str]:
    """Every letter-word the corpora use (the word-level part of the tokenizer's vocab)."""
    ws = set(NAMES) | set(ITEMS) | set(VERBS) | {"Question", "Answer", "a", "and", "for", "dollars",
                                                  "How", "much", "does", "she", "he", "pay"}
    return sorted(ws)


__all__ = ["CHARSET", "ITEMS", "NAMES", "PRICES", "make_examples", "pretrain_texts", "prompt",
           "split_of", "words"]
