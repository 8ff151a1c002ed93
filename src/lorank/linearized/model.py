r"""Linearized LoRA: f_lin(x) = f(x; W0) + Σ_ℓ s·⟨G_ℓ(x), B_ℓ A_ℓ⟩_F.

With NTK features J (N, K, P) (:class:`lorank.ntk.Features`), the adapted matrices' updates
ΔW_ℓ = s·B_ℓ A_ℓ (B_ℓ ∈ R^{m×r}, A_ℓ ∈ R^{r×n}) enter linearly:

    f_lin(x_i)_k = f0_ik + ⟨J[i, k], vec(ΔW_1) ⊕ … ⊕ vec(ΔW_L)⟩.

Initialisation (Hu et al. 2021, LoRA; Jang, Lee, Ryu 2024): B = 0 and A with iid N(0, 1/n) entries,
so each row of A has norm ≈ 1 and f_lin = f0 at step 0. The scale s is α/r (``"lora"``),
α/√r (``"rslora"``, Kalajdzievski 2023) or 1 (``"none"``, Jang et al.'s code). Under plain GD
with this init the initial growth rate of ΔW is s²·AᵀA ≈ s²·(r/n)·I: it grows with r for s = 1,
is rank-independent for rsLoRA and shrinks like 1/r for LoRA — learning rates must be chosen
per rank (lorank selects them on dev).

A's draw depends only on (seed, block index): ``A`` of rank r is the first r rows of the rank-r'
draw for any r' ≥ r (nested initialisations across ranks), and the same in every dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lorank.errors import LorankError
from lorank.ntk.features import Block, Features


def init_factors(blocks: Sequence[Block], r: int, seed: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
                 ) -> tuple[list[Tensor], list[Tensor]]:
    """LoRA init for every block: A_ℓ (r, n) iid N(0, 1/n) and B_ℓ (m, r) = 0.

    Drawn in float64 on CPU from ``torch.Generator().manual_seed(seed)`` (block after block,
    each as an (r_draw, n) matrix with r_draw = max(r, 64) so ranks are nested), then cast.
    """
    gen = torch.Generator().manual_seed(int(seed))
    A, B = [], []
    for b in blocks:
        draw = torch.randn(max(r, 64), b.n, generator=gen, dtype=torch.float64) / math.sqrt(b.n)
        A.append(draw[:r].to(dtype=dtype, device=device))
        B.append(torch.zeros(b.m, r, dtype=dtype, device=device))
    return A, B


def linearized_logits(features: Features, delta: Tensor) -> Tensor:
    """f_lin = f0 + J·ΔW: delta (P,) -> (N, K); delta (P, C) -> (N, K, C)."""
    if delta.shape[0] != features.P:
        raise LorankError(f"ΔW has {delta.shape[0]} entries, features have P = {features.P}")
    lin = features.J @ delta.to(features.J.dtype)
    return features.f0 + lin if delta.dim() == 1 else features.f0[:, :, None] + lin


def split_flat(v: Tensor, shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """Cut a flat vector into consecutive matrices of the given shapes (views): a ΔW (P,) into
    the blocks' (m, n) matrices with ``[(b.m, b.n) for b in blocks]``, stacked LoRA factors into
    their A_ℓ (r, n_ℓ) or B_ℓ (m_ℓ, r)."""
    out, pos = [], 0
    for rows, cols in shapes:
        out.append(v[pos:pos + rows * cols].reshape(rows, cols))
        pos += rows * cols
    return out


def spectrum(delta: Tensor, blocks: Sequence[Block], rel_tol: float | None = None
             ) -> list[dict[str, object]]:
    """Per block: singular values of ΔW_ℓ, numerical rank, nuclear and Frobenius norms.

    Numerical rank counts σ_i > tol·σ_max with tol = max(m, n)·eps(dtype) (NumPy's
    ``matrix_rank`` rule) unless ``rel_tol`` is given.
    """
    out = []
    for b, W in zip(blocks, split_flat(delta, [(b.m, b.n) for b in blocks]), strict=True):
        W64 = W.detach().to(torch.float64)
        sv = (torch.linalg.svdvals(W64) if torch.isfinite(W64).all()
              else torch.tensor([float("nan")]))
        out.append(_spectrum_entry(b.name, sv, b.m, b.n, W.dtype, rel_tol))
    return out


def _spectrum_entry(name: str, sv: Tensor, m: int, n: int, dtype: torch.dtype,
                    rel_tol: float | None) -> dict[str, object]:
    if not torch.isfinite(sv).all():
        return {"name": name, "singular_values": [], "rank": None,
                "nuclear": float("nan"), "frobenius": float("nan")}
    tol = rel_tol if rel_tol is not None else max(m, n) * torch.finfo(dtype).eps
    top = float(sv.max()) if sv.numel() else 0.0
    rank = int((sv > tol * top).sum()) if top > 0 else 0
    return {"name": name, "singular_values": sorted(sv.tolist(), reverse=True)[:rank],
            "rank": rank, "nuclear": float(sv.sum()), "frobenius": float(sv.square().sum().sqrt())}


def factor_spectrum(A: Sequence[Tensor], B: Sequence[Tensor], s: float, blocks: Sequence[Block],
                    rel_tol: float | None = None) -> list[dict[str, object]]:
    """:func:`spectrum` of ΔW_ℓ = s·B_ℓ A_ℓ from its factors: B = QR, σ(ΔW) = σ(s·R A).

    Cost O((m + n)·r²) per block instead of an m×n SVD.
    """
    out = []
    for a, b, blk in zip(A, B, blocks, strict=True):
        a64, b64 = a.detach().to(torch.float64), b.detach().to(torch.float64)
        if not (torch.isfinite(a64).all() and torch.isfinite(b64).all()):
            sv = torch.tensor([float("nan")])
        else:
            _, R = torch.linalg.qr(b64)
            sv = torch.linalg.svdvals(abs(s) * (R @ a64))
        out.append(_spectrum_entry(blk.name, sv, blk.m, blk.n, a.dtype, rel_tol))
    return out
