r"""Kernel baselines on the NTK features: kernel ridge / min-norm regression and kernel logistic.

Full linearized fine-tuning with a Frobenius penalty,

    min_ΔW  L(f0 + J ΔW) + λ/2 ‖ΔW‖²_F ,

has its minimiser in the row space of J (representer theorem), i.e. ΔW = Jᵀα and the problem is
kernel regression with the empirical NTK Θ = J Jᵀ (Malladi et al., ICML 2023; their
``SOLVERS``). lorank solves it in the eigenbasis of Θ = U S Uᵀ: with J = U S^{1/2} Vᵀ (thin SVD,
eigenvalues below ``rcond``·max dropped) and ΔW = V u, f = f0 + Z u with Z = U S^{1/2} and
‖ΔW‖_F = ‖u‖, so

* MSE (mean over N examples): u = (ZᵀZ/N + λ I)⁻¹ Zᵀ vec(Y − f0)/N; λ = 0 gives the minimum-norm
  least-squares solution ΔW = J⁺ vec(Y − f0) (the kernel "ridgeless" regressor);
* CE: Newton's method with backtracking on the strongly convex CE(f0 + Z u) + λ/2 ‖u‖² (λ > 0
  required: on separable data the unregularised problem has no minimiser).

λ is relative: λ_eff = lam · mean(diag Θ)/N (the loss is a mean over N examples), so lam is
comparable across models and feature scales. The fitted ΔW (P,) is returned explicitly so that
test predictions f0(x) + J(x)ΔW can be streamed like any LoRA update.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lorank.errors import LorankError, check_number
from lorank.linalg import require_finite, solve_one
from lorank.linearized.losses import check_loss, loss_and_grad, metric, targets
from lorank.linearized.selection import select_checkpoint
from lorank.ntk.features import Features

KERNEL_LAMS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-6)


@dataclass
class KernelFit:
    """A kernel-regression solution: ΔW (P,), the relative and absolute λ, loss, train loss."""

    delta: Tensor
    lam: float
    lam_abs: float
    loss: str
    train_loss: float
    iterations: int = 0


def _basis(features: Features, rcond: float = 1e-10) -> tuple[Tensor, Tensor, float]:
    """(Z (NK, q), W (NK, q), mean diag Θ) in float64, with Θ = U S Uᵀ, Z = U S^{1/2} and
    W = U S^{-1/2}: ΔW = V u = Jᵀ W u (one pass of Jᵀ, never the (P, q) matrix V)."""
    theta = require_finite(features.gram(), "the NTK features")
    evals, U = torch.linalg.eigh(theta)
    keep = evals > rcond * evals.max().clamp_min(1e-300)
    evals, U = evals[keep], U[:, keep]
    root = evals.sqrt()
    return U * root, U / root, float(theta.diagonal().mean())


def _objective(f0: Tensor, Z: Tensor, u: Tensor, labels: Tensor, lam: float, loss: str,
               mse_target: str) -> tuple[float, Tensor, Tensor]:
    N, K = f0.shape
    out = (f0.reshape(-1) + Z @ u).reshape(N, K, 1)
    L, E = loss_and_grad(out, labels, loss, mse_target=mse_target)
    return float(L[0]) + 0.5 * lam * float(u @ u), out, E.reshape(-1)


def _newton_ce(f0: Tensor, Z: Tensor, labels: Tensor, lam: float, max_iter: int = 100,
               tol: float = 1e-24) -> tuple[Tensor, int]:
    N, K = f0.shape
    u = Z.new_zeros(Z.shape[1])
    value, out, e = _objective(f0, Z, u, labels, lam, "ce", "onehot")
    for it in range(1, max_iter + 1):
        grad = Z.T @ e + lam * u
        p = torch.softmax(out[:, :, 0], dim=1)
        H_f = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) / N  # (N, K, K)
        Zr = Z.reshape(N, K, -1)
        H = torch.einsum("nka,nkl,nlb->ab", Zr, H_f, Zr) + lam * torch.eye(
            Z.shape[1], dtype=Z.dtype)
        step = solve_one(H, grad, "kernel logistic regression (Newton step)")
        decrement = float(grad @ step)
        if decrement / 2 <= tol:
            return u, it
        t = 1.0
        while True:
            cand = u - t * step
            new, out_c, e_c = _objective(f0, Z, cand, labels, lam, "ce", "onehot")
            if new <= value - 0.25 * t * decrement or t < 1e-12:
                break
            t *= 0.5
        u, value, out, e = cand, new, out_c, e_c
    return u, max_iter


def kernel_regression(features: Features, lam: float = 0.0, loss: str = "mse",
                      mse_target: str = "onehot", rcond: float = 1e-10,
                      basis: tuple[Tensor, Tensor, float] | None = None) -> KernelFit:
    """Fit full linearized fine-tuning with penalty λ/2‖ΔW‖² through the NTK (module doc).

    Args:
        features: training features (J or token factors, f0, labels).
        lam: relative regularisation (λ_eff = lam · mean diag Θ / N); 0 allowed for MSE only.
        loss: ``"mse"`` (kernel ridge / min-norm) or ``"ce"`` (kernel logistic regression).
        basis: a precomputed ``_basis(features)`` (reused across a λ grid).

    Returns:
        :class:`KernelFit` with ΔW (P,) in the features' dtype.
    """
    basis = basis if basis is not None else _basis(features, rcond)
    u, lam_abs, value, iters = _solve(features, lam, loss, mse_target, basis)
    delta = _deltas(features, basis, u[:, None])[0]
    return KernelFit(delta, float(lam), float(lam_abs), loss, value, iters)


def _solve(features: Features, lam: float, loss: str, mse_target: str,
           basis: tuple[Tensor, Tensor, float]) -> tuple[Tensor, float, float, int]:
    """(u (q,), λ_eff, train loss at u, Newton iterations) of one λ in the eigenbasis."""
    check_loss(loss)
    check_number("kernel regularisation", lam, low=0, strict=False)
    if loss == "ce" and lam == 0:
        raise LorankError("kernel logistic regression needs a regularisation lam > 0")
    Z, _, diag = basis
    N, K = features.N, features.K
    lam_abs = lam * diag / N
    f0 = features.f0.to(torch.float64)
    labels = features.labels
    iters = 0
    if loss == "mse":
        R = (targets(labels, K, mse_target, torch.float64) - f0).reshape(-1)
        if lam == 0:
            u = torch.linalg.lstsq(Z, R[:, None]).solution[:, 0]
        else:
            H = Z.T @ Z / N + lam_abs * torch.eye(Z.shape[1], dtype=torch.float64)
            u = solve_one(H, Z.T @ R / N, "kernel ridge regression")
    else:
        u, iters = _newton_ce(f0, Z, labels, lam_abs)
    value, _, _ = _objective(f0, Z, u, labels, 0.0, loss, mse_target)
    return u, lam_abs, value, iters


def _deltas(features: Features, basis: tuple[Tensor, Tensor, float], U: Tensor) -> Tensor:
    """ΔW = Jᵀ W u for every column u of U (q, L): (L, P) in the features' dtype, one pass of
    Jᵀ for the whole λ grid."""
    W = basis[1]
    return features.apply_T((W @ U).reshape(features.N, features.K, -1)).T.to(
        features.f0.dtype).contiguous()


def select_kernel(train: Features, dev: Features, lams: Sequence[float] = KERNEL_LAMS,
                  loss: str = "ce", metric_name: str = "accuracy", mse_target: str = "onehot"
                  ) -> tuple[KernelFit, dict[float, float]]:
    """Fit every λ in ``lams`` on train and keep the best dev metric (ties: the first listed,
    i.e. the largest λ when lams are in decreasing order). Returns (fit, {λ: dev metric}).
    The λ grid shares one eigenbasis of Θ, one pass of Jᵀ and one pass of J_dev."""
    lams = [lam for lam in lams if not (loss == "ce" and lam == 0)]
    if not lams:
        raise LorankError("no valid kernel regularisation in the grid")
    basis = _basis(train)
    solved = [_solve(train, lam, loss, mse_target, basis) for lam in lams]
    D = _deltas(train, basis, torch.stack([s[0] for s in solved], dim=1))  # (L, P)
    out = dev.f0[:, :, None] + dev.apply(D.T)  # (N, K, L)
    values = metric(metric_name, out, dev.labels)
    fits = {lam: KernelFit(D[i], float(lam), float(s[1]), loss, s[2], s[3])
            for i, (lam, s) in enumerate(zip(lams, solved, strict=True))}
    curves = {lam: ([0], [float(v)]) for lam, v in zip(lams, values, strict=True)}
    choice = select_checkpoint(curves)
    return fits[choice.key], {k: v[1][0] for k, v in curves.items()}
