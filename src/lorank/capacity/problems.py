r"""Problem instances for the C* capacity experiment (science notes §3).

One instance is a matrix-sensing / linearized-LoRA fitting problem: KN sensing matrices
:math:`G_i \in \mathbb{R}^{m\times n}` and targets :math:`y \in \mathbb{R}^{KN}`; a rank-r
factorisation :math:`X = BA` (B ∈ R^{m×r}, A ∈ R^{r×n}) must fit
:math:`\langle G_i, BA\rangle_F = y_i` (squared loss) or separate
:math:`y_i \langle G_i, BA\rangle_F > 0` (cross-entropy, y_i = ±1).

Every instance is generated from its own random stream seeded by ``(seed, KN, index)``, so an
instance is the same whether it is built alone or in a batch (batched == one-by-one) and the whole
sweep is deterministic per seed. Batches are stacked numpy arrays of shape (I, KN, m, n); the
solvers in :mod:`lorank.capacity.solvers` take them as torch tensors.

Real features (for example the per-example Jacobians of an encoder, see :mod:`lorank.ntk`) can be
passed as a pool of P matrices; each instance then samples KN distinct rows of the pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lorank.errors import LorankError, check_choice, check_positive_int
from lorank.theory.thresholds import check_problem

Targets = Literal["gaussian", "sign"]
TARGETS: tuple[str, ...] = ("gaussian", "sign")


@dataclass(frozen=True)
class SensingBatch:
    """A batch of I problem instances.

    Attributes:
        G: sensing matrices, shape (I, KN, m, n).
        y: targets, shape (I, KN) (±1 when ``targets == "sign"``).
        B0: initial left factors, shape (I, m, r).
        A0: initial right factors, shape (I, r, n).
        targets: how ``y`` was drawn.
    """

    G: np.ndarray
    y: np.ndarray
    B0: np.ndarray
    A0: np.ndarray
    targets: str

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(I, KN, m, n)."""
        I, KN, m, n = self.G.shape
        return I, KN, m, n

    def select(self, index: Sequence[int] | np.ndarray) -> SensingBatch:
        """The sub-batch of the given instance indices."""
        idx = np.asarray(index, dtype=int)
        return SensingBatch(self.G[idx], self.y[idx], self.B0[idx], self.A0[idx], self.targets)


def instance_rng(seed: int, KN: int, index: int) -> np.random.Generator:
    """The random stream of instance ``index`` with KN constraints in the sweep ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(KN), int(index)]))


def _draw(draw_G: Callable[[np.random.Generator, int], np.ndarray], P: int | None, r: int,
          m: int, n: int, KN: int, instances: int, seed: int, targets: str, init_scale: float,
          start: int) -> SensingBatch:
    """Validate, then draw instances ``start .. start+instances-1``. Instance i uses only
    :func:`instance_rng` (seed, KN, i): G = ``draw_G(rng, KN)`` (KN, m, n) first, then y (iid
    N(0, 1), or ±1 with probability 1/2 each for ``targets="sign"``), then the small random init:
    entries of B (m, r) and A (r, n) iid N(0, init_scale² / max(m, n)). ``P``: rows of the
    feature pool G is drawn from (KN ≤ P required), None for Gaussian G."""
    r, m, n = check_problem(r, m, n)
    KN = check_positive_int("KN", KN)
    instances = check_positive_int("instances", instances)
    targets = check_choice("targets", targets, TARGETS)
    if P is not None and KN > P:
        raise LorankError(f"features pool has P={P} rows but KN={KN} distinct rows are needed")
    s = init_scale / np.sqrt(max(m, n))
    Gs, ys, Bs, As = [], [], [], []
    for i in range(start, start + instances):
        rng = instance_rng(seed, KN, i)
        Gs.append(draw_G(rng, KN))
        ys.append(rng.standard_normal(KN) if targets == "gaussian"
                  else np.where(rng.random(KN) < 0.5, -1.0, 1.0))
        Bs.append(s * rng.standard_normal((m, r)))
        As.append(s * rng.standard_normal((r, n)))
    return SensingBatch(np.stack(Gs), np.stack(ys), np.stack(Bs), np.stack(As), targets)


def gaussian_batch(
    r: int,
    m: int,
    n: int,
    KN: int,
    instances: int,
    seed: int = 0,
    targets: Targets = "gaussian",
    init_scale: float = 1e-3,
    start: int = 0,
) -> SensingBatch:
    """Instances ``start .. start+instances-1`` with iid N(0, 1) sensing matrices.

    Shapes: G (I, KN, m, n), y (I, KN), B0 (I, m, r), A0 (I, r, n) with I = ``instances``.
    Instance i uses only :func:`instance_rng` (seed, KN, i): G first, then y, then the init.
    """
    return _draw(lambda rng, KN: rng.standard_normal((KN, m, n)), None, r, m, n, KN, instances,
                 seed, targets, init_scale, start)


def check_features(features: np.ndarray, m: int, n: int) -> np.ndarray:
    """Return a feature pool as a float array of shape (P, m, n).

    Accepts shape (P, m, n) or (P, m·n) (rows reshaped in C order). Raises LorankError on a wrong
    shape, non-finite entries or an all-zero pool.
    """
    arr = np.asarray(features)
    if arr.dtype.kind not in "fiu":
        raise LorankError(f"features must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[1] == m * n:
        arr = arr.reshape(arr.shape[0], m, n)
    if arr.ndim != 3 or arr.shape[1:] != (m, n):
        raise LorankError(
            f"features must have shape (P, {m}, {n}) or (P, {m * n}), got {tuple(arr.shape)}"
        )
    if arr.shape[0] == 0:
        raise LorankError("features array is empty (P = 0 rows)")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise LorankError("features contain NaN or infinite values")
    if not np.any(arr):
        raise LorankError("features are all zero")
    return arr


def load_features(path: str | os.PathLike[str], m: int, n: int) -> np.ndarray:
    """Load a ``.npy`` feature pool and validate it with :func:`check_features`."""
    p = Path(path)
    if not p.is_file():
        raise LorankError(f"features file not found: {p}")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise LorankError(f"cannot read features file {p} as .npy: {exc}") from None
    return check_features(arr, m, n)


def feature_batch(
    features: np.ndarray,
    r: int,
    KN: int,
    instances: int,
    seed: int = 0,
    targets: Targets = "gaussian",
    init_scale: float = 1e-3,
    start: int = 0,
) -> SensingBatch:
    """Instances whose KN sensing matrices are distinct rows sampled from a feature pool.

    Args:
        features: pool of shape (P, m, n) (validated by :func:`check_features`), P ≥ KN.
        r, KN, instances, seed, targets, init_scale, start: as in :func:`gaussian_batch`.

    Returns:
        A :class:`SensingBatch`; G[i] = features[rows_i] with rows_i drawn without replacement.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 3:
        raise LorankError(f"features must have shape (P, m, n), got {tuple(features.shape)}")
    P, m, n = features.shape
    return _draw(lambda rng, KN: features[rng.choice(P, size=KN, replace=False)], P, r, m, n, KN,
                 instances, seed, targets, init_scale, start)
