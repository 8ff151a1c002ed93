r"""Rank thresholds for LoRA in the NTK (linearized) regime.

Setting (see ``docs/theory.md``): a pretrained model with K output logits is fine-tuned on N
examples, linearized at W0, with LoRA adapting matrices :math:`W_\ell \in \mathbb{R}^{m_\ell\times
n_\ell}` through :math:`\Delta W_\ell = B_\ell A_\ell` of rank r. The linearized model has
:math:`K N` output constraints; each function below turns a counting argument about those
constraints into the smallest rank r that satisfies it.

All functions are pure Python / numpy (no torch), validate their inputs and raise
:class:`~lorank.errors.LorankError` with a one-line message on bad input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

from lorank.errors import LorankError, check_choice, check_number, check_positive_int

Shape = tuple[int, int]
Reading = Literal["per_matrix", "total"]

#: C* reported by "Rethinking the Rank Threshold for LoRA Fine-Tuning" (arXiv 2605.03724) for
#: Gaussian-iid features. It is budget-dependent (see :mod:`lorank.capacity`).
C_STAR_PAPER = 1.35


def check_shapes(shapes: Iterable[Sequence[int]]) -> list[Shape]:
    """Validate a non-empty list of (m, n) matrix shapes with positive integer entries."""
    out: list[Shape] = []
    for shape in shapes:
        if len(shape) != 2:
            raise LorankError(f"a shape must be (m, n), got {tuple(shape)!r}")
        m = check_positive_int("m", shape[0])
        n = check_positive_int("n", shape[1])
        out.append((m, n))
    if not out:
        raise LorankError("at least one adapted matrix shape (m, n) is needed")
    return out


def sard_min_rank(K: int, N: int) -> int:
    r"""Smallest rank r with :math:`r(r+1)/2 > K N` (Jang, Lee, Ryu, ICML 2024).

    Jang et al. show that LoRA training in the NTK regime, with weight decay, has no spurious local
    minima (generically) once :math:`r(r+1)/2 > KN`; a rank-r global solution of full fine-tuning
    with :math:`r(r+1)/2 \le KN` exists (a Sard / Burer–Monteiro argument on the symmetric count of
    the KN constraints).

    Examples: K=2, N=32 → 11; K=1, N=32 → 8; K=3, N=48 → 17.

    Args:
        K: number of output logits trained (K=2 for two label words; 1 for a single-logit head).
        N: number of training examples (the k-shot dev split does not count).

    Returns:
        The smallest integer r ≥ 1 with r(r+1)/2 > K·N.
    """
    KN = check_positive_int("K", K) * check_positive_int("N", N)
    r = max(1, math.isqrt(2 * KN) - 1)
    while r * (r + 1) // 2 <= KN:
        r += 1
    while r > 1 and (r - 1) * r // 2 > KN:
        r -= 1
    return r


def sard_rounded_rank(K: int, N: int) -> int:
    r"""The rounded Sard rank :math:`\lceil \sqrt{2KN} \rceil`.

    The often-quoted "r ≥ 12" for 16-shot binary tasks (K=2, N=32, √128 = 11.31) comes from
    :math:`r(r+1)/2 \approx r^2/2 > KN`; the exact form (:func:`sard_min_rank`) gives 11.
    """
    KN = check_positive_int("K", K) * check_positive_int("N", N)
    r = math.isqrt(2 * KN)
    return r if r * r == 2 * KN else r + 1


def manifold_dim(r: int, m: int, n: int) -> int:
    r"""Dimension :math:`r(m+n) - r^2` of the manifold of m×n matrices of rank exactly r.

    Valid for 1 ≤ r ≤ min(m, n) (the count of free parameters in B·A, m·r + r·n, minus the r²
    of the GL(r) gauge B·A = (B·G)(G⁻¹·A)).
    """
    r, m, n = check_problem(r, m, n)
    return r * (m + n) - r * r


def check_problem(r: int, m: int, n: int) -> tuple[int, int, int]:
    """Validate 1 ≤ r ≤ min(m, n) with positive integers (a rank-r factorisation of an m×n
    matrix); returns (r, m, n) as ints."""
    r, m, n = (check_positive_int(k, v) for k, v in (("r", r), ("m", m), ("n", n)))
    if r > min(m, n):
        raise LorankError(f"rank r={r} exceeds min(m, n)={min(m, n)} for a {m}x{n} matrix")
    return r, m, n


def _smallest_rank(count, r_max: int, bound: float) -> int | None:
    """Smallest r in [1, r_max] with count(r) > bound, for count non-decreasing on that range."""
    if count(r_max) <= bound:
        return None
    lo, hi = 1, r_max
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid) > bound:
            hi = mid
        else:
            lo = mid + 1
    return lo


def manifold_min_rank(
    K: int,
    N: int,
    shapes: Iterable[Sequence[int]],
    c_star: float = C_STAR_PAPER,
    reading: Reading = "total",
) -> int | None:
    r"""Smallest r with :math:`r(m+n) - r^2 > c_\star K N` (the manifold count, arXiv 2605.03724).

    The rank-r matrices form a manifold of dimension d(r) = r(m+n) − r²; the new paper argues that
    gradient methods fit the KN linearized constraints once d(r) exceeds C*·K·N, with C* ≈ 1.35
    measured for Gaussian-iid features (an empirical, budget-dependent constant: see
    :mod:`lorank.capacity`). d(r) is increasing for r ≤ (m+n)/2, hence on 1..min(m, n).

    Two readings for several adapted matrices (the paper speaks of one matrix):

    * ``"per_matrix"``: every matrix alone must satisfy the count — the max over matrices of
      their individual smallest ranks (conservative);
    * ``"total"``: the dimensions add up, :math:`\sum_\ell r(m_\ell+n_\ell) - r^2 > c_\star KN`,
      with one rank r shared by all matrices.

    With one rank r shared by matrices of different sizes, a matrix with min(m, n) < r is
    adapted at full rank and contributes its full dimension m·n (the set of rank-≤r matrices).
    The per-matrix rank is never below the total one.

    Examples: one 768×768 matrix, K=2, N=32 → 1 (1535 > 86.4); K=2, N=1024 → 2.

    Returns:
        The smallest rank, or ``None`` when no r ≤ max_ℓ min(m_ℓ, n_ℓ) satisfies the count (for
        the per-matrix reading: when some matrix cannot satisfy it alone, even at full rank).
    """
    K = check_positive_int("K", K)
    N = check_positive_int("N", N)
    c = check_number("c_star", c_star, low=0)
    dims = check_shapes(shapes)
    bound = c * K * N
    if check_choice("reading", reading, ("per_matrix", "total")) == "per_matrix":
        ranks = [_smallest_rank(lambda r, m=m, n=n: _saturated_dim(r, m, n), min(m, n), bound)
                 for m, n in dims]
        return None if any(r is None for r in ranks) else max(ranks)
    r_max = max(min(m, n) for m, n in dims)
    return _smallest_rank(lambda r: sum(_saturated_dim(r, m, n) for m, n in dims), r_max, bound)


def _saturated_dim(r: int, m: int, n: int) -> int:
    """Dimension of the m×n matrices of rank ≤ r: d(min(r, min(m, n))) (full rank saturates)."""
    q = min(r, m, n)
    return q * (m + n) - q * q


def ce_min_rank() -> int:
    r"""Smallest rank needed to drive the linearized cross-entropy loss to its infimum: 1.

    New paper (arXiv 2605.03724): along gradient descent on the linearized CE loss, a
    Polyak–Łojasiewicz-type inequality :math:`\|\nabla L(\theta_t)\|^2 \ge \mu\,(L(\theta_t) -
    L_\infty)` holds with μ > 0 that does not depend on a rank threshold, so
    :math:`L(\theta_t) \to L_\infty` (0 for separable data) at any r ≥ 1. The CE "threshold" then
    sits where the linearized data stop being separable (Cover's 2d capacity), far above KN in
    few-shot settings. Measure it with :mod:`lorank.capacity`.
    """
    return 1


def lora_param_count(r: int, shapes: Iterable[Sequence[int]]) -> int:
    """Trainable LoRA parameters at rank r: Σ_ℓ r·(m_ℓ + n_ℓ) (B is m×r, A is r×n)."""
    r = check_positive_int("r", r)
    return sum(r * (m + n) for m, n in check_shapes(shapes))
