"""Solvers of the capacity problem: batched == one-by-one, LM/GD fit easy instances, CE, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lorank.capacity.problems import gaussian_batch
from lorank.capacity.solvers import solve, solve_gd, solve_lm
from lorank.errors import LorankError

torch.set_num_threads(1)


def _one_by_one(batch, fn, **kw):
    parts = [fn(batch.select([i]), **kw) for i in range(batch.shape[0])]
    return (np.concatenate([p.rel_loss for p in parts]),
            np.concatenate([p.success for p in parts]),
            np.concatenate([p.steps for p in parts]))


@pytest.mark.parametrize("step_rule", ["hessian", "bound"])
def test_gd_batched_equals_one_by_one(step_rule):
    batch = gaussian_batch(1, 8, 8, 12, 6, seed=3)
    res = solve_gd(batch, steps=300, tol=1e-6, step_rule=step_rule, dtype="float64")
    rel, succ, steps = _one_by_one(batch, solve_gd, steps=300, tol=1e-6, step_rule=step_rule,
                                   dtype="float64")
    np.testing.assert_array_equal(res.success, succ)
    np.testing.assert_array_equal(res.steps, steps)
    np.testing.assert_allclose(res.rel_loss, rel, rtol=1e-6, atol=1e-12)


def test_lm_batched_equals_one_by_one():
    batch = gaussian_batch(2, 6, 7, 18, 5, seed=1)
    res = solve_lm(batch, steps=60, tol=1e-10)
    rel, succ, steps = _one_by_one(batch, solve_lm, steps=60, tol=1e-10)
    np.testing.assert_array_equal(res.success, succ)
    np.testing.assert_array_equal(res.steps, steps)
    np.testing.assert_allclose(res.rel_loss, rel, rtol=1e-6, atol=1e-14)


def test_chunked_solve_equals_single_batch():
    batch = gaussian_batch(1, 8, 8, 10, 7, seed=2)
    a = solve(batch, "gd", chunk=3, steps=200, tol=1e-6, dtype="float64")
    b = solve(batch, "gd", chunk=7, steps=200, tol=1e-6, dtype="float64")
    np.testing.assert_array_equal(a.success, b.success)
    np.testing.assert_allclose(a.rel_loss, b.rel_loss, rtol=1e-9)


def test_lm_fits_underdetermined_and_not_overdetermined():
    # d = 2*(8+8) - 4 = 28: KN = 14 (ratio 2) is fittable, KN = 40 (ratio 0.7) is not.
    easy = solve_lm(gaussian_batch(2, 8, 8, 14, 4, seed=0), steps=100, tol=1e-10)
    hard = solve_lm(gaussian_batch(2, 8, 8, 40, 4, seed=0), steps=100, tol=1e-10)
    assert easy.success.all()
    assert not hard.success.any()
    assert np.all(hard.rel_loss > 1e-3)


def test_gd_success_means_small_residual():
    batch = gaussian_batch(1, 10, 10, 6, 3, seed=5)
    res = solve_gd(batch, steps=2000, tol=1e-8, dtype="float64")
    assert res.success.all()
    X = res.B @ res.A
    z = np.einsum("ikmn,imn->ik", batch.G, X)
    rel = 0.5 * ((z - batch.y) ** 2).sum(1) / (0.5 * (batch.y**2).sum(1))
    np.testing.assert_allclose(rel, res.rel_loss, rtol=1e-6)
    assert np.all(rel < 1e-8)


def test_gd_ce_separates_small_problem():
    batch = gaussian_batch(1, 10, 10, 8, 3, seed=0, targets="sign")
    res = solve_gd(batch, loss="ce", steps=500, tol=1e-3)
    assert res.success.all()
    z = np.einsum("ikmn,imn->ik", batch.G, res.B @ res.A)
    assert np.all(z * batch.y > 0)


def test_trace_records_losses_and_gradients():
    batch = gaussian_batch(1, 6, 6, 5, 2, seed=0)
    res = solve_gd(batch, steps=50, tol=0.0, trace=True, dtype="float64")
    assert res.trace_loss.shape == (50, 2)
    assert np.all(np.isfinite(res.trace_loss))
    assert np.all(res.trace_grad_sq >= 0)
    # the traced gradient is the gradient: compare with autograd at step 0
    B = torch.tensor(batch.B0[0], requires_grad=True)
    A = torch.tensor(batch.A0[0], requires_grad=True)
    z = torch.einsum("kmn,mn->k", torch.tensor(batch.G[0]), B @ A)
    L = 0.5 * ((z - torch.tensor(batch.y[0])) ** 2).sum()
    L.backward()
    assert res.trace_loss[0, 0] == pytest.approx(L.item(), rel=1e-12)
    gsq = (B.grad**2).sum() + (A.grad**2).sum()
    assert res.trace_grad_sq[0, 0] == pytest.approx(gsq.item(), rel=1e-10)
    assert not res.success.any()  # tol = 0 never stops early


def test_solver_errors():
    batch = gaussian_batch(1, 4, 4, 3, 1)
    with pytest.raises(LorankError, match="solver"):
        solve(batch, "adam")
    with pytest.raises(LorankError, match="steps"):
        solve_gd(batch, steps=0)
    with pytest.raises(LorankError, match="tol"):
        solve_gd(batch, tol=-1.0)
    with pytest.raises(LorankError, match="step_scale"):
        solve_gd(batch, step_scale=2.5)
    with pytest.raises(LorankError, match="targets"):
        solve_gd(batch, loss="ce")
    with pytest.raises(LorankError, match="loss"):
        solve_lm(batch, loss="hinge")
