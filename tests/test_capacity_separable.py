"""lorank.linearized.separable: the CE rule's condition (separable linearized data) on features."""

from __future__ import annotations

import torch

from lorank.linearized.pl_real import ce_separable, margin_rank
from lorank.linearized.separable import features_separability
from lorank.ntk.features import Features
from synthetic_features import BLOCKS, synthetic_features


def test_full_row_rank_margins_are_separable():
    f = synthetic_features(N=8, K=3, seed=1)  # P = 58 > N(K-1) = 16: generic full rank
    sep = features_separability(f, seed=5, source="synthetic")
    assert sep.separable and (sep.rank, sep.rows, sep.N, sep.K, sep.P) == (16, 16, 8, 3, 58)
    assert sep.separable == ce_separable(f) and "separable: margin features" in sep.line()


def test_more_margins_than_parameters_are_not_certified():
    f = synthetic_features(N=40, K=2, seed=2)  # N(K-1) = 40 rows in P = 58: still full rank
    assert features_separability(f).separable
    g = torch.Generator().manual_seed(3)
    P = sum(b.size for b in BLOCKS)
    J = torch.randn(80, 2, P, generator=g, dtype=torch.float64)  # 80 margins in 58 dims
    f = Features(J, torch.zeros(80, 2, dtype=torch.float64), torch.arange(80) % 2, BLOCKS)
    rank, rows = margin_rank(f)
    assert (rank, rows) == (P, 80)
    sep = features_separability(f)
    assert not sep.separable and not ce_separable(f)
    assert sep.line().startswith("not certified separable") and "measure the rank" in sep.line()


def test_duplicate_example_makes_margins_rank_deficient():
    f = synthetic_features(N=6, K=2, seed=4)
    J = f.J.clone()
    J[1] = J[0]  # the same features ...
    labels = f.labels.clone()
    labels[1] = labels[0]  # ... and label: one margin direction twice
    dup = Features(J, f.f0, labels, f.blocks)
    assert margin_rank(dup) == (5, 6) and not features_separability(dup).separable
