"""LM-BFF sampling: a reference transcription, hypothesis properties, the published splits."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorank.data import SEEDS, Split, cap_test, get_task, lmbff_order, lmbff_sample
from lorank.data.sampling import remove_overlap, sample_splits
from lorank.errors import LorankError


def reference_lmbff(lines: list[tuple[int, str]], k: int, seed: int):
    """Gao et al.'s procedure written out directly: global seed, shuffle the list of lines,
    bucket by label in order of appearance, first k / next k per bucket."""
    lines = list(lines)
    np.random.seed(seed)
    np.random.shuffle(lines)
    buckets: dict[str, list] = {}
    for line in lines:
        buckets.setdefault(line[1], []).append(line)
    train = [ln for b in buckets.values() for ln in b[:k]]
    dev = [ln for b in buckets.values() for ln in b[k : 2 * k]]
    return [i for i, _ in train], [i for i, _ in dev]


pools = st.lists(st.sampled_from("abc"), min_size=1, max_size=120)


@settings(max_examples=60, deadline=None)
@given(labels=pools, k=st.integers(1, 8), seed=st.integers(0, 2**31 - 1))
def test_sampler_properties(labels, k, seed):
    counts = {c: labels.count(c) for c in set(labels)}
    if min(counts.values()) < 2 * k:
        with pytest.raises(LorankError, match="has only"):
            lmbff_sample(labels, k, seed)
        return
    train, dev = lmbff_sample(labels, k, seed)
    # per-class counts: exactly k in train and k in dev for every class present
    for c in counts:
        assert sum(labels[i] == c for i in train) == k
        assert sum(labels[i] == c for i in dev) == k
    # disjoint, within range, and identical to the reference transcription
    assert not set(train) & set(dev)
    assert len(set(train)) == len(train) and all(0 <= i < len(labels) for i in train)
    ref_train, ref_dev = reference_lmbff(list(enumerate(labels)), k, seed)
    assert train.tolist() == ref_train and dev.tolist() == ref_dev
    # deterministic per seed
    again = lmbff_sample(labels, k, seed)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], dev)


@settings(max_examples=40, deadline=None)
@given(n_test=st.integers(0, 30), n_pool=st.integers(0, 60), seed=st.integers(0, 10**6))
def test_pool_sampling_never_touches_test(n_test, n_pool, seed):
    rng = np.random.default_rng(seed)
    texts = [f"s{i}" for i in rng.integers(0, 40, size=n_pool)]
    labels = rng.integers(0, 2, size=n_pool)
    pool = Split("pool", tuple(texts), None, labels)
    test = Split("test", tuple(f"s{i}" for i in range(n_test)), None, np.zeros(n_test, int))
    kept, stats = remove_overlap(pool, test, dedup=True)
    assert not set(kept.text_a) & set(test.text_a)
    assert len(set(kept.text_a)) == len(kept)
    assert stats["test_overlap"] + stats["duplicates"] + len(kept) == n_pool
    if min(kept.counts(2)) >= 4:
        train, dev = sample_splits(kept, 2, 2, seed)
        assert train.counts(2).tolist() == [2, 2] and dev.counts(2).tolist() == [2, 2]
        assert not set(train.text_a) & set(dev.text_a)
        assert not set(train.text_a + dev.text_a) & set(test.text_a)


def test_sampler_orders_by_first_appearance():
    labels = ["x", "y"] * 10
    order = lmbff_order(20, 7)
    train, _ = lmbff_sample(labels, 3, 7)
    first = labels[order[0]]
    assert labels[train[0]] == first and [labels[i] for i in train[:3]] == [first] * 3


def test_lmbff_order_is_numpy_legacy_shuffle():
    a = list(range(50))
    np.random.seed(13)
    np.random.shuffle(a)
    assert lmbff_order(50, 13) == a


def test_sampler_rejects_bad_k():
    for k in (0, -1, 1.5, True):
        with pytest.raises(LorankError, match="positive integer"):
            lmbff_sample(["a", "b"] * 4, k, 1)  # type: ignore[arg-type]


def test_cap_test_mezo_style():
    split = Split("test", tuple(str(i) for i in range(1500)), None, np.zeros(1500, int))
    capped = cap_test(split, 1000)
    lines = list(range(1500))
    np.random.seed(42)
    np.random.shuffle(lines)
    assert capped.text_a == tuple(str(i) for i in lines[:1000])
    assert cap_test(split, 2000) is split and cap_test(split, None) is split
    with pytest.raises(LorankError, match="test_max"):
        cap_test(split, 0)


# --- the published LM-BFF splits --------------------------------------------------------------

GLUE_TRAIN_ROWS = {"RTE": 2490, "QNLI": 104743, "MNLI": 392702}


def _rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]


@pytest.mark.parametrize("task", sorted(GLUE_TRAIN_ROWS))
@pytest.mark.parametrize("seed", SEEDS)
def test_sampler_reproduces_published_split_indices(data_dir, task, seed):
    """QNLI/RTE/MNLI files keep GLUE's row index in column 0. Label every GLUE train row we know
    (those in the published train/dev) and give all other rows a placeholder class; our sampler
    on n = |GLUE train| rows must then pick exactly the published rows, in the published order."""
    spec = get_task(task)
    folder = data_dir / "k-shot" / spec.lmbff.folder / f"16-{seed}"
    train_rows = _rows(folder / "train.tsv")
    dev_rows = _rows(folder / spec.lmbff.dev_file)
    labels: list[str] = ["?"] * GLUE_TRAIN_ROWS[task]
    for row in train_rows + dev_rows:
        labels[int(row[0])] = row[-1]
    train, dev = lmbff_sample(labels, 16, seed)
    keep = lambda idx: [int(i) for i in idx if labels[i] != "?"]  # noqa: E731
    assert keep(train) == [int(r[0]) for r in train_rows]
    assert keep(dev) == [int(r[0]) for r in dev_rows]
