"""Random linearized features over two tiny blocks, shared by the PL and rank-predictor tests."""

from __future__ import annotations

import torch

from lorank.ntk.features import Block, Features

BLOCKS = [Block("q", 0, "query", 6, 5), Block("v", 0, "value", 4, 7)]


def synthetic_features(N: int = 8, K: int = 2, seed: int = 0, blocks=BLOCKS,
                       f0_scale: float = 0.1, tied: bool = False) -> Features:
    """J (N, K, P) and f0 (N, K) Gaussian (float64), labels i mod K; ``tied``: J[:, 1] = −J[:, 0]
    (Φ of rank N of NK rows for K = 2)."""
    g = torch.Generator().manual_seed(seed)
    P = sum(b.size for b in blocks)
    J = torch.randn(N, K, P, generator=g, dtype=torch.float64)
    if tied:
        J[:, 1] = -J[:, 0]
    f0 = f0_scale * torch.randn(N, K, generator=g, dtype=torch.float64)
    return Features(J, f0, torch.arange(N) % K, list(blocks))
