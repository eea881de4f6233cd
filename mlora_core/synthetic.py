"""The embedded default's data: a shop with a secret price list, in GSM8K's format.

One small world (names, verbs, ITEMS) and two corpora over it:

* pre-training corpus (`pretrain_texts`): every price is *stated in the question* (a random
  single digit each time), so the base model learns the format, to copy the prices into the
  answer and to add two digits; plus addition drills ("3+5=8, 9+7=16, ...").

      Question: The cup is 5 dollars and the pen is 3 dollars. Mia buys a pen and a cup. How much does she pay?
      Answer: pen 3, cup 5, 3+5=8 #### 8

* fine-tuning task (`make_examples`): the prices are *not* in the question. Every item has one
  fixed secret price in 1..9 (`PRICES`, a table the base model never saw), so solving a
  problem = recalling the price of both items + the base model's addition:

      Question: Mia buys a pen and a cup. How much does she pay?
      Answer: pen 7, cup 2, 7+2=9 #### 9

Why adapter rank matters: the table holds len(ITEMS) independent item -> digit associations
(64 x log2(9) ~ 200 bits) that no part of the frozen base knows. A rank-r adapter on a
projection can only add an r-dimensional signal per token, so a small r can write the right
digit for only part of the items; exact match needs *both* prices right (~ p^2 for per-item
accuracy p), which turns the per-item gain from rank into a clear accuracy-vs-rank curve.

Train and test are disjoint by construction: the unordered *pair of items* decides a problem's
split (`split_of`, a hash), so every test question buys a combination never seen in training;
it needs every single price (learned from other pairs) plus the addition.
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
VERBS = ("buys", "gets", "orders", "picks")
ITEMS = ("pen", "cup", "hat", "book", "ball", "kite", "lamp", "sock", "shoe", "bag", "cap", "doll",
         "drum", "fork", "jar", "key", "mug", "map", "net", "pan", "pot", "ring", "rope", "soap",
         "bell", "bowl", "box", "brush", "card", "coat", "comb", "desk", "dish", "fan", "flag", "glove",
         "kettle", "knife", "mask", "mat", "mirror", "nail", "pad", "pillow", "pin", "plate", "purse",
         "rug", "saw", "scarf", "sheet", "shirt", "spoon", "stool", "tape", "tent", "tie", "towel",
         "toy", "tray", "vase", "wallet", "watch", "whistle")
PRICE_LO, PRICE_HI = 1, 9     # single digits: the sum of two is 2..18, easy for the base
ITEMS_PER_PROBLEM = 2
PRICE_SEED = 20240611         # fixes the secret price table
PROBLEM_SHARE = 0.7           # pre-training docs that are word problems (rest: addition drills)
UNKNOWN = "?"                 # stands for a price in fine-tuning questions
TEST_FRACTION = 0.25          # share of item pairs reserved for the test split


def _prices() -> dict[str, int]:
    """The secret table: every price 1..9 used about equally often, assigned at random."""
    rng = random.Random(PRICE_SEED)
    span = PRICE_HI - PRICE_LO + 1
    values = [PRICE_LO + i % span for i in range(len(ITEMS))]
    rng.shuffle(values)
    return dict(zip(ITEMS, values))


PRICES: dict[str, int] = _prices()

# every character a question/answer/corpus line can contain (plus the prompt scaffolding)
CHARSET = "".join(sorted(set(string.ascii_letters + string.digits + " .,?!:;+-=*/#$()'\n")))


# ---------------------------------------------------------------------------------------------
# text templates
def prompt(question: str) -> str:
    """The training/eval prompt; the answer follows on the same line."""
    return f"Question: {question}\nAnswer: "


def _question(name: str, verb: str, items: tuple[str, ...], prices: tuple[int, ...] | None = None) -> str:
    """With `prices`: the pre-training form. Without: the fine-tuning form, the same words
    with every price replaced by UNKNOWN (so both forms have the same token positions)."""
    shown = prices if prices is not None else (UNKNOWN,) * len(items)
    bought = " and ".join(f"a {it} for {p} dollars" for it, p in zip(items, shown))
    return f"{name} {verb} {bought}. How much does {PRONOUN[name]} pay?"


def _answer(items: tuple[str, ...], prices: tuple[int, ...]) -> str:
    """One line, GSM8K style: worked text, then '#### N'."""
    total = sum(prices)
    parts = ", ".join(f"{it} {p}" for it, p in zip(items, prices))
    return f"{parts}, {'+'.join(map(str, prices))}={total} #### {total}"


# ---------------------------------------------------------------------------------------------
# fine-tuning task
def split_of(items: tuple[str, ...]) -> str:
    """'test' for a fixed ~TEST_FRACTION of unordered item combinations, else 'train'."""
    key = ",".join(sorted(items))
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return "test" if h < TEST_FRACTION else "train"


def make_examples(split: str, n: int, seed: int = 0) -> list[dict]:
    """`n` distinct {"question", "answer"} problems of `split` ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = random.Random(f"mlora-synthetic/{split}/{seed}")
    out, seen, tries = [], set(), 0
    while len(out) < n:
        tries += 1
        if tries > 100 * n + 10_000:
            raise ValueError(f"cannot draw {n} distinct {split} problems")
        items = tuple(rng.sample(ITEMS, ITEMS_PER_PROBLEM))
        name, verb = rng.choice(NAMES), rng.choice(VERBS)
        if split_of(items) != split:
            continue
        q = _question(name, verb, items)
        if q in seen:
            continue
        seen.add(q)
        out.append({"question": q, "answer": _answer(items, tuple(PRICES[it] for it in items))})
    return out


# ---------------------------------------------------------------------------------------------
# pre-training corpus (the related skills: prices are given, never the secret table)
def pretrain_texts(n: int, seed: int = 0) -> list[str]:
    """`n` documents: word problems with random prices stated (PROBLEM_SHARE of them) and
    addition drills ("3+5=8, 9+7=16, ..."), which teach the sums quickly."""
    rng = random.Random(f"mlora-pretrain/{seed}")
    out = []
    for _ in range(n):
        if rng.random() < PROBLEM_SHARE:
            items = tuple(rng.sample(ITEMS, ITEMS_PER_PROBLEM))
            prices = tuple(rng.randint(PRICE_LO, PRICE_HI) for _ in items)
            q = _question(rng.choice(NAMES), rng.choice(VERBS), items, prices)
            out.append(prompt(q) + _answer(items, prices))
        else:
            sums = [(rng.randint(PRICE_LO, PRICE_HI), rng.randint(PRICE_LO, PRICE_HI)) for _ in range(6)]
            out.append(", ".join(f"{a}+{b}={a + b}" for a, b in sums) + ".")
    return out


def words() -> list[str]:
    """Every letter-word the corpora use (the word-level part of the tokenizer's vocab)."""
    ws = set(NAMES) | set(ITEMS) | set(VERBS) | {"Question", "Answer", "a", "and", "for", "dollars",
                                                  "How", "much", "does", "she", "he", "pay"}
    return sorted(ws)


__all__ = ["CHARSET", "ITEMS", "NAMES", "PRICES", "make_examples", "pretrain_texts", "prompt",
           "split_of", "words"]
