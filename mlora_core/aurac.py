"""AURAC: area under the rank-accuracy curve, normalised to the rank range (docs/method.md)."""
from __future__ import annotations

import math
from collections.abc import Sequence


def aurac(ranks: Sequence[int], accuracies: Sequence[float], log2: bool = False) -> float:
    """Trapezoid area of accuracy over rank (or log2 rank) / the width of that axis.

    One rank -> its accuracy. Input need not be sorted. In [0, 1] when accuracies are."""
    if len(ranks) != len(accuracies):
        raise ValueError(f"aurac: {len(ranks)} ranks but {len(accuracies)} accuracies")
    if not ranks:
        raise ValueError("aurac: no ranks given")
    if any(k <= 0 for k in ranks) or len(set(ranks)) != len(ranks):
        raise ValueError(f"aurac: ranks must be distinct positive integers, got {list(ranks)}")
    points = sorted(zip(ranks, accuracies))
    if len(points) == 1:
        return float(points[0][1])
    xs = [math.log2(k) if log2 else float(k) for k, _ in points]
    ys = [float(a) for _, a in points]
    area = sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1))
    return area / (xs[-1] - xs[0])
