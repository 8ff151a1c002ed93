"""The compiled (numba) GD solver against the batched torch solver, its reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cstar_helpers import cstar
from lorank.capacity import compiled
from lorank.capacity.problems import gaussian_batch
from lorank.capacity.solvers import resolve_backend, solve, solve_gd
from lorank.errors import LorankError

pytestmark = pytest.mark.skipif(not compiled.available(), reason="numba not installed")


def _both(batch, **kw):
    ref = solve_gd(batch, backend="torch", dtype="float64", **kw)
    out = solve_gd(batch, backend="numba", dtype="float64", **kw)
    return ref, out


def _assert_same(ref, out, rtol=1e-9):
    np.testing.assert_array_equal(out.success, ref.success)
    np.testing.assert_array_equal(out.steps, ref.steps)
    np.testing.assert_array_equal(out.diverged, ref.diverged)
    np.testing.assert_allclose(out.rel_loss, ref.rel_loss, rtol=rtol, atol=1e-15)
    np.testing.assert_allclose(out.B, ref.B, rtol=rtol, atol=1e-10)
    np.testing.assert_allclose(out.A, ref.A, rtol=rtol, atol=1e-10)


@pytest.mark.parametrize("loss,tol", [("mse", 1e-8), ("ce", 1e-2)])
@pytest.mark.parametrize("r,m,n,KN", [(1, 6, 6, 8), (2, 5, 7, 14), (3, 4, 6, 30)])
def test_numba_equals_torch_float64(loss, tol, r, m, n, KN):
    targets = "sign" if loss == "ce" else "gaussian"
    batch = gaussian_batch(r, m, n, KN, 6, seed=3, targets=targets)
    ref, out = _both(batch, loss=loss, steps=150, tol=tol, trace=True)
    _assert_same(ref, out)
    np.testing.assert_allclose(out.trace_loss, ref.trace_loss, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(out.trace_grad_sq, ref.trace_grad_sq, rtol=1e-8, atol=1e-14,
                               equal_nan=True)


@settings(max_examples=25, deadline=None)
@given(r=st.integers(1, 3), m=st.integers(3, 7), n=st.integers(3, 7), KN=st.integers(1, 25),
       loss=st.sampled_from(["mse", "ce"]), scale=st.sampled_from([0.5, 1.0, 1.5]),
       seed=st.integers(0, 10_000))
def test_numba_equals_torch_property(r, m, n, KN, loss, scale, seed):
    r = min(r, m, n)
    batch = gaussian_batch(r, m, n, KN, 3, seed=seed,
                           targets="sign" if loss == "ce" else "gaussian")
    ref, out = _both(batch, loss=loss, steps=60, tol=1e-6, step_scale=scale)
    # the same trajectory up to rounding; instances stop at the same step unless their relative
    # loss sits within rounding of tol at that step
    close = np.abs(ref.rel_loss / 1e-6 - 1) < 1e-6
    keep = ~close
    np.testing.assert_array_equal(out.success[keep], ref.success[keep])
    np.testing.assert_array_equal(out.steps[keep], ref.steps[keep])
    np.testing.assert_allclose(out.rel_loss[keep], ref.rel_loss[keep], rtol=1e-7, atol=1e-14)


def test_float32_close_to_torch_float32():
    batch = gaussian_batch(1, 16, 16, 20, 8, seed=0)
    ref = solve_gd(batch, backend="torch", steps=400)
    out = solve_gd(batch, backend="numba", steps=400)
    np.testing.assert_array_equal(out.success, ref.success)
    np.testing.assert_allclose(out.rel_loss, ref.rel_loss, rtol=1e-2)


def test_divergence_is_a_recorded_failure():
    batch = gaussian_batch(1, 4, 4, 6, 3, seed=0)
    batch.G[1, 2, 0, 0] = np.inf
    for backend in ("torch", "numba"):
        res = solve_gd(batch, backend=backend, steps=20)
        assert res.diverged.tolist() == [False, True, False], backend
        assert not res.success[1] and res.steps[1] == 0


def test_threads_and_batching_do_not_change_results():
    batch = gaussian_batch(1, 8, 8, 12, 7, seed=5)
    one = solve_gd(batch, backend="numba", steps=200, threads=1)
    three = solve_gd(batch, backend="numba", steps=200, threads=3)
    single = [solve_gd(batch.select([i]), backend="numba", steps=200) for i in range(7)]
    for res in (three,):
        np.testing.assert_array_equal(res.rel_loss, one.rel_loss)
        np.testing.assert_array_equal(res.B, one.B)
    np.testing.assert_array_equal(np.concatenate([s.rel_loss for s in single]), one.rel_loss)
    chunked = solve(batch, "gd", chunk=3, backend="numba", steps=200)
    np.testing.assert_array_equal(chunked.rel_loss, one.rel_loss)


def test_progress_counts_the_budget():
    ticks = []
    solve_gd(gaussian_batch(1, 4, 4, 3, 2, seed=0), backend="numba", steps=7,
             progress=ticks.append)
    assert sum(ticks) == 7


def test_resolve_backend():
    assert resolve_backend("auto") == "numba"
    assert resolve_backend("auto", "gd", "bound") == "torch"
    assert resolve_backend("auto", "lm") == "torch"
    assert resolve_backend("torch", "lm") == "torch"
    with pytest.raises(LorankError, match="step_rule 'hessian' only"):
        resolve_backend("numba", "lm")
    with pytest.raises(LorankError, match="step_rule 'hessian' only"):
        resolve_backend("numba", "gd", "bound")
    with pytest.raises(LorankError, match="backend must be one of"):
        resolve_backend("cuda")


def test_missing_numba_falls_back_or_says_so(monkeypatch):
    monkeypatch.setattr(compiled, "numba", None)
    assert resolve_backend("auto") == "torch"
    with pytest.raises(LorankError, match="needs the numba package"):
        resolve_backend("numba")


def test_lm_through_solve_rejects_numba():
    batch = gaussian_batch(1, 4, 4, 3, 2, seed=0)
    with pytest.raises(LorankError, match="hessian' only"):
        solve(batch, "lm", backend="numba", steps=3)
    assert solve(batch, "lm", backend="auto", steps=3).success.shape == (2,)


def test_estimator_records_backend_and_agrees():
    kw = dict(r=1, m=6, n=6, steps=300, instances=12, ratios=(0.8, 1.0, 1.3, 1.8), n_boot=20)
    fast = cstar(backend="auto", **kw)
    ref = cstar(backend="torch", **kw)
    assert fast.backend == "numba" and ref.backend == "torch"
    assert fast.to_dict()["backend"] == "numba"
    diff = np.abs(np.array(fast.curve.successes) - np.array(ref.curve.successes))
    assert diff.max() <= 1  # float32 rounding may flip an instance that ends right at tol
    bound = cstar(step_rule="bound", **kw)
    assert bound.backend == "torch"


@pytest.mark.parametrize("options,msg", [
    ({"backend": "cuda"}, "backend must be one of"),
    ({"backend": "numba", "solver": "lm"}, "step_rule 'hessian' only"),
])
def test_sweep_spec_with_a_bad_backend_fails_at_validation(tmp_path, options, msg):
    from lorank.experiments.runners import LocalRunner
    from lorank.experiments.spec import parse_spec
    from lorank.experiments.store import ResultStore

    runs = parse_spec({"name": "t", "base": {
        "method": "cstar", "task": "gaussian", "model": "gaussian", "rank": 1, "seed": 0,
        "steps": 10, "options": {"m": 4, "n": 4, "instances": 2, **options}}}).runs
    with ResultStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(LorankError, match=msg):
            LocalRunner(progress=False).run(runs, store)
        assert store.query() == []  # nothing queued for a sweep that cannot start
