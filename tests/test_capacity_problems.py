"""Problem instances: determinism per seed, batch-independence, feature pools, input errors."""

from __future__ import annotations

import numpy as np
import pytest

from lorank.capacity.problems import (
    check_features,
    feature_batch,
    gaussian_batch,
    load_features,
)
from lorank.errors import LorankError


def test_instances_do_not_depend_on_batching():
    full = gaussian_batch(2, 5, 6, 7, 4, seed=11)
    part = gaussian_batch(2, 5, 6, 7, 2, seed=11, start=2)
    np.testing.assert_array_equal(full.G[2:], part.G)
    np.testing.assert_array_equal(full.y[2:], part.y)
    np.testing.assert_array_equal(full.B0[2:], part.B0)
    assert full.G.shape == (4, 7, 5, 6) and full.B0.shape == (4, 5, 2)
    assert full.A0.shape == (4, 2, 6)


def test_seed_changes_instances_and_sign_targets():
    a = gaussian_batch(1, 4, 4, 9, 2, seed=0, targets="sign")
    b = gaussian_batch(1, 4, 4, 9, 2, seed=1, targets="sign")
    assert not np.array_equal(a.G, b.G)
    assert set(np.unique(a.y)) <= {-1.0, 1.0}


def test_feature_batch_samples_distinct_rows(tmp_path):
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((30, 4 * 3))
    np.save(tmp_path / "f.npy", pool)
    feats = load_features(tmp_path / "f.npy", 4, 3)
    batch = feature_batch(feats, 1, 10, 3, seed=2)
    flat = pool.reshape(30, 4, 3)
    for i in range(3):
        idx = [int(np.nonzero((flat == g).all(axis=(1, 2)))[0][0]) for g in batch.G[i]]
        assert len(set(idx)) == 10


@pytest.mark.parametrize(
    ("arr", "msg"),
    [
        (np.zeros((5, 7)), "shape"),
        (np.zeros((5, 4, 3)), "all zero"),
        (np.full((5, 4, 3), np.nan), "NaN"),
        (np.zeros((0, 12)), "empty"),
    ],
)
def test_bad_features(arr, msg):
    with pytest.raises(LorankError, match=msg):
        check_features(arr, 4, 3)


def test_feature_pool_too_small_and_missing_file(tmp_path):
    with pytest.raises(LorankError, match="P=5"):
        feature_batch(np.ones((5, 2, 2)), 1, 8, 1)
    with pytest.raises(LorankError, match="not found"):
        load_features(tmp_path / "none.npy", 2, 2)
    (tmp_path / "bad.npy").write_text("not numpy")
    with pytest.raises(LorankError, match="cannot read"):
        load_features(tmp_path / "bad.npy", 2, 2)


def test_problem_errors():
    with pytest.raises(LorankError, match="exceeds"):
        gaussian_batch(5, 4, 4, 3, 1)
    with pytest.raises(LorankError, match="targets"):
        gaussian_batch(1, 4, 4, 3, 1, targets="uniform")
