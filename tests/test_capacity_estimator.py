"""C* estimator: closed-form counts, the logistic fit, LM's transition at 1, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cstar_helpers import cstar
from lorank.capacity.estimator import (
    CStarConfig,
    SuccessCurve,
    bootstrap_ci,
    count_dim,
    fit_transition,
    sweep_KN,
)
from lorank.errors import LorankError

torch.set_num_threads(1)


def test_counts_closed_form():
    assert count_dim(1, 24, 24) == 47
    assert count_dim(3, 10, 20, "manifold") == 3 * 30 - 9
    assert count_dim(1, 24, 24, "sard") == 1
    assert count_dim(4, 10, 20, "sard") == 10
    with pytest.raises(LorankError, match="count"):
        count_dim(1, 4, 4, "cover")


def test_sweep_KN_is_decreasing_and_distinct():
    assert sweep_KN(47, (0.9, 1.0, 1.1)) == [52, 47, 43]
    with pytest.raises(LorankError, match="2 points"):
        sweep_KN(47, (1.0,))
    with pytest.raises(LorankError, match="distinct"):
        sweep_KN(1, (1.0, 1.1))


def test_fit_recovers_a_logistic_curve():
    x = np.linspace(0.8, 1.6, 9)
    c50, s = 1.2, 15.0
    counts = np.full(9, 100000)
    k = np.round(counts / (1 + np.exp(-s * (x - c50)))).astype(int)
    fit_c50, fit_s, ok = fit_transition(x, k, counts)
    assert ok
    assert fit_c50 == pytest.approx(c50, abs=1e-3)
    assert fit_s == pytest.approx(s, rel=1e-2)


def test_separated_curve_gives_the_gap_midpoint_and_unbracketed_gives_nan():
    c50, _, ok = fit_transition([1.0, 2.0, 3.0, 4.0], [0, 0, 10, 10], [10] * 4)
    assert ok and c50 == pytest.approx(2.5, abs=1e-6)
    c50, _, ok = fit_transition([1.0, 2.0, 3.0], [9, 10, 10], [10] * 3)
    assert not ok and math.isnan(c50)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=3, max_size=8))
def test_bracketed_fit_lies_in_grid_span(successes):
    x = np.linspace(1.0, 2.0, len(successes))
    ks = sorted(successes)  # a monotone success curve
    c50, slope, ok = fit_transition(x, ks, [20] * len(ks))
    rates = np.array(ks) / 20
    crosses = bool(np.any(rates < 0.5) & np.any(rates > 0.5)) or bool(np.any(rates == 0.5))
    flat = len(set(ks)) == 1  # e.g. every point at exactly 1/2: slope 0, no transition (doc)
    assert ok == (crosses and not flat)
    if ok:
        assert x[0] - 0.5 <= c50 <= x[-1] + 0.5 and slope > 0


def test_bootstrap_ci_contains_estimate():
    curve = SuccessCurve((0.9, 1.0, 1.1, 1.2), (52, 47, 43, 39), (2, 9, 15, 20), (20,) * 4)
    c50, _, _ = fit_transition(curve.ratios, curve.successes, curve.counts)
    lo, hi = bootstrap_ci(curve, 300)
    assert lo < c50 < hi
    assert bootstrap_ci(curve, 300) == (lo, hi)  # deterministic


def test_lm_transition_is_one_for_rank_one_24x24():
    res = cstar(1, 24, 24, solver="lm", steps=100, instances=12,
                          ratios=(0.9, 0.96, 1.0, 1.05, 1.1, 1.2), n_boot=300)
    assert res.bracketed
    assert 0.96 < res.c50 < 1.05
    assert res.ci_low - 0.02 <= 1.0 <= res.ci_high + 0.02
    assert res.curve.KN == (52, 49, 47, 45, 43, 39)
    assert res.curve.successes[0] == 0 and res.curve.successes[-1] == 12


def test_determinism_and_sard_units():
    kw = dict(r=1, m=8, n=8, solver="gd", steps=300, instances=6,
              ratios=(0.9, 1.1, 1.4, 2.0), n_boot=50)
    a = cstar(**kw, seed=4)
    b = cstar(**kw, seed=4)
    assert a.curve == b.curve
    assert (a.c50, a.ci_low) == (b.c50, b.ci_low) or (math.isnan(a.c50) and math.isnan(b.c50))
    s = cstar(**kw, seed=4, count="sard")
    assert s.curve.successes == a.curve.successes
    assert s.curve.ratios == tuple(1 / kn for kn in a.curve.KN)
    if a.bracketed:
        assert s.c50 == pytest.approx(a.c50 / 15, rel=0.05)  # d = 15, Sard count 1


def test_estimator_input_errors():
    with pytest.raises(LorankError, match="exceeds"):
        cstar(r=9, m=8, n=8)
    with pytest.raises(LorankError, match="steps"):
        cstar(steps=0)
    with pytest.raises(LorankError, match="tol"):
        cstar(tol=0.0)
    with pytest.raises(LorankError, match="P=5"):
        cstar(m=4, n=4, features=np.ones((5, 4, 4)) + np.arange(16).reshape(4, 4))


def test_features_run_end_to_end():
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((40, 36))
    res = cstar(1, 6, 6, solver="lm", steps=60, instances=4, features=pool,
                          ratios=(0.8, 1.0, 1.5), n_boot=20, features_name="pool")
    assert res.features == "pool" and len(res.curve.KN) == 3


def test_gd_transition_moves_down_with_the_budget():
    kw = dict(r=1, m=8, n=8, solver="gd", instances=8, n_boot=100,
              ratios=(0.9, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0, 4.0))
    short = cstar(**kw, steps=60)
    long = cstar(**kw, steps=1500)
    assert short.bracketed and long.bracketed
    assert long.c50 < short.c50
    assert long.c50 >= 0.9  # never below the algebraic count (no fit past d = KN)


@pytest.mark.slow
def test_gd_1000_steps_24x24_matches_documented_value():
    res = cstar(1, 24, 24, solver="gd", steps=1000, tol=1e-8, instances=100,
                          ratios=(0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.7, 2.0, 2.5, 3.0))
    assert res.ci_low <= 1.238 + 0.02 and res.ci_high >= 1.238 - 0.02  # docs/capacity.md


def test_workers_give_the_same_curve():
    kw = dict(r=1, m=6, n=6, solver="gd", steps=150, instances=5, ratios=(0.9, 1.3, 2.0),
              n_boot=50, seed=3)
    ticks = []
    one = cstar(**kw)
    two = cstar(**kw, workers=2, progress=ticks.append)
    assert one.curve == two.curve
    assert (one.c50, one.ci_low, one.ci_high) == (two.c50, two.ci_low, two.ci_high) or (
        math.isnan(one.c50) and math.isnan(two.c50))
    assert sum(ticks) == CStarConfig(**kw).progress_total()
    with pytest.raises(LorankError, match="workers"):
        cstar(**kw, workers=0)
