"""PL ratio: closed form on quadratics, guards, and trajectories of the Gaussian model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lorank.capacity.pl import pl_ratios, pl_trajectory
from lorank.errors import LorankError

torch.set_num_threads(1)


def _quadratic(H, x):
    return 0.5 * x @ H @ x, float(np.sum((H @ x) ** 2))


def test_pl_ratio_is_two_lambda_along_eigenvectors():
    H = np.diag([0.5, 2.0, 7.0])
    for lam, e in zip(np.diag(H), np.eye(3), strict=True):
        xs = [c * e for c in (0.3, 1.0, 4.0)]
        vals = [_quadratic(H, x) for x in xs]
        rec = pl_ratios(np.array([v[0] for v in vals]), np.array([v[1] for v in vals]))
        np.testing.assert_allclose(rec.mu, 2 * lam, rtol=1e-12)
        assert rec.mu_min == pytest.approx(2 * lam)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 6))
def test_pl_ratio_of_a_quadratic_lies_in_two_lambda_range(seed, dim):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    lams = rng.uniform(0.1, 5.0, dim)
    H = Q @ np.diag(lams) @ Q.T
    xs = rng.standard_normal((5, dim))
    L, g = zip(*[_quadratic(H, x) for x in xs], strict=True)
    rec = pl_ratios(np.array(L), np.array(g))
    assert np.all(rec.mu >= 2 * lams.min() * (1 - 1e-9))
    assert np.all(rec.mu <= 2 * lams.max() * (1 + 1e-9))
    assert rec.valid == 5


def test_guard_excludes_converged_steps():
    rec = pl_ratios(np.array([1.0, 1e-15, 0.5, np.nan]), np.array([2.0, 1.0, 0.25, 1.0]),
                    L_inf=0.0, eps=1e-12)
    assert rec.valid == 2
    assert math.isnan(rec.mu[1]) and math.isnan(rec.mu[3])
    assert rec.mu_min == pytest.approx(0.5) and rec.t_min == 2
    assert rec.kappa[0] == pytest.approx(math.sqrt(2.0))
    none = pl_ratios(np.array([0.0, 0.0]), np.array([0.0, 0.0]))
    assert none.valid == 0 and math.isnan(none.mu_min) and none.t_min == -1


def test_pl_input_errors():
    with pytest.raises(LorankError, match="equal length"):
        pl_ratios(np.ones(3), np.ones(2))
    with pytest.raises(LorankError, match="empty"):
        pl_ratios(np.array([]), np.array([]))
    with pytest.raises(LorankError, match="non-negative"):
        pl_ratios(np.ones(2), -np.ones(2))


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_trajectory_on_gaussian_model(loss):
    tr = pl_trajectory(loss=loss, r=1, m=8, n=8, KN=6, steps=200, seed=0)
    assert tr.losses.shape == tr.grad_sq.shape and len(tr.losses) == 200
    assert tr.losses[-1] < 1e-3 * tr.losses[0]  # fittable: d = 15 > KN = 6
    assert tr.pl.valid > 0 and tr.pl.mu_min > 0
    # the gradient identity: mu_t * (L_t - 0) == ||grad||^2 where defined
    ok = np.isfinite(tr.pl.mu)
    np.testing.assert_allclose(tr.pl.mu[ok] * tr.losses[ok], tr.grad_sq[ok], rtol=1e-12)
