r"""Positive control: can this setup see a rank effect when one is planted? (science notes §6b)

A **teacher** of known rank s is planted in the linearized model of a real encoder:

    ΔW*_ℓ = κ · U_ℓ V_ℓᵀ,   U_ℓ ∈ R^{m×s}, V_ℓ ∈ R^{n×s} with orthonormal columns (QR of Gaussian
    draws, seeded), one κ for every adapted matrix,
    t(x) = f(x; W0) + Σ_ℓ ⟨G_ℓ(x), ΔW*_ℓ⟩,        y(x) = argmax_k t_k(x).

κ is calibrated so that the teacher's labels differ from the W0 head's predictions on a stated
fraction φ of the examples (:func:`calibrate`): the W0 head then scores 1 − φ against the
teacher, and everything above that is learnt. **Students** are linearized LoRA models of rank r
trained, exactly as the rank experiments train (cross-entropy, full-batch GD at c·η0, dev
selection), on N teacher-labelled examples and tested on held-out teacher-labelled ones.

Expected outcome, stated before any number: a student of rank r < s cannot represent ΔW*
(the best rank-r approximation of κ·UVᵀ keeps r/s of its energy), so with enough examples
(N = 1,024) the rank-1 student must score clearly below (> 5 points) the rank-s student when
s = 8, while at s = 1 every rank can represent the teacher and the ranks must tie; with N = 32
few of the φ flipped labels are seen and every student stays near the W0 head. If the s = 8,
N = 1,024 gap does not appear, the setup could not have detected a rank effect on accuracy, and
ties elsewhere mean nothing — the report says so.

Everything here works on :class:`~lorank.ntk.Features` of one fixed sample of the task's texts
(their own labels are never used): features are computed once and sliced per split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from lorank.errors import LorankError, check_positive_ints
from lorank.ntk.features import Block, Features


@dataclass(frozen=True)
class PlantedSpec:
    """One planted-teacher setting.

    Attributes:
        teacher_rank: s, the rank of every ΔW*_ℓ.
        flip: φ, the fraction of the sample whose teacher label differs from the W0 prediction.
        n_train: N, teacher-labelled training examples (a seeded subset of the train pool).
        seed: draws the teacher's factors and the training subset.
        subspace: q > 0 draws the factors inside the top-q principal directions of the
            sample's layer inputs and backpropagated signals (:func:`data_subspaces`); 0 draws
            them uniformly.
    """

    teacher_rank: int = 8
    flip: float = 0.25
    n_train: int = 1024
    seed: int = 0
    subspace: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.subspace, bool) or not isinstance(self.subspace, int) \
                or self.subspace < 0:
            raise LorankError(f"subspace must be an integer >= 0, got {self.subspace!r}")
        check_positive_ints(teacher_rank=self.teacher_rank, n_train=self.n_train)
        if not 0 < self.flip < 0.5:
            raise LorankError(f"flip must be in (0, 0.5), got {self.flip!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def planted_update(blocks: Sequence[Block], s: int, seed: int,
                   bases: Sequence[tuple[Tensor, Tensor]] | None = None) -> Tensor:
    """vec(U_ℓ V_ℓᵀ) over the blocks (unit scale κ = 1): (P,) float64.

    U_ℓ, V_ℓ: the Q factors of (m, s) and (n, s) standard Gaussian draws from
    ``torch.Generator().manual_seed(seed)`` (block after block), so ‖U_ℓV_ℓᵀ‖_F = √s and every
    non-zero singular value is 1. With ``bases`` [(Q_U (m, q), Q_V (n, q)) per block, orthonormal
    columns], the draws are (q, s) and U = Q_U·orth(draw), V = Q_V·orth(draw): random orthonormal
    factors inside the given subspaces (:func:`data_subspaces`). LorankError if s exceeds
    min(m, n) (or q) of a block.
    """
    gen = torch.Generator().manual_seed(int(seed))
    parts = []
    for j, b in enumerate(blocks):
        QU, QV = bases[j] if bases is not None else (None, None)
        cap = min(b.m, b.n) if QU is None else min(QU.shape[1], QV.shape[1])
        if s > cap:
            raise LorankError(f"teacher rank {s} exceeds the {cap} dimensions available in "
                              f"{b.name}")
        U, _ = torch.linalg.qr(torch.randn(b.m if QU is None else QU.shape[1], s,
                                           generator=gen, dtype=torch.float64))
        V, _ = torch.linalg.qr(torch.randn(b.n if QV is None else QV.shape[1], s,
                                           generator=gen, dtype=torch.float64))
        if QU is not None:
            U, V = QU.to(torch.float64) @ U, QV.to(torch.float64) @ V
        parts.append((U @ V.T).reshape(-1))
    return torch.cat(parts)


def data_subspaces(features: Features, q: int) -> list[tuple[Tensor, Tensor]]:
    """Per block, orthonormal bases (m, q) and (n, q) of the top-q principal directions of the
    backpropagated signals δ_t and of the layer inputs x_t over every token of the sample
    (the per-token factors G_i = Σ_t δ_t x_tᵀ, :class:`~lorank.ntk.jacobian.TokenFactors`).

    A planted update inside these subspaces changes the logits along directions the examples
    actually vary in; uniformly random directions of a 384-dimensional space sit mostly where
    the (strongly anisotropic) token representations barely vary, and no training budget that
    the rank experiments use learns them. LorankError without token factors.
    """
    if features.factors is None:
        raise LorankError("data subspaces need the per-token factors (outer Jacobian method)")
    out = []
    for b in features.blocks:
        fac = features.factors[b.name]
        X = fac.X.to(torch.float64)
        D = fac.Delta.to(torch.float64).reshape(-1, b.m)
        if q > min(b.m, b.n, X.shape[0]):
            raise LorankError(f"q = {q} exceeds the dimensions of {b.name}")
        QV = torch.linalg.svd(X, full_matrices=False).Vh[:q].T
        QU = torch.linalg.svd(D, full_matrices=False).Vh[:q].T
        out.append((QU, QV))
    return out


def teacher_logits(features: Features, delta: Tensor, kappa: float) -> Tensor:
    """t = f0 + κ·J·delta: (N, K) in float64."""
    J = features.J
    return features.f0.to(torch.float64) + kappa * (J @ delta.to(J.dtype)).to(torch.float64)


def flip_fraction(features: Features, delta: Tensor, kappa: float) -> float:
    """Fraction of examples whose teacher label differs from the W0 head's prediction."""
    t = teacher_logits(features, delta, kappa)
    return float((t.argmax(1) != features.f0.argmax(1)).double().mean())


