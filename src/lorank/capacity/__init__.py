"""Capacity experiments: the empirical C* transition and PL measurements (science notes §3).

* :mod:`lorank.capacity.problems` — random and feature-based fitting instances (batched).
* :mod:`lorank.capacity.solvers` — batched GD (curvature-adapted step) and Levenberg–Marquardt.
* :mod:`lorank.capacity.estimator` — the 50 % transition C50 of d/(KN) with a bootstrap CI.
* :mod:`lorank.capacity.pl` — PL ratios along trajectories.
* :mod:`lorank.capacity.plot` — success curves.

Importing this package imports torch (the solvers); :mod:`lorank.theory` never does.
"""

from lorank.capacity.estimator import (
    CStarConfig,
    CStarResult,
    SuccessCurve,
    bootstrap_ci,
    count_dim,
    estimate_c_star,
    fit_transition,
)
from lorank.capacity.pl import PLRecord, PLTrajectory, pl_ratios, pl_trajectory
from lorank.capacity.problems import SensingBatch, feature_batch, gaussian_batch, load_features
from lorank.capacity.solvers import SolveResult, solve, solve_gd, solve_lm

__all__ = [
    "CStarConfig",
    "CStarResult",
    "PLRecord",
    "PLTrajectory",
    "SensingBatch",
    "SolveResult",
    "SuccessCurve",
    "bootstrap_ci",
    "count_dim",
    "estimate_c_star",
    "feature_batch",
    "fit_transition",
    "gaussian_batch",
    "load_features",
    "pl_ratios",
    "pl_trajectory",
    "solve",
    "solve_gd",
    "solve_lm",
]
