r"""The squared-loss floor of rank-r linearized LoRA, by alternating least squares (ALS).

For squared loss with targets Y the rank-r problem is

    L*(r) = min_{A_ℓ, B_ℓ} (1/2N) Σ_i ‖f0_i + Σ_ℓ ⟨G_ℓ(x_i), B_ℓ A_ℓ⟩ − Y_i‖²,

a non-convex problem whose floor is positive when the manifold dimension
d(r) = Σ_ℓ r(m_ℓ + n_ℓ) − r² is below KN and (generically) zero above it (science notes §2.2; the
capacity control of docs/experiments.md). Gradient descent approaches it at a speed set by the
conditioning of the NTK, which for real encoders is far too slow to reach it in the budgets the
rank experiments use; ALS reaches it in tens of iterations because each half-step is an exact
linear least-squares solve:

* B-step (A fixed): the logits are linear in B, with design columns ⟨G_ℓ(x_i)_k, E_{pq} A⟩, i.e.
  D_B[(i,k), (ℓ, p, q)] = (G_ℓ(x_i)_k A_ℓᵀ)_{pq} = Σ_{t∈i} δ_{k,t,p} (A_ℓ x_t)_q;
* A-step (B fixed): D_A[(i,k), (ℓ, q, j)] = (B_ℓᵀ G_ℓ(x_i)_k)_{qj}
  = Σ_{t∈i} (B_ℓᵀ δ_{k,t})_q x_{t,j},

both built from the per-token factors G_i = Σ_t δ_t x_tᵀ (never from J) and solved in float64
by least squares (minimum norm when under-determined). The loss never increases from one
half-step to the next. Initialisation: A from :func:`lorank.linearized.model.init_factors`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lorank.errors import LorankError, check_positive_int
from lorank.linearized.losses import targets as make_targets
from lorank.linearized.model import init_factors, split_flat
from lorank.ntk.features import Features


@dataclass(frozen=True)
class AlsFit:
    """The ALS solution of one rank: the loss after every half-step and the factors."""

    rank: int
    losses: list[float]
    A: list[Tensor]
    B: list[Tensor]

    @property
    def floor(self) -> float:
        """The last (lowest) loss reached."""
        return self.losses[-1]


def _factors64(features: Features) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per block (X (T, n), Delta (K, T, m), example index (T,)), the factors in float64 once."""
    return [(fac.X.to(torch.float64), fac.Delta.to(torch.float64), fac.ex)
            for fac in (features.factors[b.name] for b in features.blocks)]


def _per_example(left: Tensor, right: Tensor, ex: Tensor, N: int) -> Tensor:
    """Design columns Σ_{t∈i} left[k, t] ⊗ right[t] of every example i and logit k:
    (N·K, a·b) from left (K, T, a), right (T, b) and the tokens' examples ex (T,)."""
    K = left.shape[0]
    outer = left[:, :, :, None] * right[None, :, None, :]  # (K, T, a, b)
    out = torch.zeros(N, K, left.shape[2], right.shape[1], dtype=torch.float64)
    out.index_add_(0, ex, outer.permute(1, 0, 2, 3))
    return out.reshape(N * K, -1)


def _design_B(N: int, A: list[Tensor], fac64: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
    """D_B (NK, Σ_ℓ m_ℓ r) from the token factors: left δ (K, T, m), right P = X Aᵀ (T, r)."""
    return torch.cat([_per_example(Dt, X @ a.T, ex, N)
                      for a, (X, Dt, ex) in zip(A, fac64, strict=True)], dim=1)


def _design_A(N: int, B: list[Tensor], fac64: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
    """D_A (NK, Σ_ℓ r n_ℓ) from the token factors: left Q = δ B (K, T, r), right X (T, n)."""
    return torch.cat([_per_example(Dt @ bm, X, ex, N)
                      for bm, (X, Dt, ex) in zip(B, fac64, strict=True)], dim=1)


def _lstsq(D: Tensor, y: Tensor) -> Tensor:
    """Least-squares (minimum-norm when under-determined) solution of D x ≈ y, float64."""
    return torch.linalg.lstsq(D, y[:, None], driver="gelsy").solution[:, 0]


def als_floor(features: Features, r: int, seed: int = 0, iters: int = 50,
              tol: float = 1e-10, mse_target: str = "onehot") -> AlsFit:
    """Minimise the rank-r linearized squared loss by ALS (module doc); stops after ``iters``
    iterations or when an iteration lowers the loss by less than ``tol`` relative.

    Needs the per-token factors (the outer Jacobian method). Shapes: A_ℓ (r, n_ℓ), B_ℓ (m_ℓ, r).
    """
    if features.factors is None:
        raise LorankError("the ALS floor needs per-token factors (outer Jacobian method)")
    r = check_positive_int("rank", r)
    N, K = features.N, features.K
    Y = make_targets(features.labels, K, mse_target, torch.float64)
    resid = (Y - features.f0.to(torch.float64)).reshape(-1)
    A, B = init_factors(features.blocks, r, seed, torch.float64)
    losses: list[float] = []
    fac64 = _factors64(features)
    for _ in range(iters):
        B = split_flat(_lstsq(_design_B(N, A, fac64), resid), [(b.m, r) for b in features.blocks])
        D = _design_A(N, B, fac64)
        sol = _lstsq(D, resid)
        A = split_flat(sol, [(r, b.n) for b in features.blocks])
        loss = 0.5 * float((resid - D @ sol).square().sum()) / N
        done = bool(losses) and losses[-1] - loss <= tol * max(losses[-1], 1e-300)
        losses.append(loss)
        if done or loss <= 1e-14:
            break
    return AlsFit(r, losses, A, B)
