"""lorank.report.stats: paired TOST against statsmodels, closed forms, verdicts, tie rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.weightstats import ttost_paired

from lorank.errors import LorankError
from lorank.report.stats import (
    DID_NOT_TRAIN,
    EQUIVALENT,
    INCONCLUSIVE,
    WORSE,
    bootstrap_interval,
    check_margin,
    compare,
    mde,
    seeds_for_equivalence,
    t_interval,
    t_test_paired,
    tied_with_best,
    tost_paired,
)


def test_tost_matches_statsmodels_on_random_data():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 12))
        a = rng.normal(0.7, 0.03, n)
        b = a + rng.normal(rng.normal(0, 0.01), rng.uniform(0.001, 0.03), n)
        margin = float(rng.uniform(0.002, 0.03))
        expected = ttost_paired(a, b, -margin, margin)[0]
        assert tost_paired(a - b, margin) == pytest.approx(float(expected), rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-0.05, 0.05, allow_nan=False), min_size=2, max_size=10),
       st.floats(0.001, 0.05))
def test_tost_rejects_iff_ci90_inside_margin(d, margin):
    d = np.asarray(d)
    if d.std(ddof=1) < 1e-9:  # exactly tied samples are the documented special case
        return
    lo, hi = t_interval(d, 0.90)
    p = tost_paired(d, margin)
    if min(abs(lo + margin), abs(hi - margin)) > 1e-9:  # away from the boundary
        assert (p < 0.05) == (-margin < lo and hi < margin)


def test_t_interval_and_t_test_closed_form():
    d = np.array([0.01, -0.01, 0.02, 0.0, 0.03])
    lo, hi = t_interval(d, 0.95)
    half = 2.7764451 * d.std(ddof=1) / math.sqrt(5)  # t_{0.975, 4}
    assert (lo, hi) == pytest.approx((0.01 - half, 0.01 + half), rel=1e-6)
    lo90, hi90 = t_interval(d, 0.90)
    assert (hi90 - 0.01, 0.01 - lo90) == pytest.approx(
        (2.1318468 * d.std(ddof=1) / math.sqrt(5),) * 2, rel=1e-6)
    assert t_test_paired(d) == pytest.approx(sps.ttest_rel(d, np.zeros(5)).pvalue)
    assert all(math.isnan(x) for x in t_interval(d[:1], 0.9))


def test_mde_closed_form_and_science_notes():
    # science notes §6: five seeds with s_d = 1.5 points detect about 2.5 points
    assert mde(1.5, 5) == pytest.approx((2.7764451 + 0.9409646) * 1.5 / math.sqrt(5), rel=1e-6)
    assert 2.4 < mde(1.5, 5) < 2.6
    assert mde(1.5, 2) > 10 * mde(1.5, 5) / 3  # two seeds: t_{0.975,1} = 12.7
    assert mde(1.0, 1) == math.inf and mde(math.nan, 5) == math.inf


def test_seeds_for_equivalence_is_the_smallest_sufficient_n():
    n = seeds_for_equivalence(0.015, 0.01)
    assert n is not None and n > 5
    f = lambda k: (sps.t.ppf(0.95, k - 1) + sps.t.ppf(0.9, k - 1)) * 0.015 / math.sqrt(k)  # noqa: E731
    assert f(n) <= 0.01 < f(n - 1)
    assert seeds_for_equivalence(0.0, 0.01) == 2
    assert seeds_for_equivalence(1.0, 1e-4, limit=50) is None


def test_bootstrap_interval():
    d = np.array([0.01, -0.01, 0.02, 0.0, 0.03, 0.015])
    ci = bootstrap_interval(d)
    assert ci is not None and ci[0] < d.mean() < ci[1]
    assert bootstrap_interval(d) == ci  # deterministic
    lo, hi = t_interval(d, 0.90)
    assert lo <= ci[0] and ci[1] <= hi + 0.005  # narrower-ish than t (no t correction)
    assert bootstrap_interval(d[:4]) is None
    assert bootstrap_interval(np.zeros(5)) == (0.0, 0.0)


def test_verdicts():
    rng = np.random.default_rng(1)
    a = 0.7 + rng.normal(0, 0.01, 5)
    # a clear 3-point loss
    c = compare(a - 0.03 + rng.normal(0, 0.003, 5), a, 0.01)
    assert c.verdict == WORSE and c.ci95[1] < 0 and c.n == 5
    # wide CI: inconclusive, with a finite minimal detectable difference
    c = compare(a + np.array([0.06, -0.05, 0.04, -0.06, 0.03]), a, 0.01)
    assert c.verdict == INCONCLUSIVE and c.ci90[1] - c.ci90[0] > 0.02
    assert 0.02 < c.mde < math.inf and c.seeds_needed > 5
    # tight and small: equivalent
    c = compare(a + rng.normal(0.001, 0.001, 5), a, 0.01)
    assert c.verdict == EQUIVALENT and c.ci90[0] > -0.01 and c.ci90[1] < 0.01
    assert c.bootstrap_agrees is True
    # step-0 ties on every seed: [0, 0] is not equivalence
    c = compare(a, a.copy(), 0.01, trained=np.zeros(5, bool))
    assert c.verdict == DID_NOT_TRAIN and c.n == 0 and c.n_pairs == 5
    assert c.bootstrap_agrees is None
    # the same pairs counted as trained would be (trivially) equivalent: the flag matters
    assert compare(a, a.copy(), 0.01).verdict == EQUIVALENT
    # untrained pairs are left out; one trained pair gives no interval
    c = compare(a, a + np.array([0.02, 0, 0, 0, 0]), 0.01,
                trained=np.array([True, False, False, False, False]))
    assert c.verdict == INCONCLUSIVE and c.n == 1 and c.untrained_pairs == 4
    assert math.isnan(c.ci90[0])


def test_compare_errors():
    with pytest.raises(LorankError, match="equal length"):
        compare(np.zeros(3), np.zeros(4))
    with pytest.raises(LorankError, match="finite"):
        tost_paired(np.array([0.0, math.nan]), 0.01)
    for bad in (0, -0.01, 1, 5, math.nan, True):
        with pytest.raises(LorankError, match=r"must be in \(0, 1\)"):
            check_margin(bad)


def test_tie_rule():
    rng = np.random.default_rng(2)
    best = 0.5 + rng.normal(0, 0.01, 5)
    # significant but below the margin: tied
    assert tied_with_best(best, best - 0.005 + rng.normal(0, 0.0005, 5), 0.01)
    # at least the margin but not significant (noisy): tied
    assert tied_with_best(best, best - 0.02 + rng.normal(0, 0.05, 5), 0.01)
    # significant and beyond the margin: not tied
    assert not tied_with_best(best, best - 0.03 + rng.normal(0, 0.002, 5), 0.01)
    # equal means on every seed: tied
    assert tied_with_best(best, best.copy(), 0.01)
    # only one seed where either trained: nothing is significant
    assert tied_with_best(best, best - 0.05, 0.01, np.array([1, 0, 0, 0, 0], bool))
