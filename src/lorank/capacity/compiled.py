r"""Compiled GD solver for the capacity problem: the whole step loop of one instance in one kernel.

The same algorithm as :func:`lorank.capacity.solvers.solve_gd` with ``step_rule="hessian"``
(gradient descent on (B, A) with :math:`\eta_t = c/|\lambda_{max}(\nabla^2 L(\theta_t))|`, one
warm-started power iteration with an exact Hessian-vector product per step, stop at the first
:math:`L_t/L_0 <` tol, a non-finite loss is a divergence), compiled with numba.

Why a second implementation. The batched torch solver is bounded by two things at once: a chunk of
instances large enough to amortise the ~0.3 ms of Python/dispatch per step no longer fits in L2,
so its two passes over G per step run at memory speed (~60 µs per instance-step at KN = 70,
m = n = 32), while a small chunk pays the dispatch. Here each instance runs its T steps inside
one compiled loop, so its G (KN·m·n floats, 280 KB at KN = 70 in float32) stays in L2 for all of
them and there is no per-step dispatch at all; the kernel releases the GIL and a thread pool
hands out one instance at a time (successes stop early, failures run all T steps, so dynamic
hand-out balances the threads). A step is exactly the torch step:

1. :math:`X = BA`, :math:`dX = UA + BV`; one pass over G gives :math:`z_i = \langle G_i, X\rangle`
   and :math:`dz_i = \langle G_i, dX\rangle`;
2. loss terms :math:`L, \ell', \ell''` (computed in float64 whatever G's dtype);
3. a second pass gives :math:`M = \sum_i \ell'_i G_i` and :math:`dM = \sum_i \ell''_i dz_i G_i`;
4. :math:`H(U,V) = (dM A^\top + M V^\top, B^\top dM + U^\top M)`, :math:`\hat L = \|H(U,V)\|`,
   :math:`(U, V) \leftarrow H(U,V)/\hat L`;
5. :math:`B \leftarrow B - (c/\hat L)\,M A^\top`, :math:`A \leftarrow A - (c/\hat L)\,B^\top M`.

Both passes accumulate in G's dtype, like torch's GEMV; results agree with the torch solver to
rounding (tested in float64). ``fastmath`` allows re-association and contraction (vectorised
reductions) but keeps NaN/Inf semantics, so divergence is still detected.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:  # numba is a pinned dependency; an environment without it falls back to the torch solver
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

#: LLVM fast-math flags: re-association and FMA contraction, *not* nnan/ninf (divergence checks).
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


def available() -> bool:
    """True when numba imports (the compiled backend can run)."""
    return numba is not None


def _njit(**kw):
    if numba is None:  # pragma: no cover
        return lambda f: f
    return numba.njit(cache=True, fastmath=_FASTMATH, **kw)


@_njit()
def _loss(ce: bool, z: np.ndarray, y: np.ndarray, g: np.ndarray, h: np.ndarray) -> float:
    """L(z) and its derivatives ℓ' → g, ℓ'' → h (float64), as :mod:`lorank.capacity.losses`."""
    L = 0.0
    for k in range(z.shape[0]):
        if ce:
            t = y[k] * z[k]
            L += max(-t, 0.0) + math.log1p(math.exp(-abs(t)))  # softplus(−t), stable
            s_neg = 1.0 / (1.0 + math.exp(t))
            g[k] = -y[k] * s_neg
            h[k] = s_neg * (1.0 - s_neg)
        else:
            res = z[k] - y[k]
            L += 0.5 * res * res
            g[k] = res
            h[k] = 1.0
    return L


@_njit()
def _products(B, A, U, V, X, dX) -> None:
    """X = vec(BA) and dX = vec(UA + BV) for B, U (m, r) and A, V (r, n)."""
    m, r = B.shape
    n = A.shape[1]
    X[:] = 0
    dX[:] = 0
    for j in range(m):
        for q in range(r):
            b = B[j, q]
            u = U[j, q]
            for k in range(n):
                X[j * n + k] += b * A[q, k]
                dX[j * n + k] += u * A[q, k] + b * V[q, k]


