"""One record gathering every rank prescription of the theory for one fine-tuning setup.

What the rules claim, stated where users read them (``lorank prescribe``, ``lorank.recommend``):

* the cross-entropy (PL) rule is rank-free **while the linearized training data are separable**
  (:data:`CE_CONDITION`; measured: :data:`CE_MEASURED`);
* for K > 2 classes no rule settles the rank (:data:`MULTICLASS_NOTE`): the record gives the rules'
  range (:attr:`Prescription.rank_range`) and no single recommendation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from lorank.errors import check_choice, check_number, check_positive_int
from lorank.theory.thresholds import (
    C_STAR_PAPER,
    Shape,
    ce_min_rank,
    check_shapes,
    lora_param_count,
    manifold_dim,
    manifold_min_rank,
    sard_min_rank,
    sard_rounded_rank,
)

Loss = Literal["ce", "mse"]

#: The condition of the cross-entropy (PL) rule, as printed next to its rank.
CE_CONDITION = "rank-free while the linearized training data are separable"

#: What has been measured about that condition (docs/capacity.md; numbers from stored runs).
CE_MEASURED = (
    "measured separability: on SST-2, QNLI, MRPC and RTE (16-shot, MiniLM, last-layer "
    "query+value) the linearized training data were separable on all 5 seeds (margin features of "
    "full row rank) and r = 1 drove the training CE below 1e-2 on every seed; on Gaussian "
    "features r = 1 drives the CE to ~0 (1,000 GD steps) on half the instances at K·N/d ≈ 2.5 "
    "and on none from K·N/d = 3 (d = r(m+n) − r², Cover's separability capacity 2d): the "
    "threshold is moved, not abolished (docs/capacity.md)")

#: Measured CE capacity of rank one on Gaussian features, as K·N/d (docs/capacity.md: C50 in
#: d/(KN) = 0.400, i.e. K·N/d ≈ 2.5; 0/100 instances reach zero loss from K·N/d = 3).
CE_CAPACITY_GAUSSIAN = 2.5

#: Why r = 1 is not the answer for K > 2 classes.
MULTICLASS_NOTE = (
    "the variance argument that makes r = 1 enough holds for binary tasks: one direction "
    "separates two classes, so the bias is saturated at r = 1 and the Rademacher variance only "
    "grows with r; with K > 2 classes the bias can keep falling past r = 1 (the paper: rank one "
    "is not enough when K > 2), so no rule settles the rank — measure it")


@dataclass(frozen=True)
class PrescriptionRow:
    """One rule's answer: its smallest rank (None if unsatisfiable) and what it costs."""

    rule: str
    r: int | None
    condition: str
    lora_params: int | None
    source: str


