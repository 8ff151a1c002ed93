r"""Polyak–Łojasiewicz (PL) measurements along a training trajectory (science notes §2.3).

The new paper (arXiv 2605.03724) argues that along gradient descent on the linearized
cross-entropy loss a PL-type inequality

.. math:: \|\nabla L(\theta_t)\|^2 \ge \mu\,(L(\theta_t) - L_\infty)

holds with μ > 0 independent of a rank threshold. :func:`pl_ratios` measures
:math:`\mu_t = \|\nabla L(\theta_t)\|^2 / (L(\theta_t) - L_\infty)` on any trajectory given as plain
arrays (the NTK engine feeds real trajectories); :func:`pl_trajectory` produces trajectories on
the Gaussian model of :mod:`lorank.capacity` (GD on the factorised problem, CE or squared loss).

Reference value: for :math:`L(x) = \tfrac12 x^\top H x` (H ≻ 0, :math:`L_\infty = 0`),
:math:`\|\nabla L\|^2 / L = 2\,x^\top H^2 x / x^\top H x`, which lies in
:math:`[2\lambda_{min}, 2\lambda_{max}]` and equals :math:`2\lambda` along an eigenvector of
eigenvalue λ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lorank.capacity.problems import gaussian_batch
from lorank.capacity.solvers import solve_gd
from lorank.errors import LorankError, check_positive_int


@dataclass(frozen=True)
class PLRecord:
    """PL ratios of one trajectory.

    Attributes:
        mu: μ_t per step, shape (T,); NaN where L_t − L_inf ≤ eps (excluded).
        mu_min: min over valid steps (NaN if none is valid).
        t_min: step of the minimum (−1 if none).
        valid: number of steps with L_t − L_inf > eps.
        kappa: κ_t = ‖∇L_t‖ / (L_t − L_inf), the Łojasiewicz ratio with exponent 1, shape (T,).
        kappa_min: min over valid steps of κ_t.
        L_inf: the reference infimum used.
        eps: the guard.

    For exponentially tailed losses (CE) on separable data ‖∇L‖ ∝ L as L → 0, so μ_t → 0
    while κ_t stays bounded away from 0: report both.
    """

    mu: np.ndarray
    mu_min: float
    t_min: int
    valid: int
    kappa: np.ndarray
    kappa_min: float
    L_inf: float
    eps: float


def pl_ratios(
    losses: np.ndarray, grad_sq: np.ndarray, L_inf: float = 0.0, eps: float = 1e-12
) -> PLRecord:
    r"""μ_t = ‖∇L_t‖² / (L_t − L_inf), guarded where L_t − L_inf ≤ eps.

    Args:
        losses: L_t, shape (T,).
        grad_sq: ‖∇L(θ_t)‖² (squared norm of the full parameter gradient), shape (T,).
        L_inf: infimum of the loss (0 for separable CE or interpolable squared loss).
        eps: steps with L_t − L_inf ≤ eps (converged, or L_inf over-estimated) are excluded.

    Returns:
        A :class:`PLRecord`. NaN entries of the inputs (steps after a stop) are ignored.
    """
    L = np.asarray(losses, dtype=np.float64)
    g = np.asarray(grad_sq, dtype=np.float64)
    if L.ndim != 1 or g.shape != L.shape:
        raise LorankError(
            f"losses and grad_sq must be 1-D of equal length, got {L.shape}, {g.shape}")
    if L.size == 0:
        raise LorankError("empty trajectory: losses has no entries")
    if not math.isfinite(L_inf) or not (math.isfinite(eps) and eps >= 0):
        raise LorankError(f"L_inf must be finite and eps >= 0, got {L_inf!r}, {eps!r}")
    if np.any(g[np.isfinite(g)] < 0):
        raise LorankError("grad_sq must be non-negative (squared gradient norms)")
    gap = L - L_inf
    ok = np.isfinite(gap) & np.isfinite(g) & (gap > eps)
    mu = np.full(L.shape, np.nan)
    kappa = np.full(L.shape, np.nan)
    mu[ok] = g[ok] / gap[ok]
    kappa[ok] = np.sqrt(g[ok]) / gap[ok]
    if not ok.any():
        return PLRecord(mu, math.nan, -1, 0, kappa, math.nan, float(L_inf), float(eps))
    t = int(np.nanargmin(mu))
    return PLRecord(mu, float(mu[t]), t, int(ok.sum()), kappa, float(np.nanmin(kappa)),
                    float(L_inf), float(eps))


@dataclass(frozen=True)
class PLTrajectory:
    """A GD trajectory on one Gaussian instance and its PL record."""

    loss: str
    r: int
    m: int
    n: int
    KN: int
    steps: int
    losses: np.ndarray
    grad_sq: np.ndarray
    pl: PLRecord


def pl_trajectory(
    loss: str = "ce",
    r: int = 1,
    m: int = 16,
    n: int = 16,
    KN: int = 20,
    steps: int = 500,
    seed: int = 0,
    L_inf: float = 0.0,
    eps: float = 1e-12,
    step_rule: str = "hessian",
) -> PLTrajectory:
    """Run GD on one Gaussian instance (±1 labels for ``"ce"``) and measure μ_t along it.

    The instance is instance 0 of :func:`lorank.capacity.problems.gaussian_batch` (seed, KN);
    GD is :func:`lorank.capacity.solvers.solve_gd` (float64, no early stop) with full traces.
    The first step (t = 0) sits at the small random init near the saddle X = 0, where μ_t is tiny
    for any loss; read ``pl.mu`` after the escape as well as ``pl.mu_min``.
    """
    steps = check_positive_int("steps", steps)
    targets = "sign" if loss == "ce" else "gaussian"
    batch = gaussian_batch(r, m, n, KN, 1, seed, targets)
    res = solve_gd(batch, loss=loss, steps=steps, tol=0.0, step_rule=step_rule,
                   dtype="float64", trace=True)
    losses, grad_sq = res.trace_loss[:, 0], res.trace_grad_sq[:, 0]
    keep = np.isfinite(losses) & np.isfinite(grad_sq)
    losses, grad_sq = losses[keep], grad_sq[keep]
    return PLTrajectory(loss, r, m, n, KN, steps, losses, grad_sq,
                        pl_ratios(losses, grad_sq, L_inf, eps))
