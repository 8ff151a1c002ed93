r"""A Rademacher margin bound for rank-r linearized LoRA, and the rank it predicts (numpy only).

Setting (science notes §1, §2.4): the linearized model scores class k of input x as
:math:`h_X(x, k) = f_k(x; W_0) + \langle G_k(x), X\rangle_F` with
:math:`G_k(x) \in \mathbb{R}^{m\times n}` and the LoRA update X = BA of rank ≤ r. The hypothesis
class at rank r is

.. math:: \mathcal{H}_r = \{h_X : \operatorname{rank} X \le r,\ \|X\|_F \le R_F\}.

Bound (derivation in ``docs/theory.md``, "Generalisation: a Rademacher rank bound"). With
probability ≥ 1 − δ over N iid training examples, for every :math:`h \in \mathcal{H}_r`:

.. math::
   R(h) \le \underbrace{\hat R_{S,\rho}(h)}_{\text{bias}}
        + \underbrace{\frac{c_K}{\rho}\,\frac{W_r\,\Gamma\,\sqrt{K'}}{\sqrt N}}_{\text{variance}}
        + \underbrace{\sqrt{\frac{\log(1/\delta)}{2N}}}_{\text{confidence}},

* :math:`\hat R_{S,\rho}` — empirical ρ-margin (ramp) loss
  :math:`\frac1N\sum_i \min(1, \max(0, 1 - \mu_i/\rho))` of the margins
  :math:`\mu_i = h(x_i, y_i) - \max_{k\ne y_i} h(x_i, k)` (or :math:`y_i h(x_i)` for one logit);
* :math:`c_K = 4K` for K ≥ 2 classes (Mohri, Rostamizadeh, Talwalkar, *Foundations of Machine
  Learning*, 2nd ed., 2018, Thm 9.2), :math:`c_K = 2` for one real-valued score (ibid., Thm 5.8);
  :math:`K' = K` (K ≥ 2, the union over classes of Π₁(H), bounded by Jensen) or 1;
* :math:`W_r \Gamma/\sqrt N` bounds the Rademacher complexity of a norm ball of linear functions
  (Kakade, Sridharan, Tewari, NeurIPS 2008): ``norm="nuclear"`` uses
  :math:`\|X\|_* \le \sqrt r\,\|X\|_F`, so :math:`W_r = \sqrt r R_F` against the spectral norm of
  the features (bounded by their Frobenius norm Γ); ``norm="frobenius"`` uses :math:`W_r = R_F`
  (r-independent: the rank constraint is dropped);
* Γ = sup over inputs and classes of :math:`\|G_k(x)\|_F` (plug in the training maximum,
  :func:`feature_norm`; this is an assumption, stated in the docs).

The fixed offset :math:`f(x; W_0)` does not change the Rademacher complexity. The bound is vacuous
(> 1) in most few-shot settings; its use here is its argmin over r (:func:`predict_rank`): bias
falls with r, variance grows like √r.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lorank.errors import LorankError, check_choice, check_number, check_positive_int

Norm = Literal["nuclear", "frobenius"]
NORMS: tuple[str, ...] = ("nuclear", "frobenius")


@dataclass(frozen=True)
class RademacherBound:
    """The three terms of the rank-r margin bound and their sum (see the module doc)."""

    r: int
    K: int
    N: int
    rho: float
    delta: float
    frob_norm: float
    feature_norm: float
    norm: str
    bias: float
    rademacher: float
    variance: float
    confidence: float
    bound: float

    @property
    def vacuous(self) -> bool:
        """True when the bound exceeds 1 (says nothing about a 0-1 risk)."""
        return self.bound > 1


def margins_from_logits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Multi-class margins μ_i = s_{i,y_i} − max_{k≠y_i} s_{i,k}, shape (N,).

    Args:
        logits: scores, shape (N, K) with K ≥ 2, or (N,) / (N, 1) for one real-valued score.
        labels: class indices in 0..K−1, shape (N,); for one score, labels in {−1, +1} or
            {0, 1} (0 is read as −1) and μ_i = y_i s_i.
    """
    s = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if s.size == 0 or y.size == 0:
        raise LorankError("logits and labels must be non-empty")
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.shape[0] != y.shape[0] or y.ndim != 1:
        raise LorankError(f"logits {s.shape} and labels {y.shape} disagree on N")
    if not np.all(np.isfinite(s)):
        raise LorankError("logits contain NaN or infinite values")
    if s.ndim == 1:
        if not np.all(np.isin(y, (-1, 0, 1))):
            raise LorankError("labels for a single score must be in {-1, +1} (or {0, 1})")
        return np.where(y > 0, 1.0, -1.0) * s
    if s.ndim != 2:
        raise LorankError(f"logits must have shape (N, K), got {s.shape}")
    K = s.shape[1]
    if not np.all((y >= 0) & (y < K) & (y == np.round(y))):
        raise LorankError(f"labels must be integers in 0..{K - 1}")
    y = y.astype(int)
    rows = np.arange(len(y))
    true = s[rows, y]
    other = s.copy()
    other[rows, y] = -np.inf
    return true - other.max(axis=1)


