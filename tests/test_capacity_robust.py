"""Solvers that cannot crash: singular LM systems, failed instances, the pinned C* seeds (#16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cstar_helpers import cstar
from lorank.capacity import solvers
from lorank.capacity.problems import SensingBatch, gaussian_batch
from lorank.capacity.solvers import solve, solve_lm
from lorank.linalg import solve_batched, solve_one

torch.set_num_threads(1)


# --- the batched solve with a per-element fallback ---------------------------------------------

def test_solve_batched_repairs_singular_and_flags_non_finite_elements():
    gen = torch.Generator().manual_seed(0)
    S = torch.randn(5, 4, 4, generator=gen, dtype=torch.float64)
    S = S @ S.mT + 0.1 * torch.eye(4, dtype=torch.float64)
    b = torch.randn(5, 4, 2, generator=gen, dtype=torch.float64)
    S[1] = 0.0                                  # exactly singular: LU meets a zero pivot
    S[2, -1, :] = S[2, :, -1] = 0.0             # rank 3, an exact zero pivot
    S[3, 0, 0] = float("nan")                   # not finite: nothing to solve
    with pytest.raises(RuntimeError, match="singular"):
        torch.linalg.solve(S[:3], b[:3])        # what the LM solver used to call
    x, failed = solve_batched(S, b)
    assert failed.tolist() == [False, False, False, True, False]
    for i in (0, 4):                            # regular elements: exactly the LU solution
        assert torch.equal(x[i], torch.linalg.solve(S[i], b[i]))
    assert torch.equal(x[1], torch.zeros(4, 2, dtype=torch.float64))  # S⁺ = 0 for S = 0
    # rank 3: the minimum-norm least-squares solution = the leading 3x3 block's solution, 0
    np.testing.assert_allclose(x[2, :3].numpy(), torch.linalg.solve(S[2, :3, :3], b[2, :3]),
                               rtol=1e-10)
    assert torch.allclose(x[2, 3], torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.equal(x[3], torch.zeros(4, 2, dtype=torch.float64))


def test_solve_one_raises_one_line_on_non_finite_system():
    from lorank.errors import LorankError

    S = torch.eye(3, dtype=torch.float64)
    assert torch.equal(solve_one(S, torch.ones(3, dtype=torch.float64), "x"),
                       torch.ones(3, dtype=torch.float64))
    S[0, 0] = float("inf")
    with pytest.raises(LorankError, match="kernel: the linear system has no finite solution"):
        solve_one(S, torch.ones(3, dtype=torch.float64), "kernel")


# --- the seeds that crashed `lorank cstar --solver lm` (r = 1, m = n = 24) ---------------------

#: (seed, KN, instances, first instance): chunks of the quick spec's C* sweep whose batched
#: torch.linalg.solve raised "(Batch element k): ... singular" before the damping floor.
CRASHED = [(0, 59, 60, 32), (2, 52, 20, 0), (3, 59, 20, 0), (4, 52, 20, 0)]


@pytest.mark.parametrize(("seed", "KN", "instances", "lo"), CRASHED)
def test_pinned_crashing_lm_chunks_now_return(seed, KN, instances, lo):
    batch = gaussian_batch(1, 24, 24, KN, instances, seed).select(range(lo, min(instances,
                                                                              lo + 32)))
    res = solve_lm(batch, steps=200, tol=1e-8)
    # KN > d = 47: over-determined, no instance can fit; none fails numerically either
    assert not res.success.any() and not res.failed.any() and not res.diverged.any()
    assert np.all(np.isfinite(res.rel_loss)) and np.all(res.rel_loss >= 1e-8)


def test_pinned_instance_without_floor_is_saved_by_the_fallback(monkeypatch):
    # seed 2, KN 59, instance 18 crashed when solved alone; with the floor switched off the
    # per-instance pseudo-inverse fallback alone must carry it through, to the same result.
    batch = gaussian_batch(1, 24, 24, 59, 19, seed=2).select([18])
    with_floor = solve_lm(batch, steps=200, tol=1e-8)
    monkeypatch.setitem(solvers.MU_FLOOR, torch.float64, 0.0)
    without = solve_lm(batch, steps=200, tol=1e-8)
    assert not without.failed.any() and not without.success.any()
    np.testing.assert_allclose(without.rel_loss, with_floor.rel_loss, rtol=1e-6)


def test_lm_floor_keeps_solvable_results():
    # seed 0 at d = KN (the transition point): 24 of 60 succeed, as before the floor
    res = solve(gaussian_batch(1, 24, 24, 47, 60, seed=0), "lm", steps=200, tol=1e-8)
    assert int(res.success.sum()) == 24 and not res.failed.any()


@pytest.mark.slow
def test_cstar_lm_seed0_returns_an_estimate_near_one():
    res = cstar(1, 24, 24, solver="lm", instances=60, seed=0)
    assert res.bracketed and res.failed == 0
    assert 0.97 < res.c50 < 1.03
    assert res.curve.successes == (0, 0, 24, 60, 60, 60, 60, 60, 60, 60)


# --- failed instances are recorded, the rest of the batch is untouched -------------------------

def _with_extreme_init(batch: SensingBatch, i: int) -> SensingBatch:
    """Instance i gets B0 ~ 1e-157, A0 ~ 1e163: BA stays O(1) (finite loss) but JᵀJ overflows."""
    B0, A0 = batch.B0.copy(), batch.A0.copy()
    B0[i] *= 1e-157
    A0[i] *= 1e163
    return SensingBatch(batch.G, batch.y, B0, A0, batch.targets)


def test_lm_instance_with_non_finite_system_fails_alone():
    batch = gaussian_batch(1, 6, 6, 8, 4, seed=0)
    res = solve(_with_extreme_init(batch, 1), "lm", steps=50, tol=1e-10)
    assert res.failed.tolist() == [False, True, False, False]
    assert not res.success[1] and res.steps[1] == 0
    assert list(res.reasons) == [1] and "no finite solution" in res.reasons[1]
    rest = solve(batch.select([0, 2, 3]), "lm", steps=50, tol=1e-10)
    np.testing.assert_array_equal(res.success[[0, 2, 3]], rest.success)
    np.testing.assert_allclose(res.rel_loss[[0, 2, 3]], rest.rel_loss, rtol=1e-6, atol=1e-14)


def test_chunked_solve_offsets_failure_reasons():
    batch = _with_extreme_init(gaussian_batch(1, 6, 6, 8, 5, seed=0), 3)
    res = solve(batch, "lm", chunk=2, steps=30, tol=1e-10)
    assert list(res.reasons) == [3] and res.failed.tolist() == [False] * 3 + [True, False]


def test_gd_bound_with_non_finite_instance_does_not_raise():
    batch = gaussian_batch(1, 5, 5, 6, 8, seed=1)
    G = batch.G.copy()
    G[2, 0, 0, 0] = np.inf  # its Gram matrix is not finite: eigvalsh would raise
    bad = SensingBatch(G, batch.y, batch.B0, batch.A0, batch.targets)
    res = solve(bad, "gd", steps=40, tol=1e-8, backend="torch", step_rule="bound",
                dtype="float64")
    assert res.diverged.tolist() == [i == 2 for i in range(8)]
    good = solve(batch, "gd", steps=40, tol=1e-8, backend="torch", step_rule="bound",
                 dtype="float64")
    keep = [i for i in range(8) if i != 2]
    np.testing.assert_array_equal(res.rel_loss[keep], good.rel_loss[keep])


# --- property: no seed, shape, rank, loss or solver crashes ------------------------------------

@st.composite
def problems(draw):
    m = draw(st.integers(2, 7))
    n = draw(st.integers(2, 7))
    r = draw(st.integers(1, min(m, n)))
    p = r * (m + n)
    KN = draw(st.integers(1, 2 * p))  # both LM forms, over- and under-determined
    return r, m, n, KN


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(), seed=st.integers(0, 2**31 - 1), instances=st.integers(1, 6),
       solver=st.sampled_from(["lm", "lm", "gd-hessian", "gd-bound"]),
       loss=st.sampled_from(["mse", "ce"]), dtype=st.sampled_from(["float64", "float32"]),
       steps=st.integers(1, 200))
# two single instances that raised "singular" before the damping floor (KN > r(m+n): primal form)
@example(problem=(1, 6, 6, 14), seed=0, instances=1, solver="lm", loss="mse", dtype="float64",
         steps=200)
@example(problem=(1, 5, 3, 9), seed=39, instances=1, solver="lm", loss="mse", dtype="float32",
         steps=200)
def test_no_solver_crashes(problem, seed, instances, solver, loss, dtype, steps):
    r, m, n, KN = problem
    batch = gaussian_batch(r, m, n, KN, instances, seed,
                           targets="sign" if loss == "ce" else "gaussian")
    tol = 1e-3 if loss == "ce" else 1e-8
    if solver == "lm":
        res = solve(batch, "lm", loss=loss, steps=steps, tol=tol, dtype=dtype)
    else:
        res = solve(batch, "gd", loss=loss, steps=steps, tol=tol, dtype=dtype,
                    backend="torch", step_rule=solver.split("-")[1])
    assert res.rel_loss.shape == res.success.shape == res.failed.shape == (instances,)
    assert np.all(res.steps <= steps)
    assert np.all(res.rel_loss[res.success] < tol)
    ok = ~(res.diverged | res.failed)
    assert np.all(np.isfinite(res.rel_loss[ok]))
    assert set(res.reasons) == set(np.flatnonzero(res.failed).tolist())


def test_estimator_counts_and_reports_failed_instances(monkeypatch):
    # the estimator's own generator, with instance 1 of every grid point given the overflowing
    # init: those instances fail, are counted per point and listed with their reason
    from lorank.capacity import estimator

    real = estimator.gaussian_batch
    monkeypatch.setattr(estimator, "gaussian_batch",
                        lambda *a, **k: _with_extreme_init(real(*a, **k), 1))
    res = cstar(1, 5, 5, solver="lm", steps=40, instances=4, n_boot=20,
                          ratios=(0.8, 1.0, 1.5, 2.0))
    assert res.curve.failed == (1, 1, 1, 1) and res.failed == 4
    assert all(s <= 3 for s in res.curve.successes)
    assert len(res.failures) == 4 and res.failures[0].startswith("KN=11 instance 1: LM step 0")
    assert res.to_dict()["failed"] == 4