@_njit()
def _pass_forward(G, X, dX, z, dz, zero) -> None:
    """z = 𝒜(X), dz = 𝒜(dX): one pass over G (KN, m·n), four rows at a time (eight independent
    accumulators); ``zero`` is 0 in G's dtype (float32 sums stay float32, as in torch's GEMV)."""
    KN, mn = G.shape
    k4 = KN - KN % 4
    for k in range(0, k4, 4):
        s0, s1, s2, s3 = zero, zero, zero, zero
        d0, d1, d2, d3 = zero, zero, zero, zero
        for j in range(mn):
            x = X[j]
            dx = dX[j]
            g0, g1, g2, g3 = G[k, j], G[k + 1, j], G[k + 2, j], G[k + 3, j]
            s0 += g0 * x
            d0 += g0 * dx
            s1 += g1 * x
            d1 += g1 * dx
            s2 += g2 * x
            d2 += g2 * dx
            s3 += g3 * x
            d3 += g3 * dx
        z[k], z[k + 1], z[k + 2], z[k + 3] = s0, s1, s2, s3
        dz[k], dz[k + 1], dz[k + 2], dz[k + 3] = d0, d1, d2, d3
    for k in range(k4, KN):
        s0 = zero
        d0 = zero
        for j in range(mn):
            s0 += G[k, j] * X[j]
            d0 += G[k, j] * dX[j]
        z[k] = s0
        dz[k] = d0


@_njit()
def _pass_adjoint(G, a, b, M, dM) -> None:
    """M = 𝒜*(a) = Σ_i a_i G_i and dM = 𝒜*(b): one pass over G, four rows at a time (fewer
    loads and stores of M, dM per multiply-add)."""
    KN, mn = G.shape
    M[:] = 0
    dM[:] = 0
    k4 = KN - KN % 4
    for k in range(0, k4, 4):
        a0, a1, a2, a3 = a[k], a[k + 1], a[k + 2], a[k + 3]
        b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
        for j in range(mn):
            g0, g1, g2, g3 = G[k, j], G[k + 1, j], G[k + 2, j], G[k + 3, j]
            M[j] += a0 * g0 + a1 * g1 + a2 * g2 + a3 * g3
            dM[j] += b0 * g0 + b1 * g1 + b2 * g2 + b3 * g3
    for k in range(k4, KN):
        for j in range(mn):
            M[j] += a[k] * G[k, j]
            dM[j] += b[k] * G[k, j]


@_njit()
def _hvp_and_grad(M, dM, B, A, U, V, HU, HV, gB, gA, zero) -> None:
    """HU = dM Aᵀ + M Vᵀ, HV = Bᵀ dM + Uᵀ M (the Hessian-vector product at (U, V)) and the
    gradient gB = M Aᵀ, gA = Bᵀ M, in one sweep over the rows of M and dM."""
    m, r = B.shape
    n = A.shape[1]
    HV[:] = 0
    gA[:] = 0
    for j in range(m):
        o = j * n
        for q in range(r):
            hu = zero
            gb = zero
            for k in range(n):
                hu += dM[o + k] * A[q, k] + M[o + k] * V[q, k]
                gb += M[o + k] * A[q, k]
            HU[j, q] = hu
            gB[j, q] = gb
            bj = B[j, q]
            uj = U[j, q]
            for k in range(n):
                HV[q, k] += bj * dM[o + k] + uj * M[o + k]
                gA[q, k] += bj * M[o + k]


@_njit()
def _sq(x) -> float:
    s = 0.0
    for v in x.ravel():
        s += float(v) * float(v)
    return s


