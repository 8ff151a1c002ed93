"""One record gathering every rank prescription of the theory for one fine-tuning setup."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from lorank.errors import LorankError
from lorank.theory.thresholds import (
    C_STAR_PAPER,
    Shape,
    ce_min_rank,
    check_c_star,
    check_positive_int,
    check_shapes,
    lora_param_count,
    manifold_min_rank,
    sard_min_rank,
    sard_rounded_rank,
)

Loss = Literal["ce", "mse"]


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
    ``recommended`` is the rank the new paper's theory asks for under ``loss``: 1 for
    cross-entropy (PL, :func:`~lorank.theory.thresholds.ce_min_rank`), the total manifold
    reading for squared loss.
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
        c = check_c_star(self.c_star)
        if self.loss not in ("ce", "mse"):
            raise LorankError(f"loss must be 'ce' or 'mse', got {self.loss!r}")
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
    def recommended(self) -> int | None:
        """The rank the new paper prescribes for this loss (see class docstring)."""
        return self.ce if self.loss == "ce" else self.manifold_total

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
            PrescriptionRow("Cross-entropy (PL)", self.ce, "PL inequality: any r >= 1",
                            self._params(self.ce), "arXiv 2605.03724"),
        ]

    def to_dict(self) -> dict:
        """JSON-ready dict: inputs, every rule's rank, the rows and the recommendation."""
        out = asdict(self)
        out["shapes"] = [list(s) for s in self.shapes]
        out["recommended"] = self.recommended
        out["r_max"] = self.r_max
        out["sard_reachable"] = self.sard_reachable
        out["rows"] = [asdict(row) for row in self.rows()]
        return out


def prescribe(
    K: int, N: int, shapes: Sequence[Sequence[int]], c_star: float = C_STAR_PAPER,
    loss: Loss = "ce",
) -> Prescription:
    """Build the :class:`Prescription` for K logits, N examples and the adapted ``shapes``."""
    return Prescription(K=K, N=N, shapes=tuple(tuple(s) for s in shapes), c_star=c_star,
                        loss=loss)
