"""Rademacher margin bound: closed form, monotonicity, degenerate inputs, predict_rank, no torch."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorank.errors import LorankError
from lorank.theory.rademacher import (
    feature_norm,
    margin_loss,
    margins_from_logits,
    predict_rank,
    rademacher_bound,
)


def test_closed_form_tiny_case():
    rec = rademacher_bound(np.array([1.0, 0.5, -1.0, 2.0]), frob_norm=1.0, r=4,
                           feature_norm=2.0, rho=1.0, delta=0.05, K=2)
    assert rec.bias == pytest.approx(1.5 / 4)  # ramp: 0, 0.5, 1, 0
    # sqrt(r) R_F Gamma sqrt(K) / sqrt(N)
    assert rec.rademacher == pytest.approx(2.0 * 2.0 * math.sqrt(2) / 2)
    assert rec.variance == pytest.approx(8 * rec.rademacher)  # 4K/rho
    assert rec.confidence == pytest.approx(math.sqrt(math.log(20) / 8))
    assert rec.bound == pytest.approx(rec.bias + rec.variance + rec.confidence)
    assert rec.vacuous


def test_binary_single_score_and_frobenius_reading():
    rec = rademacher_bound(logits=np.array([2.0, -1.0, 0.5]), labels=np.array([1, 0, 0]),
                           frob_norm=3.0, r=9, feature_norm=1.0, rho=2.0, norm="frobenius")
    assert rec.K == 1
    assert rec.bias == pytest.approx((0 + 0.5 + 1) / 3)  # margins 2, 1, -0.5
    assert rec.rademacher == pytest.approx(3.0 / math.sqrt(3))  # r-independent
    assert rec.variance == pytest.approx(2 / 2.0 * rec.rademacher)


def test_margins_from_logits_multiclass():
    s = np.array([[3.0, 1.0, 2.0], [0.0, 1.0, 5.0]])
    np.testing.assert_allclose(margins_from_logits(s, np.array([0, 1])), [1.0, -4.0])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64), st.floats(0.0, 10.0), st.floats(0.0, 10.0),
       st.floats(0.01, 5.0))
def test_bound_monotone_in_complexity(r1, r2, f1, f2, gamma):
    m = np.linspace(-1, 2, 7)
    lo, hi = sorted((r1, r2))
    flo, fhi = sorted((f1, f2))
    kw = dict(feature_norm=gamma, rho=0.5, K=3)
    b_lo = rademacher_bound(m, frob_norm=flo, r=lo, **kw)
    b_hi = rademacher_bound(m, frob_norm=fhi, r=hi, **kw)
    assert b_lo.variance <= b_hi.variance and b_lo.bound <= b_hi.bound
    assert b_lo.bias == b_hi.bias


def test_degenerate_inputs_are_finite():
    for margins in (np.zeros(5), np.full(5, 1e300), np.full(5, -np.inf), np.array([np.inf])):
        rec = rademacher_bound(margins, frob_norm=0.0, r=1, feature_norm=1.0, K=2)
        assert math.isfinite(rec.bound) and 0 <= rec.bias <= 1


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        (dict(margins=np.array([])), "non-empty"),
        (dict(margins=np.array([np.nan])), "NaN"),
        (dict(margins=np.ones(3), feature_norm=0.0), "feature_norm"),
        (dict(margins=np.ones(3), rho=0.0), "rho"),
        (dict(margins=np.ones(3), delta=1.0), "delta"),
        (dict(margins=np.ones(3), norm="spectral"), "norm"),
        (dict(margins=np.ones(3), K=None), "K"),
        (dict(margins=None), "either"),
        (dict(margins=np.ones(3), frob_norm=-1.0), "frob_norm"),
    ],
)
def test_bound_errors(kwargs, msg):
    base = dict(frob_norm=1.0, r=2, feature_norm=1.0, K=2)
    base.update(kwargs)
    margins = base.pop("margins")
    with pytest.raises(LorankError, match=msg):
        rademacher_bound(margins, **base)


def test_feature_norm_and_zero_features():
    G = np.zeros((3, 2, 4, 4))
    G[1, 0, 0, 0] = 3.0
    G[2, 1, 1, 1] = 4.0
    assert feature_norm(G) == pytest.approx(4.0)
    with pytest.raises(LorankError, match="all zero"):
        feature_norm(np.zeros((3, 2, 4, 4)))
    with pytest.raises(LorankError, match="non-empty"):
        feature_norm(np.zeros((0, 2)))


def test_predict_rank_takes_argmin_then_smallest_rank():
    m1 = np.array([-0.5, 0.2, 1.0])  # rank 1 underfits
    m2 = np.array([1.0, 1.0, 1.0])  # rank >= 2 saturates the bias
    recs = [rademacher_bound(m, frob_norm=0.01, r=r, feature_norm=1.0, K=3)
            for r, m in ((1, m1), (2, m2), (4, m2), (8, m2))]
    assert predict_rank(recs) == 2
    same = [rademacher_bound(m2, frob_norm=0.0, r=r, feature_norm=1.0, K=3) for r in (4, 1, 2)]
    assert predict_rank(same) == 1
    with pytest.raises(LorankError, match="at least one"):
        predict_rank([])
    with pytest.raises(LorankError, match="distinct"):
        predict_rank([recs[0], recs[0]])


def test_theory_does_not_import_torch():
    code = ("import sys, lorank.theory, lorank.theory.rademacher; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_margin_loss_range():
    assert margin_loss(np.array([-5.0, 0.0, 0.25, 9.0]), 0.5) == pytest.approx((1 + 1 + 0.5) / 4)
