"""LM-BFF few-shot sampling (Gao, Fisch, Chen 2021, ``tools/generate_k_shot_data.py``).

The published procedure, reproduced exactly: ``np.random.seed(seed)``; ``np.random.shuffle`` the
list of training lines; walk the shuffled lines and bucket them by label (buckets in order of first
appearance); train = the first k lines of every bucket, dev = the next k (lines k … 2k−1), both
written bucket after bucket. Test is the original dev set, optionally capped as in MeZO /
Malladi et al.: ``np.random.seed(42)``; shuffle the test lines; keep the first 1,000.

Applied to the full GLUE train files (in GLUE order) this reproduces the published LM-BFF
splits; tests/test_data_sampling.py checks the row indices of the published QNLI, RTE and MNLI
splits for all five seeds.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from lorank.data.dataset import Split
from lorank.errors import LorankError, check_positive_int

#: LM-BFF's five split seeds.
SEEDS: tuple[int, ...] = (13, 21, 42, 87, 100)
#: Seed of the MeZO / Malladi et al. test cap.
TEST_CAP_SEED = 42


def lmbff_order(n: int, seed: int) -> list[int]:
    """The permutation LM-BFF applies to n training lines: ``np.random.seed(seed)`` then
    ``np.random.shuffle`` of a Python list (legacy MT19937 Fisher–Yates, stable across numpy)."""
    order = list(range(n))
    np.random.RandomState(seed).shuffle(order)
    return order


def lmbff_sample(
    labels: Sequence[Hashable] | np.ndarray,
    k: int,
    seed: int,
    *,
    dev_k: int | None = None,
    source: str = "the pool",
    label_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, dev) of LM-BFF's k-shot sample of a labelled pool.

    Args:
        labels: label of each of the n pool rows (any hashable; order = pool order).
        k: training examples per class; train has k·K rows.
        seed: LM-BFF seed (13, 21, 42, 87, 100 in the papers).
        dev_k: dev examples per class (LM-BFF: k; lines k … 2k−1 of each bucket).
        source: name of the pool for error messages.
        label_names: optional display name per label value for error messages.

    Returns:
        (train_idx, dev_idx): int64 arrays of pool indices, grouped by label in order of first
        appearance after the shuffle, each group in shuffled order — LM-BFF's file order.

    Raises LorankError if k < 1 or a class has fewer than k + dev_k rows.
    """
    check_positive_int("k (examples per class)", k)
    dev_k = k if dev_k is None else dev_k
    if isinstance(dev_k, bool) or not isinstance(dev_k, int | np.integer) or dev_k < 0:
        raise LorankError(f"dev_k must be a non-negative integer, got {dev_k!r}")
    values = list(labels.tolist() if isinstance(labels, np.ndarray) else labels)
    buckets: dict[Hashable, list[int]] = {}
    for i in lmbff_order(len(values), seed):
        buckets.setdefault(values[i], []).append(i)
    for value, rows in buckets.items():
        if len(rows) < k + dev_k:
            shown = (label_names[value] if label_names is not None and isinstance(value, int)
                     else value)
            raise LorankError(
                f"{source}: class {shown!r} has only {len(rows)} examples; k={k} needs "
                f"{k + dev_k} ({k} train + {dev_k} dev)"
            )
    train = [i for rows in buckets.values() for i in rows[:k]]
    dev = [i for rows in buckets.values() for i in rows[k : k + dev_k]]
    return np.asarray(train, dtype=np.int64), np.asarray(dev, dtype=np.int64)


def cap_test(split: Split, test_max: int | None, seed: int = TEST_CAP_SEED) -> Split:
    """At most ``test_max`` test rows, MeZO style: seeded shuffle, keep the first ``test_max``.

    Splits with ≤ test_max rows are returned unchanged (as in MeZO's generator).
    """
    if test_max is None:
        return split
    check_positive_int("test_max", test_max)
    if len(split) <= test_max:
        return split
    return split.subset(lmbff_order(len(split), seed)[:test_max])


def remove_overlap(
    pool: Split, exclude: Split | None, *, dedup: bool
) -> tuple[Split, dict[str, int]]:
    """Drop pool rows whose text (text_a, text_b) occurs in ``exclude`` (the test split) and,
    if ``dedup``, repeated texts within the pool (first occurrence kept). Order is preserved.

    Returns the filtered pool and counts ``{"pool_rows", "test_overlap", "duplicates"}``.
    """
    banned = set(exclude.keys()) if exclude is not None else set()
    seen: set[tuple[str, str | None]] = set()
    keep: list[int] = []
    overlap = duplicates = 0
    for i, key in enumerate(pool.keys()):
        if key in banned:
            overlap += 1
        elif dedup and key in seen:
            duplicates += 1
        else:
            seen.add(key)
            keep.append(i)
    stats = {"pool_rows": len(pool), "test_overlap": overlap, "duplicates": duplicates}
    return (pool if len(keep) == len(pool) else pool.subset(keep)), stats


def sample_indices(
    pool: Split,
    K: int,
    k: int,
    seed: int,
    *,
    label_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pool row indices (train, dev) drawn by :func:`lmbff_sample`; every one of the K classes
    must be present with at least 2k rows (LorankError naming the class otherwise)."""
    counts = pool.counts(K)
    names = list(label_names) if label_names is not None else [str(y) for y in range(K)]
    for y in range(K):
        if counts[y] < 2 * k:
            raise LorankError(f"{pool.source or 'the pool'}: class {names[y]!r} has only "
                              f"{counts[y]} examples; k={k} needs {2 * k} ({k} train + {k} dev)")
    return lmbff_sample(pool.labels, k, seed, source=pool.source or "the pool",
                        label_names=names)


def sample_splits(
    pool: Split,
    K: int,
    k: int,
    seed: int,
    *,
    label_names: Sequence[str] | None = None,
) -> tuple[Split, Split]:
    """(train, dev) Splits drawn from ``pool`` by :func:`lmbff_sample`; every one of the K
    classes must be present with at least 2k rows."""
    train_idx, dev_idx = sample_indices(pool, K, k, seed, label_names=label_names)
    return pool.subset(train_idx, "train"), pool.subset(dev_idx, "dev")