@_njit()
def _gd_one(G, y, B, A, ce, steps, tol, c, trace_loss, trace_grad, i):
    """T steps of Hessian-step GD on one instance, in place on (B, A); returns
    (rel_loss, success, stop_step, diverged). G is (KN, m·n); traces are (T, I) or (0, 0)."""
    KN, mn = G.shape
    m, r = B.shape
    n = A.shape[1]
    dt = G.dtype
    X, dX, M, dM = (np.empty(mn, dt), np.empty(mn, dt), np.empty(mn, dt), np.empty(mn, dt))
    gk, hk = np.empty(KN, dt), np.empty(KN, dt)
    z, dz, g, h = np.empty(KN, dt), np.empty(KN, dt), np.empty(KN), np.empty(KN)
    U, HU, gB = np.empty((m, r), dt), np.empty((m, r), dt), np.empty((m, r), dt)
    V, HV, gA = np.empty((r, n), dt), np.empty((r, n), dt), np.empty((r, n), dt)
    zero = np.zeros(1, dt)[0]
    L0 = KN * math.log(2.0) if ce else 0.5 * _sq(y)
    nrm = max(math.sqrt(_sq(B) + _sq(A)), 1e-300)
    U[:] = B / nrm
    V[:] = A / nrm
    for t in range(steps + 1):
        _products(B, A, U, V, X, dX)
        _pass_forward(G, X, dX, z, dz, zero)
        L = _loss(ce, z, y, g, h)
        rel = L / L0
        if not math.isfinite(rel):
            return rel, False, t, True
        if rel < tol:
            return rel, True, t, False
        if t >= steps:
            return rel, False, t, False
        for k in range(KN):
            gk[k] = g[k]
            hk[k] = h[k] * dz[k]
        _pass_adjoint(G, gk, hk, M, dM)
        _hvp_and_grad(M, dM, B, A, U, V, HU, HV, gB, gA, zero)
        lip = max(math.sqrt(_sq(HU) + _sq(HV)), 1e-300)
        U[:] = HU / lip
        V[:] = HV / lip
        if trace_loss.shape[0] > 0:
            trace_loss[t, i] = L
            trace_grad[t, i] = _sq(gB) + _sq(gA)
        eta = c / lip
        B -= eta * gB
        A -= eta * gA
    return math.nan, False, steps, False  # not reached: t == steps returns above


@_njit(nogil=True)
def _gd_batch(G, y, B, A, ce, steps, tol, c, rel, success, stop, diverged, trace_loss,
              trace_grad, lo, hi):
    """:func:`_gd_one` for instances lo..hi−1, in place on the outputs (GIL released, so
    threads can run disjoint ranges at once)."""
    for i in range(lo, hi):
        rel[i], success[i], stop[i], diverged[i] = _gd_one(
            G[i], y[i], B[i], A[i], ce, steps, tol, c, trace_loss, trace_grad, i)


def gd_hessian(G: np.ndarray, y: np.ndarray, B0: np.ndarray, A0: np.ndarray, ce: bool,
               steps: int, tol: float, step_scale: float, trace: bool, threads: int = 1
               ) -> tuple[np.ndarray, ...]:
    """Run the compiled solver on I instances.

    Args:
        G: sensing matrices, (I, KN, m·n), float32 or float64 (the dtype of both passes).
        y: targets (I, KN); B0 (I, m, r), A0 (I, r, n): initial factors.
        ce: logistic loss on ±1 targets (else squared loss).
        steps, tol, step_scale: T, the success threshold on L/L0, c in η = c/L̂.
        trace: record L_t and ‖∇L_t‖² (float64, NaN after an instance stops).

    Returns:
        rel_loss (I,), success (I,), steps (I,), diverged (I,), B (I, m, r), A (I, r, n) as
        float64, trace_loss and trace_grad_sq (T, I) or None.
    """
    if numba is None:  # pragma: no cover
        raise RuntimeError("the compiled capacity solver needs numba")
    I = G.shape[0]
    B = np.array(B0, dtype=G.dtype)  # copies: solved in place
    A = np.array(A0, dtype=G.dtype)
    rel = np.full(I, np.nan)
    success = np.zeros(I, np.bool_)
    stop = np.zeros(I, np.int64)
    diverged = np.zeros(I, np.bool_)
    shape = (steps, I) if trace else (0, 0)
    tl, tg = np.full(shape, np.nan), np.full(shape, np.nan)
    args = (np.ascontiguousarray(G), np.asarray(y, np.float64), B, A, bool(ce), int(steps),
            float(tol), float(step_scale), rel, success, stop, diverged, tl, tg)
    threads = max(1, min(threads, I))
    if threads == 1:
        _gd_batch(*args, 0, I)
    else:  # one instance per task: a thread takes the next as soon as it is free, so instances
        # that stop early (successes) and late (failures, all T steps) balance out
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda i: _gd_batch(*args, i, i + 1), range(I)))
    return (rel, success, stop, diverged, B.astype(np.float64), A.astype(np.float64),
            tl if trace else None, tg if trace else None)
