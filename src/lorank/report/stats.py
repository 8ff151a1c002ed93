r"""Paired comparisons over seeds: equivalence (TOST), difference, power, bootstrap, ties.

One comparison is two ranks of the same task × model × method, paired by data seed: with
x_{a,i}, x_{b,i} the test metric of ranks a and b on seed i, the paired differences are
d_i = x_{a,i} − x_{b,i}, i = 1..n, with mean d̄, sample SD s_d (ddof = 1) and SE = s_d/√n.

* **Equivalence** (two one-sided tests, Schuirmann 1987; Lakens 2017, "Equivalence tests"): at a
  margin δ > 0, H0: |μ_d| ≥ δ is rejected at level α iff both one-sided t-tests reject
  (μ_d ≤ −δ and μ_d ≥ δ), i.e. iff the 1 − 2α interval d̄ ± t_{1−α, n−1}·SE lies inside (−δ, δ).
  p_TOST = max(p_lower, p_upper) (``scipy.stats.ttest_1samp`` with ``alternative``; checked
  against ``statsmodels.stats.weightstats.ttost_paired`` in the tests).
* **Difference**: the usual two-sided paired t-test, 95% interval d̄ ± t_{0.975, n−1}·SE.
* **Verdict** (α = 0.05): *equivalent* if TOST rejects; else *a better* / *a worse* if the 95%
  interval excludes 0; else *inconclusive*. Pairs in which neither rank moved off W0 are left
  out before testing: their difference is 0 by construction (both keep f(W0)), not by
  measurement; with no pair left the verdict is *did not train*.
* **Power**: the minimal detectable difference of the two-sided paired t-test at level α and
  power 1 − β is approximately MDE = (t_{1−α/2, n−1} + t_{1−β, n−1})·s_d/√n (the normal
  approximation with Student quantiles; e.g. Chow, Shao, Wang, "Sample Size Calculations in
  Clinical Research", §3.2). Five seeds with s_d = 1.5 points detect about 2.5 points; two
  seeds detect almost nothing (t_{0.975, 1} = 12.7).
* **Seeds for equivalence**: the smallest n with (t_{1−α, n−1} + t_{1−β/2, n−1})·s_d/√n ≤ δ,
  the TOST sample size for a true difference of 0 (Chow et al. §3.2.3).
* **Bootstrap** (cross-check where n ≥ 5): BCa interval of d̄ by ``scipy.stats.bootstrap``
  (percentile when BCa is undefined), same level as the TOST interval. With 5 seeds it is
  narrower than the t interval (it ignores the t correction); it is a check, not the verdict.

All values are in the metric's units (fractions); the report prints points (× 100).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from lorank.errors import LorankError
from lorank.experiments.spec import DEFAULT_MARGIN, check_margin

ALPHA = 0.05
POWER = 0.80
BOOTSTRAP_MIN_SEEDS = 5

EQUIVALENT = "equivalent"
BETTER = "r = 1 better"
WORSE = "r = 1 worse"
INCONCLUSIVE = "inconclusive"
DID_NOT_TRAIN = "did not train"
VERDICTS = (EQUIVALENT, BETTER, WORSE, INCONCLUSIVE, DID_NOT_TRAIN)


def _diffs(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, dtype=float).ravel()
    if not np.isfinite(d).all():
        raise LorankError("paired differences must be finite")
    return d


def t_interval(d: np.ndarray, level: float) -> tuple[float, float]:
    """Student-t interval d̄ ± t_{(1+level)/2, n−1}·s_d/√n (NaN for n < 2)."""
    d = _diffs(d)
    n = d.size
    if n < 2:
        return math.nan, math.nan
    mean = float(d.mean())
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def tost_paired(d: np.ndarray, margin: float) -> float:
    """p-value of the paired TOST of H0: |μ_d| ≥ δ (NaN for n < 2).

    p = max(p_lower, p_upper) with p_lower from the one-sided t-test of μ_d ≤ −δ against
    μ_d > −δ and p_upper of μ_d ≥ δ against μ_d < δ. A zero SD gives p = 0 when |d̄| < δ
    (every seed inside the margin, no spread) and 1 otherwise.
    """
    d = _diffs(d)
    check_margin(margin)
    if d.size < 2:
        return math.nan
    if float(d.std(ddof=1)) == 0.0:
        return 0.0 if abs(float(d.mean())) < margin else 1.0
    lower = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, margin, alternative="less").pvalue
    return float(max(lower, upper))


def t_test_paired(d: np.ndarray) -> float:
    """Two-sided p-value of H0: μ_d = 0 (NaN for n < 2; 0 or 1 for a zero SD)."""
    d = _diffs(d)
    if d.size < 2:
        return math.nan
    if float(d.std(ddof=1)) == 0.0:
        return 1.0 if float(d.mean()) == 0.0 else 0.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimal detectable paired difference: (t_{1−α/2, n−1} + t_{power, n−1})·s_d/√n
    (inf for n < 2)."""
    if n < 2 or not math.isfinite(sd):
        return math.inf
    return float(stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd \
        / math.sqrt(n)


def seeds_for_equivalence(sd: float, margin: float, alpha: float = ALPHA,
                          power: float = POWER, limit: int = 10_000) -> int | None:
    """Smallest n with (t_{1−α, n−1} + t_{1−β/2, n−1})·s_d/√n ≤ δ (TOST at a true difference
    of 0); None if s_d is not finite or more than ``limit`` seeds would be needed."""
    if not math.isfinite(sd):
        return None
    if sd == 0:
        return 2
    beta = 1 - power
    for n in range(2, limit + 1):
        if (stats.t.ppf(1 - alpha, n - 1) + stats.t.ppf(1 - beta / 2, n - 1)) * sd \
                / math.sqrt(n) <= margin:
            return n
    return None


def bootstrap_interval(d: np.ndarray, level: float = 1 - 2 * ALPHA, seed: int = 0,
                       n_resamples: int = 9999) -> tuple[float, float] | None:
    """BCa bootstrap interval of the mean difference (percentile if BCa is undefined, e.g. for
    ties); None for fewer than :data:`BOOTSTRAP_MIN_SEEDS` pairs. Deterministic per ``seed``."""
    d = _diffs(d)
    if d.size < BOOTSTRAP_MIN_SEEDS:
        return None
    if float(d.std(ddof=1)) == 0.0:
        return float(d.mean()), float(d.mean())
    import warnings

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap((d,), np.mean, confidence_level=level, method=method,
                                  n_resamples=n_resamples, rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return lo, hi
    return None


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of rank a (r = 1 in the headline) against rank b.

    Attributes:
        n_pairs: seeds both ranks ran.
        n: pairs tested (at least one of the two ranks moved off W0).
        mean_a, mean_b: the metric's mean over the tested pairs (over all pairs when none
            trained).
        diff: d̄ = mean of x_a − x_b over the tested pairs.
        sd: s_d (ddof = 1; NaN for n < 2).
        ci90: the TOST interval d̄ ± t_{0.95, n−1}·SE; ci95: the two-sided 95% interval.
        p_tost, p_diff: TOST and two-sided t-test p-values.
        mde: minimal detectable difference at 80% power, α = 0.05.
        seeds_needed: seeds for TOST at δ with 80% power if the true difference were 0.
        boot90: bootstrap interval (n ≥ 5), or None.
        margin: δ.
        verdict: one of :data:`VERDICTS`.
    """

    n_pairs: int
    n: int
    mean_a: float
    mean_b: float
    diff: float
    sd: float
    ci90: tuple[float, float]
    ci95: tuple[float, float]
    p_tost: float
    p_diff: float
    mde: float
    seeds_needed: int | None
    boot90: tuple[float, float] | None
    margin: float
    verdict: str

    @property
    def untrained_pairs(self) -> int:
        """Seeds on which neither rank moved off W0 (left out of the test)."""
        return self.n_pairs - self.n

    @property
    def bootstrap_agrees(self) -> bool | None:
        """Whether the bootstrap interval gives the same equivalence call (None without one)."""
        if self.boot90 is None or self.verdict == DID_NOT_TRAIN:
            return None
        inside = -self.margin < self.boot90[0] and self.boot90[1] < self.margin
        return inside == (self.verdict == EQUIVALENT)


def compare(a: np.ndarray, b: np.ndarray, margin: float = DEFAULT_MARGIN,
            trained: np.ndarray | None = None, alpha: float = ALPHA,
            power: float = POWER) -> Comparison:
    """Paired comparison of ``a`` against ``b`` (equal-length arrays over the same seeds).

    ``trained[i]`` says whether at least one of the two ranks moved off W0 on seed i (default:
    all); the other pairs are left out of the test (see module doc). The verdict uses α for both
    TOST (1 − 2α interval) and the two-sided difference test (1 − α interval).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise LorankError(f"paired samples must be 1-d of equal length, got {a.shape}, {b.shape}")
    margin = check_margin(margin)
    mask = np.ones(a.size, bool) if trained is None else np.asarray(trained, bool)
    n_pairs, n = int(a.size), int(mask.sum())
    nan2 = (math.nan, math.nan)
    if n == 0:
        return Comparison(n_pairs, 0, float(a.mean()) if a.size else math.nan,
                          float(b.mean()) if b.size else math.nan, math.nan, math.nan, nan2,
                          nan2, math.nan, math.nan, math.inf, None, None, margin, DID_NOT_TRAIN)
    d = a[mask] - b[mask]
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    ci90 = t_interval(d, 1 - 2 * alpha)
    ci95 = t_interval(d, 1 - alpha)
    p_tost, p_diff = tost_paired(d, margin), t_test_paired(d)
    if n >= 2 and p_tost < alpha:
        verdict = EQUIVALENT
    elif n >= 2 and p_diff < alpha:
        verdict = BETTER if d.mean() > 0 else WORSE
    else:
        verdict = INCONCLUSIVE
    return Comparison(n_pairs, n, float(a[mask].mean()), float(b[mask].mean()), float(d.mean()),
                      sd, ci90, ci95, p_tost, p_diff, mde(sd, n, alpha, power),
                      seeds_for_equivalence(sd, margin, alpha, power) if n > 1 else None,
                      bootstrap_interval(d, 1 - 2 * alpha), margin, verdict)


def tied_with_best(best: np.ndarray, other: np.ndarray, margin: float,
                   trained: np.ndarray | None = None, alpha: float = ALPHA) -> bool:
    """Tie rule for the best rank: ``other`` is tied with ``best`` (paired over seeds) unless
    the paired difference best − other is significant (two-sided paired t-test at α over the
    seeds where at least one of the two moved off W0) **and** its mean is at least the margin δ.
    With fewer than two such seeds nothing is significant: tied."""
    best, other = np.asarray(best, dtype=float), np.asarray(other, dtype=float)
    mask = np.ones(best.size, bool) if trained is None else np.asarray(trained, bool)
    d = best[mask] - other[mask]
    if d.size < 2:
        return True
    return not (t_test_paired(d) < alpha and float(d.mean()) >= margin)