@dataclass(frozen=True)
class Prescription:
    """All rank prescriptions for a setup (K logits, N examples, adapted shapes, C*, loss).

    Fields ``sard_exact`` … ``ce`` are computed from the inputs on construction (frozen record).
    For K ≤ 2, ``recommended`` is the rank the new paper's theory asks for under ``loss``: 1 for
    cross-entropy (PL, :func:`~lorank.theory.thresholds.ce_min_rank`; valid while the linearized
    data are separable), the total manifold reading for squared loss. For K > 2 it is None: no
    rule settles the rank (:data:`MULTICLASS_NOTE`); ``rank_range`` gives the rules' range.
    """

    K: int
    N: int
    shapes: tuple[Shape, ...]
    c_star: float = C_STAR_PAPER
    loss: Loss = "ce"
    sard_exact: int = field(init=False)
    sard_rounded: int = field(init=False)
    manifold_per_matrix: int | None = field(init=False)
    manifold_total: int | None = field(init=False)
    ce: int = field(init=False)

    def __post_init__(self) -> None:
        K, N = check_positive_int("K", self.K), check_positive_int("N", self.N)
        shapes = tuple(check_shapes(self.shapes))
        c = check_number("c_star", self.c_star, low=0)
        check_choice("loss", self.loss, ("ce", "mse"))
        values = {
            "K": K, "N": N, "shapes": shapes, "c_star": c,
            "sard_exact": sard_min_rank(K, N),
            "sard_rounded": sard_rounded_rank(K, N),
            "manifold_per_matrix": manifold_min_rank(K, N, shapes, c, "per_matrix"),
            "manifold_total": manifold_min_rank(K, N, shapes, c, "total"),
            "ce": ce_min_rank(),
        }
        for key, value in values.items():
            object.__setattr__(self, key, value)

    @property
    def r_max(self) -> int:
        """The largest rank every adapted matrix can hold: min over matrices of min(m, n)."""
        return min(min(s) for s in self.shapes)

    @property
    def sard_reachable(self) -> bool:
        """Whether the Sard rank fits the adapted matrices (r ≤ :attr:`r_max`); when it does
        not, no LoRA of these matrices meets the Sard count r(r+1)/2 > KN."""
        return self.sard_exact <= self.r_max

    @property
    def settled(self) -> bool:
        """Whether one rule gives the answer: binary tasks only (K ≤ 2; see MULTICLASS_NOTE)."""
        return self.K <= 2

    @property
    def loss_rank(self) -> int | None:
        """The rank of the rule for this loss: CE (PL) for cross-entropy, total manifold
        reading for squared loss (None if unsatisfiable)."""
        return self.ce if self.loss == "ce" else self.manifold_total

    @property
    def recommended(self) -> int | None:
        """The rank the new paper prescribes for this loss when K ≤ 2; None for K > 2."""
        return self.loss_rank if self.settled else None

    @property
    def rank_range(self) -> tuple[int, int]:
        """(smallest, largest) rank over the rules that apply to this loss (the CE rule only for
        cross-entropy) and can be met: from the loss's own rule to the Sard bound, which is
        sufficient for the absence of spurious minima."""
        ranks = [self.sard_exact, self.sard_rounded, self.manifold_per_matrix,
                 self.manifold_total, *([self.ce] if self.loss == "ce" else [])]
        met = [r for r in ranks if r is not None]
        return min(met), max(met)

    @property
    def capacity_ratio(self) -> float:
        """K·N / d(1), d(1) = Σ_ℓ (m_ℓ + n_ℓ − 1) the rank-one manifold dimension of all adapted
        matrices: rank one reached zero CE on Gaussian features up to ≈ 2.5
        (:data:`CE_CAPACITY_GAUSSIAN`)."""
        return self.K * self.N / sum(manifold_dim(1, m, n) for m, n in self.shapes)

    def _params(self, r: int | None) -> int | None:
        return None if r is None else lora_param_count(r, self.shapes)

    def rows(self) -> list[PrescriptionRow]:
        """The table rows: Sard exact and rounded, manifold per-matrix and total, CE/PL."""
        KN = self.K * self.N
        bound = self.c_star * KN
        return [
            PrescriptionRow("Sard exact", self.sard_exact, f"r(r+1)/2 > KN = {KN}",
                            self._params(self.sard_exact), "Jang, Lee, Ryu (ICML 2024)"),
            PrescriptionRow("Sard rounded", self.sard_rounded,
                            f"r >= sqrt(2KN) = {math.sqrt(2 * KN):.2f}",
                            self._params(self.sard_rounded), "rounded form ('r >= 12')"),
            PrescriptionRow("Manifold per-matrix", self.manifold_per_matrix,
                            f"r(m+n)-r^2 > C*KN = {bound:g} for every matrix",
                            self._params(self.manifold_per_matrix), "arXiv 2605.03724"),
            PrescriptionRow("Manifold total", self.manifold_total,
                            f"sum_l r(m_l+n_l)-r^2 > C*KN = {bound:g}",
                            self._params(self.manifold_total), "arXiv 2605.03724"),
            PrescriptionRow("Cross-entropy (PL)", self.ce,
                            "any r >= 1 while the linearized data are separable",
                            self._params(self.ce), "arXiv 2605.03724"),
        ]

    def to_dict(self) -> dict:
        """JSON-ready dict: inputs, every rule's rank, the rows and the recommendation."""
        out = asdict(self)
        out["shapes"] = [list(s) for s in self.shapes]
        out["recommended"] = self.recommended
        out["r_max"] = self.r_max
        out["sard_reachable"] = self.sard_reachable
        out["settled"] = self.settled
        out["rank_range"] = list(self.rank_range)
        out["capacity_ratio"] = self.capacity_ratio
        out["ce_condition"] = f"{CE_CONDITION}; {CE_MEASURED}"
        if not self.settled:
            out["note"] = f"K = {self.K} > 2: {MULTICLASS_NOTE}"
        out["rows"] = [asdict(row) for row in self.rows()]
        return out


def prescribe(
    K: int, N: int, shapes: Sequence[Sequence[int]], c_star: float = C_STAR_PAPER,
    loss: Loss = "ce",
) -> Prescription:
    """Build the :class:`Prescription` for K logits, N examples and the adapted ``shapes``."""
    return Prescription(K=K, N=N, shapes=tuple(tuple(s) for s in shapes), c_star=c_star,
                        loss=loss)
