r"""Batched linear solves that never raise on a singular element.

``torch.linalg.solve`` on a batch raises as soon as one element's LU factorisation meets an exact
zero pivot ("(Batch element 6): … singular"), which takes every other element of the batch down
with it. :func:`solve_batched` solves the whole batch by LU without raising
(``torch.linalg.solve_ex``) and repairs the elements that failed one by one with the
minimum-norm least-squares solution :math:`x = S^{+} b` (SVD pseudo-inverse, Golub & Van Loan,
*Matrix Computations*, §5.5), defined for every finite matrix, singular or not. An element whose
matrix or right-hand side is not finite, or whose solution still is not, is reported as failed
(its x is 0) instead of raising; the caller decides what a failure means.

The elements that LU solves are bitwise the result of ``torch.linalg.solve``.
"""

from __future__ import annotations

from contextlib import suppress

import torch
from torch import Tensor

from lorank.errors import LorankError


def solve_batched(S: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Solve :math:`S_i x_i = b_i` for every batch element, never raising on a singular one.

    Args:
        S: matrices, shape (..., k, k).
        b: right-hand sides, shape (..., k, c).

    Returns:
        (x, failed): x of shape (..., k, c) — LU where LU succeeds, else the minimum-norm
        least-squares solution :math:`S^{+} b` — and a bool mask of shape (...) marking the
        elements with non-finite input or output (their x is set to 0).
    """
    x, info = torch.linalg.solve_ex(S, b)
    batch = S.shape[:-2]
    redo = (info != 0) | ~torch.isfinite(x).flatten(len(batch)).all(-1)
    if redo.any():
        flat_S, flat_b = S.reshape(-1, *S.shape[-2:]), b.reshape(-1, *b.shape[-2:])
        flat_x = x.reshape(-1, *x.shape[-2:]).clone()
        for i in redo.reshape(-1).nonzero().flatten().tolist():
            Si, bi = flat_S[i], flat_b[i]
            flat_x[i] = float("nan")
            if torch.isfinite(Si).all() and torch.isfinite(bi).all():
                with suppress(RuntimeError):  # an SVD that does not converge: failed
                    flat_x[i] = torch.linalg.pinv(Si) @ bi
        x = flat_x.reshape(x.shape)
    finite_in = (torch.isfinite(S).flatten(len(batch)).all(-1)
                 & torch.isfinite(b).flatten(len(batch)).all(-1))
    failed = ~finite_in | ~torch.isfinite(x).flatten(len(batch)).all(-1)
    if failed.any():
        x = torch.where(failed[..., None, None], torch.zeros_like(x), x)
    return x, failed


def require_finite(x: Tensor, what: str) -> Tensor:
    """``x`` unchanged when every entry is finite, else a one-line LorankError naming ``what``
    (an eigen-solver or LU on NaN/inf raises an opaque "failed to converge" instead)."""
    if not bool(torch.isfinite(x).all()):
        raise LorankError(f"{what} contain NaN or inf values; nothing to solve")
    return x


def solve_one(S: Tensor, b: Tensor, what: str) -> Tensor:
    """:func:`solve_batched` for one system S (k, k), b (k,) or (k, c); a LorankError naming
    ``what`` when it has no finite solution."""
    x, failed = solve_batched(S, b[..., None] if b.dim() == 1 else b)
    if bool(failed.any()):
        raise LorankError(f"{what}: the linear system has no finite solution (non-finite input)")
    return x[..., 0] if b.dim() == 1 else x
