r"""Spectral summaries of the learned updates ΔW_ℓ = s·B_ℓ A_ℓ.

For each adapted matrix (m×n): its singular values σ_1 ≥ … ≥ σ_min(m,n) (computed in float64),
the numerical rank #{i : σ_i > tol} with the LAPACK/numpy convention
tol = σ_1 · max(m, n) · ε (ε the machine epsilon of the training dtype), and the Frobenius,
spectral and nuclear norms ‖ΔW‖_F, σ_1, Σσ_i. A rank-r LoRA update has at most r non-zero
singular values; the numerical rank shows how many of them training actually used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class DeltaStats:
    """Spectrum and norms of one ΔW.

    Attributes:
        path: module path of the adapted matrix (relative to the base model).
        shape: (m, n).
        singular_values: the top ``keep`` singular values, descending.
        numerical_rank: #{σ_i > σ_1·max(m, n)·ε}.
        fro, spectral, nuclear: ‖ΔW‖_F, σ_1, Σ_i σ_i.
    """

    path: str
    shape: tuple[int, int]
    singular_values: tuple[float, ...]
    numerical_rank: int
    fro: float
    spectral: float
    nuclear: float

    def to_dict(self) -> dict:
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["singular_values"] = list(self.singular_values)
        return out


def delta_stats(path: str, delta: torch.Tensor, keep: int = 32) -> DeltaStats:
    """Spectrum, numerical rank and norms of one update ``delta`` (m×n).

    Args:
        path: the matrix's module path (a label).
        delta: ΔW, shape (m, n).
        keep: how many leading singular values to store.
    """
    sv = torch.linalg.svdvals(delta.detach().double())
    top = float(sv[0]) if sv.numel() else 0.0
    tol = top * max(delta.shape) * torch.finfo(delta.dtype).eps  # ε of the training dtype
    return DeltaStats(
        path=path, shape=(int(delta.shape[0]), int(delta.shape[1])),
        singular_values=tuple(float(v) for v in sv[:keep]),
        numerical_rank=int((sv > tol).sum()) if top > 0 else 0,
        fro=float(sv.pow(2).sum().sqrt()), spectral=top, nuclear=float(sv.sum()),
    )