def calibrate(features: Features, delta: Tensor, flip: float, iters: int = 60) -> float:
    """The smallest κ > 0 whose teacher flips at least ``flip`` of the W0 predictions
    (bisection on log κ after bracketing; the flip fraction is 0 at κ = 0 and grows with κ
    until the planted term dominates). LorankError if no κ reaches it (a teacher direction the
    features cannot see)."""
    lin = (features.J @ delta.to(features.J.dtype)).to(torch.float64)
    f0 = features.f0.to(torch.float64)
    base = f0.argmax(1)

    def frac(k: float) -> float:
        return float(((f0 + k * lin).argmax(1) != base).double().mean())

    hi = 1.0
    for _ in range(200):
        if frac(hi) >= flip:
            break
        hi *= 2.0
    else:
        raise LorankError(f"no teacher scale flips {flip:.0%} of the W0 predictions")
    lo = 0.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if frac(mid) >= flip else (mid, hi)
    return hi


@dataclass
class PlantedData:
    """Teacher-labelled train/dev/test features and how the teacher was built."""

    train: Features
    dev: Features
    test: Features
    kappa: float
    flip_sample: float
    w0_test_acc: float
    teacher_fro: float


def planted_splits(sample: Features, spec: PlantedSpec, n_pool: int, n_dev: int
                   ) -> PlantedData:
    """Teacher labels for a sample laid out as [train pool (n_pool) | dev (n_dev) | test].

    The teacher (rank ``spec.teacher_rank``, seed ``spec.seed``) is calibrated on the whole
    sample; train = ``spec.n_train`` examples of the train pool (all of it when n_train = n_pool,
    else a seeded subset), dev and test are the fixed blocks after it.
    """
    if spec.n_train > n_pool:
        raise LorankError(f"n_train = {spec.n_train} exceeds the train pool of {n_pool}")
    if n_pool + n_dev >= sample.N:
        raise LorankError(f"the sample of {sample.N} leaves no test examples after "
                          f"{n_pool} train and {n_dev} dev")
    bases = data_subspaces(sample, spec.subspace) if spec.subspace else None
    delta = planted_update(sample.blocks, spec.teacher_rank, spec.seed, bases)
    kappa = calibrate(sample, delta, spec.flip)
    labels = teacher_logits(sample, delta, kappa).argmax(1)
    gen = torch.Generator().manual_seed(int(spec.seed) * 7919 + spec.n_train)
    train_idx = (torch.arange(n_pool) if spec.n_train == n_pool
                 else torch.sort(torch.randperm(n_pool, generator=gen)[:spec.n_train]).values)
    dev_idx = torch.arange(n_pool, n_pool + n_dev)
    test_idx = torch.arange(n_pool + n_dev, sample.N)
    test = sample.subset(test_idx, labels[test_idx])
    w0 = float((test.f0.argmax(1) == test.labels).double().mean())
    return PlantedData(sample.subset(train_idx, labels[train_idx]),
                       sample.subset(dev_idx, labels[dev_idx]), test, kappa,
                       flip_fraction(sample, delta, kappa), w0,
                       kappa * math.sqrt(spec.teacher_rank * len(sample.blocks)))
