"""`random.Random(seed).shuffle(list(range(size)))`, exactly, read at a few positions without
`size` Python steps (issue 38: a trial's n examples out of a million rows).

The shuffle is CPython's Fisher-Yates: for i = size-1 .. 1, swap x[i] with x[j], j =
randbelow(i + 1), where randbelow(m) takes the top m.bit_length() bits of the Mersenne
Twister's next 32-bit word until one is < m. numpy's MT19937, given the same state, yields the
same words, so the draws are made in blocks: a word is accepted whatever the bound in the
block if its value is below all of them, refused if above all; only the few in between are
decided one by one. Then each wanted position is traced back through the swaps it takes part
in (a few per position), never through all of them. Small sizes, and reading most of the
positions, keep random.shuffle itself.
"""
from __future__ import annotations

import random

import numpy as np

SMALL = 50_000   # below this, random.shuffle (as fast as the arrays here, and the very same code)
BLOCK = 4096     # draws decided together


def _stream(seed: int) -> np.random.MT19937:
    """numpy's Mersenne Twister in the state random.Random(seed) starts in."""
    state = random.Random(seed).getstate()[1]
    words = np.random.MT19937()
    words.state = {"bit_generator": "MT19937",
                   "state": {"key": np.asarray(state[:-1], dtype=np.uint32), "pos": state[-1]}}
    return words


def _block(v: np.ndarray, m: int, b: int) -> tuple[np.ndarray, int] | None:
    """(the b values accepted for bounds m, m-1, .., m-b+1, words used) from candidate values v
    (top bits of the next words), or None when v runs out first."""
    accept = v <= m - b                          # below every bound of the block
    unsure = np.flatnonzero((v > m - b) & (v < m))
    if len(unsure):
        before = (np.cumsum(accept) - accept)[unsure].tolist()   # sure accepts before each
        extra = 0
        for q, a, value in zip(unsure.tolist(), before, v[unsure].tolist()):
            if a + extra >= b:
                break
            if value < m - a - extra:
                accept[q] = True
                extra += 1
    count = np.cumsum(accept)
    end = int(np.searchsorted(count, b))         # the word that made the b-th accept
    return (v[:end + 1][accept[:end + 1]], end + 1) if end < len(count) else None


def swaps(seed: int, size: int) -> np.ndarray:
    """j: random.Random(seed).shuffle of `size` items swaps x[i] with x[j[i]] at step i (j[0] = 0)."""
    j, words = np.zeros(size, dtype=np.int64), _stream(seed)
    raw, p, m = np.empty(0, dtype=np.uint64), 0, size    # words drawn, used; the next step's bound
    while m >= 2:
        k = m.bit_length()
        b = min(BLOCK, m - max(1 << (k - 1), 2) + 1)     # bounds of one bit length
        want = 2 * b + 64
        while True:
            if len(raw) - p < want:
                raw, p = np.concatenate([raw[p:], words.random_raw(max(want, 1 << 16))]), 0
            got = _block((raw[p:p + want] >> np.uint64(32 - k)).astype(np.int64), m, b)
            if got is not None:
                break
            want *= 2
        values, used = got
        j[m - b:m] = values[::-1]                        # bound m is step m - 1
        p, m = p + used, m - b
    return j


def origins(j: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """For each position after the shuffle that drew j, the index it came from: each is traced
    back through the swaps, undone in the order i = 1, 2, ..: step p moves it to j[p], then each
    later step i with j[i] equal to where it is moves it to i."""
    size = len(j)
    keys = j * size                                      # (partner, step) of every swap, in order:
    keys += np.arange(size)                              # a self-swap (j[i] == i) is never looked up
    keys.sort()
    at, since = j[positions].copy(), np.asarray(positions, dtype=np.int64).copy()
    live = np.arange(len(at))
    while len(live):
        k = np.searchsorted(keys, at[live] * size + since[live], side="right")
        hit = k < len(keys)
        hit[hit] = keys[k[hit]] // size == at[live[hit]]
        live, step = live[hit], keys[k[hit]] % size
        at[live], since[live] = step, step
    return at


def shuffled_at(size: int, seed: int, positions: list[int]) -> list[int]:
    """[x[p] for p in positions], x = list(range(size)) after random.Random(seed).shuffle(x)."""
    if size < SMALL or len(positions) > size // 8:   # most of them: as fast in one pass
        x = list(range(size))
        random.Random(seed).shuffle(x)
        return [x[p] for p in positions]
    return origins(swaps(seed, size), np.asarray(positions, dtype=np.int64)).tolist()


__all__ = ["shuffled_at"]