def margin_loss(margins: np.ndarray, rho: float) -> float:
    """Empirical ρ-margin (ramp) loss (1/N) Σ min(1, max(0, 1 − μ_i/ρ))."""
    rho = check_number("rho", rho, low=0)
    mu = np.asarray(margins, dtype=np.float64)
    if mu.ndim != 1 or mu.size == 0:
        raise LorankError("margins must be a non-empty 1-D array")
    if np.any(np.isnan(mu)):
        raise LorankError("margins contain NaN")
    return float(np.mean(np.clip(1.0 - mu / rho, 0.0, 1.0)))


def feature_norm(G: np.ndarray) -> float:
    """Γ = max over examples and classes of ‖G_k(x_i)‖_F.

    Args:
        G: features of shape (N, K, m, n), (N, K, P) or (N, P) (flattened per class).
    """
    arr = np.asarray(G, dtype=np.float64)
    if arr.size == 0 or arr.ndim < 2:
        raise LorankError(f"features must be a non-empty array of shape (N, ...), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise LorankError("features contain NaN or infinite values")
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim == 2 else arr.reshape(*arr.shape[:2], -1)
    gamma = float(np.sqrt((flat * flat).sum(-1)).max())
    if gamma == 0:
        raise LorankError("features are all zero: the Rademacher bound needs a non-zero norm")
    return gamma


def rademacher_bound(
    margins: np.ndarray | None = None,
    *,
    logits: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    frob_norm: float,
    r: int,
    feature_norm: float,
    rho: float = 1.0,
    delta: float = 0.05,
    K: int | None = None,
    norm: str = "nuclear",
) -> RademacherBound:
    """The rank-r margin bound of the module doc for one trained solution.

    Args:
        margins: training margins μ_i, shape (N,); or give ``logits`` (N, K) and ``labels``.
        frob_norm: R_F, the Frobenius norm of the solution X = BA (or a bound on it).
        r: LoRA rank of the class.
        feature_norm: Γ ≥ ‖G_k(x)‖_F for all inputs and classes (> 0), see :func:`feature_norm`.
        rho: margin ρ > 0.
        delta: confidence parameter in (0, 1).
        K: number of classes (scores); inferred from ``logits``, required with ``margins``.
        norm: ``"nuclear"`` (W_r = √r R_F) or ``"frobenius"`` (W_r = R_F).

    Returns:
        A :class:`RademacherBound` (bias, rademacher, variance, confidence, bound).
    """
    if (margins is None) == (logits is None):
        raise LorankError("give either margins or logits+labels, not both / neither")
    if logits is not None:
        if labels is None:
            raise LorankError("logits need labels")
        s = np.asarray(logits)
        K_in = 1 if s.ndim == 1 or (s.ndim == 2 and s.shape[1] == 1) else s.shape[1]
        if K is not None and check_positive_int("K", K) != K_in:
            raise LorankError(f"K={K} disagrees with logits of {K_in} columns")
        K = K_in
        margins = margins_from_logits(logits, labels)
    if K is None:
        raise LorankError("K (number of classes) is required with margins")
    K = check_positive_int("K", K)
    r = check_positive_int("r", r)
    rho = check_number("rho", rho, low=0)
    R_F = check_number("frob_norm", frob_norm, low=0, strict=False)
    gamma = check_number("feature_norm", feature_norm, low=0)
    delta = check_number("delta", delta, low=0)
    if delta >= 1:
        raise LorankError(f"delta must be in (0, 1), got {delta!r}")
    check_choice("norm", norm, NORMS)
    bias = margin_loss(margins, rho)
    N = int(np.asarray(margins).shape[0])
    W = math.sqrt(r) * R_F if norm == "nuclear" else R_F
    rad = W * gamma * math.sqrt(K if K >= 2 else 1) / math.sqrt(N)
    c_K = 4 * K if K >= 2 else 2
    variance = c_K / rho * rad
    confidence = math.sqrt(math.log(1 / delta) / (2 * N))
    return RademacherBound(r, K, N, rho, delta, R_F, gamma, norm, bias, rad, variance,
                           confidence, bias + variance + confidence)


def predict_rank(records: Sequence[RademacherBound]) -> int:
    """The rank whose bound is smallest (ties: the smallest rank).

    Args:
        records: one :class:`RademacherBound` per candidate rank (distinct r), e.g. computed from
            the per-rank trained solutions of the NTK engine.
    """
    recs = list(records)
    if not recs:
        raise LorankError("predict_rank needs at least one per-rank bound")
    ranks = [rec.r for rec in recs]
    if len(set(ranks)) != len(ranks):
        raise LorankError(f"per-rank bounds must have distinct ranks, got {sorted(ranks)}")
    if any(not math.isfinite(rec.bound) for rec in recs):
        raise LorankError("a per-rank bound is not finite")
    return min(recs, key=lambda rec: (rec.bound, rec.r)).r
