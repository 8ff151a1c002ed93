r"""Full linearized fine-tuning with a nuclear-norm penalty, by proximal gradient (FISTA).

The convex problem LoRA with weight decay factorises (science notes §1; Jang, Lee, Ryu 2024):

    min_{X_ℓ}  L(f0 + Σ_ℓ ⟨G_ℓ, X_ℓ⟩) + λ Σ_ℓ ‖X_ℓ‖_* ,

since min_{BA = X} ½(‖A‖²_F + ‖B‖²_F) = ‖X‖_*. Proximal gradient: X ← prox_{ηλ‖·‖_*}(X − η∇L),
where the prox soft-thresholds the singular values (singular value thresholding, Cai, Candès,
Shen 2010): U diag(max(σ − ηλ, 0)) Vᵀ. Step η = 1/β with β = c·λ_max(Θ)/N, the Lipschitz
constant of ∇L (c = 1 for MSE; ½ for CE, whose logit Hessian diag(p) − ppᵀ has norm ≤ ½).
FISTA momentum (Beck & Teboulle 2009) with a monotone restart.

Rank check: fixing the optimal predictions z* = f0 + J vec(X*), X* minimises Σ‖X_ℓ‖_* subject
to KN linear equations, a semidefinite program whose extreme solutions have rank r with
r(r+1)/2 ≤ KN (Pataki 1998; Recht, Fazel, Parrilo 2010) — the Sard / Burer–Monteiro count of
Jang et al. So the solution rank (of the block-diagonal X, i.e. summed over blocks) is expected
below :func:`lorank.theory.sard_min_rank` (K, N), the smallest r with r(r+1)/2 > KN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lorank.errors import check_number
from lorank.linalg import require_finite
from lorank.linearized.losses import check_loss, loss_and_grad
from lorank.linearized.model import split_flat
from lorank.ntk.features import Features
from lorank.theory import sard_min_rank


@dataclass
class NuclearFit:
    """Solution of the nuclear-norm problem and its rank versus the Sard count."""

    delta: Tensor
    lam: float
    ranks: list[int]
    rank_total: int
    sard_min_rank: int
    within_sard: bool
    objective: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    steps: int = 0


def svt(X: Tensor, tau: float) -> tuple[Tensor, int]:
    """Singular value soft-thresholding: (U diag((σ − τ)_+) Vᵀ, rank of the result)."""
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    S = (S - tau).clamp_min(0)
    rank = int((S > 0).sum())
    return (U[:, :rank] * S[:rank]) @ Vh[:rank], rank


def nuclear_fit(features: Features, lam: float, *, loss: str = "ce", steps: int = 500,
                mse_target: str = "onehot", tol: float = 1e-10) -> NuclearFit:
    """Proximal-gradient (FISTA) solution of min L(f0 + JΔW) + λ Σ_ℓ ‖ΔW_ℓ‖_* (module doc).

    Args:
        features: training features; computed in float64.
        lam: λ > 0 (absolute, on the mean-over-examples loss).
        loss: ``"ce"`` or ``"mse"``.
        steps: maximum proximal steps; stops early when the objective changes < tol (relative).

    Returns:
        :class:`NuclearFit` with ΔW (P,), per-block and total rank, the Sard comparison and the
        objective curve.
    """
    check_loss(loss)
    check_number("nuclear-norm penalty", lam, low=0)
    Phi = require_finite(features.flat().to(torch.float64), "the NTK features")
    f0 = features.f0.to(torch.float64)
    N, K = features.N, features.K
    beta = (0.5 if loss == "ce" else 1.0) * float(torch.linalg.eigvalsh(Phi @ Phi.T)[-1]) / N
    eta = 1.0 / max(beta, 1e-300)
    shapes = [(b.m, b.n) for b in features.blocks]

    def value(x: Tensor) -> tuple[float, float, Tensor]:
        out = (f0.reshape(-1) + Phi @ x).reshape(N, K, 1)
        L, E = loss_and_grad(out, features.labels, loss, mse_target=mse_target)
        nuc = sum(float(torch.linalg.svdvals(W).sum()) for W in split_flat(x, shapes))
        return float(L[0]) + lam * nuc, float(L[0]), E.reshape(-1)

    def prox(x: Tensor) -> tuple[Tensor, list[int]]:
        parts, ranks = [], []
        for W in split_flat(x, shapes):
            Wp, r = svt(W, eta * lam)
            parts.append(Wp.reshape(-1))
            ranks.append(r)
        return torch.cat(parts), ranks

    x = Phi.new_zeros(features.P)
    y, t_mom = x.clone(), 1.0
    obj, L, _ = value(x)
    fit = NuclearFit(x, lam, [0] * len(shapes), 0, sard_min_rank(K, N), True, [obj], [L])
    ranks = [0] * len(shapes)
    for it in range(1, steps + 1):
        _, _, Ey = value(y)
        x_new, ranks_new = prox(y - eta * (Phi.T @ Ey))
        obj_new, L_new, _ = value(x_new)
        if obj_new > obj:  # monotone restart: plain proximal step from x
            _, _, Ex = value(x)
            x_new, ranks_new = prox(x - eta * (Phi.T @ Ex))
            obj_new, L_new, _ = value(x_new)
            t_mom = 1.0
        t_next = (1 + math.sqrt(1 + 4 * t_mom**2)) / 2
        y = x_new + ((t_mom - 1) / t_next) * (x_new - x)
        converged = abs(obj - obj_new) <= tol * max(1.0, abs(obj))
        x, obj, ranks, t_mom = x_new, obj_new, ranks_new, t_next
        fit.objective.append(obj)
        fit.loss.append(L_new)
        fit.steps = it
        if converged:
            break
    total = sum(ranks)
    fit.delta = x.to(features.J.dtype)
    fit.ranks, fit.rank_total = ranks, total
    fit.within_sard = total < fit.sard_min_rank
    return fit
