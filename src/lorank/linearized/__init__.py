"""Linearized (NTK-regime) LoRA on precomputed Jacobian features.

* :mod:`lorank.linearized.model` — f_lin = f0 + Σ s⟨G_ℓ, B_ℓA_ℓ⟩, init, scaling, spectra.
* :mod:`lorank.linearized.train` — many (rank, seed, lr) configurations in one vectorised run.
* :mod:`lorank.linearized.kernel` — kernel ridge / min-norm and kernel logistic baselines.
* :mod:`lorank.linearized.nuclear` — full linearized FT with a nuclear-norm penalty (FISTA).
* :mod:`lorank.linearized.selection` — pure dev-curve model selection (shared with peft runs).
* :mod:`lorank.linearized.experiment` — a task's rank sweep end to end (``lorank train``).
"""

from lorank.linearized.kernel import KernelFit, kernel_regression, select_kernel
from lorank.linearized.model import (
    factor_spectrum,
    init_factors,
    linearized_logits,
    spectrum,
)
from lorank.linearized.nuclear import NuclearFit, nuclear_fit, svt
from lorank.linearized.selection import Choice, select_checkpoint
from lorank.linearized.train import (
    Factors,
    LinearizedTraining,
    RunSpec,
    TrainResult,
    Trajectory,
    train_linearized,
)

__all__ = [
    "Choice",
    "Factors",
    "KernelFit",
    "LinearizedTraining",
    "NuclearFit",
    "RunSpec",
    "TrainResult",
    "Trajectory",
    "factor_spectrum",
    "init_factors",
    "kernel_regression",
    "linearized_logits",
    "nuclear_fit",
    "select_checkpoint",
    "select_kernel",
    "spectrum",
    "svt",
    "train_linearized",
]
