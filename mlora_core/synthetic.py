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
         "drum", "fork", "jar", "key", "mug", "map", "net", "pan", "pot", "ring", "rope", "soap")
VERBS = ("buys", "gets", "orders", "picks")
CODE_WORDS = ("red", "blue", "green", "gold")   # one digit code per word: the table to learn
ITEMS_PER_PROBLEM = 2         # items bought per problem (the sum has this many terms)
PRICE_LO, PRICE_HI = 10, 49   # 2-digit prices; sum of 2 in 20..98
CODE_SEED = 20240611          # fixes the digit codes
PROBLEM_SHARE = 0.6           # pre-training docs that are word problems (rest: drills)
TEST_FRACTION = 0.25          # share of (prices, code) keys reserved for the test split


def _derangement(rng: random.Random) -> tuple[int, ...]:
    """A permutation of 0..9 with no fixed point (so a plain answer is never right)."""
    while True:
        p = list(range(10))
        rng.shuffle(p)
        if all(p[d] != d for d in range(10)):
            return tuple(p)


def _codes() -> dict[str, tuple[int, ...]]:
    rng = random.Random(CODE_SEED)
    return {w: _derangement(rng) for w in CODE_WORDS}


CODES: dict[str, tuple[int, ...]] = _codes()

# every character a question/answer/corpus line can contain (plus the prompt scaffolding)
CHARSET = "".join(sorted(set(string.ascii_letters + string.digits + " .,?!:;+-=*/#$()'\n")))


# ---------------------------------------------------------------------------------------------
# text templates
def prompt(question: str) -> str:
    """The training/eval prompt; the answer follows on the same line."""
    return f"Question: {question}\nAnswer: "


def _question(name: str, verb: str, items: tuple[str, ...], prices: tuple[int, ...],
              code: str | None = None) -> str:
    listed = " and ".join(f"a {it} for {p} dollars" for it, p in zip(items, prices))
    tail = "" if code is None else f" in {code} code"
    return f"{name} {verb} {listed}. How much does {PRONOUN[name]} pay{tail}?"


def _answer(items: tuple[str, ...], prices: tuple[int, ...], code: str | None = None) -> str:
    """One line, GSM8K style: worked text, then '#### N'."""
    total = sum(prices)
    parts = ", ".join(f"{it} {p}" for it, p in zip(items, prices))
    work = f"{parts}, {'+'.join(map(str, prices))}={total}"
    if code is None:
        return f"{work} #### {total}"
    coded = encode(total, code)
    return f"{work}, in {code} code {coded} #### {coded}"


# ---------------------------------------------------------------------------------------------
# fine-tuning task
def encode(n: int, code: str) -> str:
    """`n` written in `code`: every digit d replaced by CODES[code][d] (may start with 0)."""
    return "".join(str(CODES[code][int(d)]) for d in str(n))


def split_of(prices: tuple[int, ...], code: str) -> str:
    """'test' for a fixed ~TEST_FRACTION of (price multiset, code) keys, else 'train'."""
    key = ",".join(map(str, sorted(prices))) + "/" + code
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
        prices = tuple(rng.randint(PRICE_LO, PRICE_HI) for _ in items)
        code = rng.choice(CODE_WORDS)
        if split_of(prices, code) != split:
            continue
        q = _question(rng.choice(NAMES), rng.choice(VERBS), items, prices, code)
        if q in seen:
            continue
        seen.add(q)
        out.append({"question": q, "answer": _answer(items, prices, code)})
    return out


# ---------------------------------------------------------------------------------------------
# pre-training corpus (related skill: prices are given, never the secret table)
def pretrain_texts(n: int, seed: int = 0) -> list[str]:
    """`n` documents: word problems with their prices stated (PROBLEM_SHARE of them) and
    addition drills ("12+31=43, 27+15=42, ..."), which teach the sums quickly."""
    rng = random.Random(f"mlora-pretrain/{seed}")
    out = []
    for _ in range(n):
        if rng.random() < PROBLEM_SHARE:
            items = tuple(rng.sample(ITEMS, ITEMS_PER_PROBLEM))
            prices = tuple(rng.randint(PRICE_LO, PRICE_HI) for _ in items)
            q = _question(rng.choice(NAMES), rng.choice(VERBS), items, prices)
            out.append(prompt(q) + _answer(items, prices))
        else:
            sums = [(rng.randint(PRICE_LO, PRICE_HI), rng.randint(PRICE_LO, PRICE_HI)) for _ in range(4)]
            out.append(", ".join(f"{a}+{b}={a + b}" for a, b in sums) + ".")
    return out


def words() -> list[str]:
    """Every letter-word the corpora use (the word-level part of the tokenizer's vocab)."""
    ws = set(NAMES) | set(ITEMS) | set(VERBS) | {"Question", "Answer", "a", "and", "for", "dollars",
                                                  "How", "much", "does", "she", "he", "pay",
                                                  "in", "code"} | set(CODE_WORDS)
    return sorted(ws)


__all__ = ["CHARSET", "ITEMS", "NAMES", "CODES", "encode", "make_examples", "pretrain_texts", "prompt",
           "split_of", "words"]
