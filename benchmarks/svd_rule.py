"""The SVD rank-k rule's cost on one 8B-shaped layer, side by side with the dense route (figure 8).

    8. SVD factors via QR of A^T and B + an r x r SVD / truncated SVD of the dense update

Layer: Llama-3.1-8B's MLP shape, gate_proj 4096 -> 14336 (in x out), at the paper's max rank
256, fp32 adapters (as on a bf16 base). Our route (mlora_core.layer.svd_factors) costs
O((in + out) r^2) and never forms the 14336 x 4096 update; the dense route forms it and runs
torch.svd_lowrank at q = r (a randomized SVD, the cheapest dense choice; a full SVD of the
dense matrix is slower still). Both give the rank-k factors for every k <= r.

    python benchmarks/svd_rule.py [--quick]
"""
from __future__ import annotations

import sys

import torch
from _common import interleaved, record

from mlora_core.layer import svd_factors

QUICK = "--quick" in sys.argv
IN, OUT, RANK = 4096, 14336, 256


def main() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(RANK, IN, generator=g) / IN ** 0.5
    b = torch.randn(OUT, RANK, generator=g) / RANK ** 0.5
    p = torch.linspace(2.0, 0.1, RANK)    # any P: a Matryoshka one decreases with j

    def dense():
        return torch.svd_lowrank((b * p) @ a, q=RANK, niter=2)

    times = interleaved({"qr": lambda: svd_factors(a, b, p), "dense": dense}, repeats=2 if QUICK else 5,
                        warmup=1)
    a_s, b_s = svd_factors(a, b, p)
    err = float(torch.linalg.matrix_norm((b_s @ a_s).double() - ((b * p) @ a).double()) /
                torch.linalg.matrix_norm(((b * p) @ a).double()))
    record("svd_rule", "8. SVD rule via QR / dense randomized SVD (4096x14336, r=256)", times["qr"] / times["dense"],
           "reported", qr_seconds=times["qr"], dense_seconds=times["dense"], full_rank_relative_error=err,
           shape=[IN, OUT, RANK])
    print(f"   SVD factors of one 8B-shaped layer: {times['qr']:.3f} s (dense route {times['dense']:.3f} s); "
          f"full-rank reconstruction error {err:.1e} (relative, Frobenius)")


if __name__ == "__main__":
    main()
