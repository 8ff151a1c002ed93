"""Rank-threshold theory: closed forms only, pure Python/numpy/scipy — never imports torch.

* :mod:`lorank.theory.thresholds` — Sard, manifold and cross-entropy ranks.
* :mod:`lorank.theory.prescription` — all of them for one setup.
* :mod:`lorank.theory.rademacher` — a multi-class margin bound for the rank-r linearized class.
"""

from lorank.theory.prescription import Prescription, PrescriptionRow, prescribe
from lorank.theory.rademacher import RademacherBound, predict_rank, rademacher_bound
from lorank.theory.thresholds import (
    C_STAR_PAPER,
    ce_min_rank,
    lora_param_count,
    manifold_dim,
    manifold_min_rank,
    sard_min_rank,
    sard_rounded_rank,
)

__all__ = [
    "C_STAR_PAPER",
    "Prescription",
    "PrescriptionRow",
    "RademacherBound",
    "ce_min_rank",
    "lora_param_count",
    "manifold_dim",
    "manifold_min_rank",
    "predict_rank",
    "prescribe",
    "rademacher_bound",
    "sard_min_rank",
    "sard_rounded_rank",
]
