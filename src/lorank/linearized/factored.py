r"""The linearized-LoRA step on per-token Jacobian factors (never touching J).

For a linear layer the per-example Jacobian is a sum over tokens of outer products,
G_i[k] = Σ_{t∈i} δ_{k,t} x_tᵀ (:class:`~lorank.ntk.jacobian.TokenFactors`). The linearized
logit of a rank-r update ΔW = s·B A is then

    ⟨G_i[k], s·B A⟩ = s · Σ_{t∈i} (Bᵀ δ_{k,t}) · (A x_t) = s · Σ_{t∈i} Σ_j Q[k,t,j] P[t,j],
    P = X Aᵀ  (T, r),   Q = Δ_k B  (T, r),

and the gradients of L w.r.t. the factors, with e_{k,t} = ∂L/∂f_k(x_{i(t)}) copied to the
example's tokens, are

    ∂L/∂B = s · Σ_{k,t} e_{k,t} δ_{k,t} P[t]ᵀ = s · Δᵀ Z,        Z[(k,t), j] = e_{k,t} P[t, j]
    ∂L/∂A = s · Σ_t (Σ_k e_{k,t} Q[k,t])ᵀ x_t = s · Wᵀ X,          W[t, j] = Σ_k e_{k,t} Q[k,t,j]

A step of rank r costs ≈ 4·r·T·(n + K·m) multiply-adds per matrix (T kept tokens; K − 1 in place
of K for cross-entropy, see :func:`contrast_basis`), against
2·N·K·m·n + 3·r·m·n for the dense step of :mod:`lorank.linearized.train` — and the factors
(T·(n + K·m) numbers) are a fraction of J (N·K·m·n numbers), so they stay in cache. All
configurations of one feature group (every rank, seed and learning rate) share X and Δ: their
A and B are concatenated column-wise ("columns" = Σ_c r_c), so each matrix costs four GEMMs
per step for the whole group; an index (column → configuration) sums each configuration's r
columns and copies its e to them (index ops, not a 0/1 GEMM: a diverged configuration's inf/NaN
must not leak into the others through 0·inf).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lorank.ntk.features import Block, Features

#: Dense and factored steps are compared on multiply-adds; dense steps stream J from memory,
#: factored ones work on cache-resident factors, so the dense count is weighted by this factor
#: (measured on a 2-core Xeon: a multiply-add of the dense engine costs 2-4× one of the
#: factored engine's GEMMs; 2 keeps the choice conservative).
DENSE_WEIGHT = 2.0


class GroupLayout:
    """Columns of one feature group's concatenated factors.

    ``buckets`` (each with ``A``, ``B`` lists, ``r``, ``lo``/``hi`` rows and ``scale``) are the
    group's (rank) buckets in row order; rows ``lo:hi`` of the group are configurations
    0..C_g-1 locally. Bucket b owns columns ``off_b : off_b + C_b·r_b``; configuration k of b owns
    ``off_b + k·r_b : off_b + (k+1)·r_b``.
    """

    def __init__(self, buckets: Sequence, lo: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.buckets = list(buckets)
        self.lo = lo
        self.offs, cols = [], 0
        for b in self.buckets:
            self.offs.append(cols)
            cols += len(b.idx) * b.r
        self.cols = cols
        self.C = sum(len(b.idx) for b in self.buckets)
        self.col2cfg = torch.empty(cols, dtype=torch.int64, device=device)
        scale = torch.empty(cols, dtype=dtype, device=device)
        for b, off in zip(self.buckets, self.offs, strict=True):
            for k in range(len(b.idx)):
                self.col2cfg[off + k * b.r: off + (k + 1) * b.r] = b.lo - lo + k
            scale[off: off + len(b.idx) * b.r] = b.scale
        self.scale = scale

    def A(self, j: int) -> Tensor:
        """Concatenated A of matrix j: (cols, n)."""
        return torch.cat([b.A[j].reshape(-1, b.A[j].shape[-1]) for b in self.buckets])

    def B(self, j: int) -> Tensor:
        """Concatenated B of matrix j: (m, cols)."""
        return torch.cat([b.B[j].permute(1, 0, 2).reshape(b.B[j].shape[1], -1)
                          for b in self.buckets], dim=1)


@dataclass(frozen=True)
class Prepared:
    """Token-major copy of one matrix's factors for the step kernels: ``ex`` (T,), ``X``
    (T, n), ``D`` (T·K', m) with row t·K' + j = δ'_{j,t}, where δ' = δ (K' = K) or, for a
    shift-invariant loss, the contrasts δ' = Uᵀδ (K' = K − 1, see :func:`contrast_basis`)."""

    ex: Tensor
    X: Tensor
    D: Tensor
    U: Tensor | None = None

    @property
    def T(self) -> int:
        return int(self.X.shape[0])


def contrast_basis(K: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """U ∈ R^{K×(K−1)} with orthonormal columns spanning {v : Σ_k v_k = 0} (Helmert basis).

    Cross-entropy is invariant to adding the same constant to all K logits, so its gradient
    e = ∂L/∂f satisfies Σ_k e_k = 0 and Σ_k e_k δ_k = Σ_j (Uᵀe)_j (Uᵀδ)_j: the K per-logit
    factors can be replaced by K − 1 contrasts without changing loss, argmax or gradients
    (the logits move by a per-example constant). For K = 2 this halves the δ-side work.
    """
    U = torch.zeros(K, K - 1, dtype=dtype)
    for j in range(1, K):
        U[:j, j - 1] = 1.0 / j
        U[j, j - 1] = -1.0
        U[:, j - 1] /= U[:, j - 1].norm()
    return U


def prepare(feats: Features, contrast: bool = False) -> list[Prepared]:
    """:class:`Prepared` factors of every block of ``feats`` (in block order); ``contrast``
    (only for shift-invariant losses such as cross-entropy, K ≥ 2) stores the K − 1 contrasts."""
    out = []
    U = contrast_basis(feats.K).to(feats.f0) if contrast and feats.K >= 2 else None
    for b in feats.blocks:
        fac = feats.factors[b.name]
        delta = fac.Delta if U is None else torch.einsum("kj,ktm->jtm", U, fac.Delta)
        out.append(Prepared(fac.ex, fac.X.contiguous(),
                            delta.transpose(0, 1).reshape(-1, b.m).contiguous(), U))
    return out


def _per_config(cols: Tensor, layout: GroupLayout) -> Tensor:
    """Sum each configuration's r columns: (..., cols) -> (..., C_g), bucket by bucket."""
    out = cols.new_empty(*cols.shape[:-1], layout.C)
    for b, off in zip(layout.buckets, layout.offs, strict=True):
        C = len(b.idx)
        torch.sum(cols[..., off: off + C * b.r].unflatten(-1, (C, b.r)), dim=-1,
                  out=out[..., b.lo - layout.lo: b.lo - layout.lo + C])
    return out


def forward_group(prep: Sequence[Prepared], f0: Tensor, layout: GroupLayout
                  ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """f_lin of every configuration of the group: (N, K, C_g), plus (s·P, Q) per matrix for
    :func:`grads_group` (with contrasts, f_lin up to a per-example constant)."""
    N, K = f0.shape
    U = prep[0].U if prep else None
    Kc = K if U is None else K - 1
    lin = f0.new_zeros(N, Kc, layout.C)
    saved = []
    for j, pj in enumerate(prep):
        P = (pj.X @ layout.A(j).T).mul_(layout.scale)                 # (T, cols), scaled
        Q = (pj.D @ layout.B(j)).view(pj.T, Kc, -1)                   # (T, K', cols)
        lin.index_add_(0, pj.ex, _per_config(Q * P[:, None, :], layout))
        saved.append((P, Q))
    if U is not None:
        lin = torch.einsum("kj,njc->nkc", U, lin)
    return f0[:, :, None] + lin, saved


def grads_group(prep: Sequence[Prepared], layout: GroupLayout, blocks: Sequence[Block],
                saved: list[tuple[Tensor, Tensor]], E: Tensor, wd: float) -> list[list[Tensor]]:
    """∂Φ/∂(A_ℓ…, B_ℓ…) per bucket of the group from E = ∂L/∂f_lin (N, K, C_g); weight decay
    λ adds λA, λB. Returns one list [∂A_1, …, ∂A_L, ∂B_1, …, ∂B_L] per bucket."""
    gA: list[list[Tensor]] = [[] for _ in layout.buckets]
    gB: list[list[Tensor]] = [[] for _ in layout.buckets]
    U = prep[0].U if prep else None
    if U is not None:
        E = torch.einsum("kj,nkc->njc", U, E)                         # contrasts of e
    E_cols = E.index_select(2, layout.col2cfg)                        # (N, K', cols)
    for j, (pj, blk, (P, Q)) in enumerate(zip(prep, blocks, saved, strict=True)):
        Et = E_cols[pj.ex]                                            # (T, K, cols)
        dB = pj.D.T @ (Et * P[:, None, :]).view(pj.D.shape[0], -1)   # (m, cols)
        W = (Et * Q).sum(1).mul_(layout.scale)                        # (T, cols)
        dA = W.T @ pj.X                                               # (cols, n)
        for i, (b, off) in enumerate(zip(layout.buckets, layout.offs, strict=True)):
            C, r = len(b.idx), b.r
            a = dA[off: off + C * r].view(C, r, blk.n)
            bb = dB[:, off: off + C * r].view(blk.m, C, r).permute(1, 0, 2)
            gA[i].append(a + wd * b.A[j] if wd else a)
            gB[i].append(bb + wd * b.B[j] if wd else bb)
    return [a + b for a, b in zip(gA, gB, strict=True)]


def step_costs(feats: Sequence[Features], ranks_per_group: dict[int, list[int]],
               contrast: bool = False) -> tuple[float, float]:
    """Multiply-adds of one training step: (dense, factored), summed over groups.

    dense = Σ_g (2·N·K·P·C_g + 3·P·Σ_c r_c);  factored = Σ_g Σ_ℓ 4·(Σ_c r_c)·T_ℓ·(n_ℓ + K'·m_ℓ),
    K' = K − 1 under ``contrast``, else K (factored is inf when a group has no factors).
    """
    dense = fact = 0.0
    for g, ranks in ranks_per_group.items():
        f = feats[g]
        dense += 2.0 * f.N * f.K * f.P * len(ranks) + 3.0 * f.P * sum(ranks)
        if f.factors is None:
            fact = float("inf")
            continue
        Kc = f.K - 1 if contrast and f.K >= 2 else f.K
        fact += sum(4.0 * sum(ranks) * f.factors[b.name].T * (b.n + Kc * b.m)
                    for b in f.blocks)
    return dense, fact
