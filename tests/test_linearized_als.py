"""The ALS squared-loss floor (lorank.linearized.als) on factor features with known answers."""

from __future__ import annotations

import pytest
import torch

from lorank.errors import LorankError
from lorank.linearized.als import als_floor
from lorank.ntk.features import Block, Features
from lorank.ntk.jacobian import TokenFactors

ONE = (Block("q", 0, "query", 5, 4),)


def factor_features(N=12, K=2, blocks=ONE, tokens=3, seed=0, f0_scale=0.3) -> Features:
    """Random per-token factors (tokens per example), J built from them, labels i mod K."""
    g = torch.Generator().manual_seed(seed)
    ex = torch.arange(N).repeat_interleave(tokens)
    factors, parts = {}, []
    for b in blocks:
        X = torch.randn(N * tokens, b.n, generator=g, dtype=torch.float64)
        D = torch.randn(K, N * tokens, b.m, generator=g, dtype=torch.float64)
        fac = TokenFactors(ex, X, D)
        factors[b.name] = fac
        parts.append(fac.dense(N).flatten(2))
    J = torch.cat(parts, dim=-1)
    f0 = f0_scale * torch.randn(N, K, generator=g, dtype=torch.float64)
    return Features(J, f0, torch.arange(N) % K, list(blocks), {}, factors)


def test_loss_never_increases_and_counts_decide_interpolation():
    """One 5x4 matrix: d(1) = 8, d(2) = 14, d(3) = 18. With KN = 12 targets rank 1 cannot
    interpolate (d < KN) and rank 2 can (d ≥ KN): floor > 0 vs floor ≈ 0."""
    f = factor_features(N=6, K=2)
    one = als_floor(f, 1, iters=200)
    assert all(b <= a + 1e-12 for a, b in zip(one.losses, one.losses[1:], strict=False))
    assert one.floor > 1e-3
    two = als_floor(f, 2, iters=400, tol=0.0)
    assert two.floor < 1e-6 * one.losses[0]


def test_floor_matches_the_factors_it_returns():
    f = factor_features(N=8, K=2, blocks=(Block("q", 0, "query", 5, 4),
                                          Block("v", 0, "value", 3, 6)))
    fit = als_floor(f, 1, iters=30)
    delta = torch.cat([(b @ a).reshape(-1) for a, b in zip(fit.A, fit.B, strict=True)])
    out = f.f0 + f.J @ delta
    Y = torch.nn.functional.one_hot(f.labels, f.K).double()
    assert 0.5 * float((out - Y).square().sum()) / f.N == pytest.approx(fit.floor, rel=1e-9)


def test_a_realizable_rank_one_target_is_recovered():
    f = factor_features(N=10, K=2, seed=3)
    g = torch.Generator().manual_seed(9)
    u, v = torch.randn(5, 1, generator=g, dtype=torch.float64), torch.randn(1, 4, generator=g,
                                                                            dtype=torch.float64)
    Y = torch.nn.functional.one_hot(f.labels, 2).double()
    f.f0 = Y - f.J @ (u @ v).reshape(-1)  # targets exactly reachable at rank 1
    assert als_floor(f, 1, iters=300, tol=0.0).floor < 1e-10


def test_bad_requests():
    f = factor_features()
    with pytest.raises(LorankError, match="positive integer"):
        als_floor(f, 0)
    f.factors = None
    with pytest.raises(LorankError, match="per-token factors"):
        als_floor(f, 1)
