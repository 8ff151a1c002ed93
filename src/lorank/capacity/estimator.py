r"""The C* estimator: the 50 % success transition of the ratio d/(KN) (science notes §3).

"Rethinking the Rank Threshold for LoRA Fine-Tuning" (arXiv 2605.03724) states that gradient
methods fit KN linearized constraints with a rank-r LoRA once :math:`d = r(m+n) - r^2 > C^\star KN`
and reports :math:`C^\star \approx 1.35` for Gaussian features. C* is an empirical constant: this
module measures it for an explicit solver, step budget T, tolerance and loss.

Procedure (:func:`estimate_c_star` of a :class:`CStarConfig`):

1. choose KN values around the transition: :math:`KN_j = \mathrm{round}(d / \rho_j)` for a grid of
   ratios :math:`\rho_j` (default 0.8 … 2.0), d the manifold dimension
   (:func:`lorank.theory.manifold_dim`);
2. for each KN, solve ``instances`` random instances in one batch
   (:mod:`lorank.capacity.solvers`) and count successes (relative loss < tol within T steps);
   an instance that diverged or whose solver failed numerically is an unsuccessful one (the
   failures are counted in ``curve.failed`` and listed with their reasons in ``failures``);
3. fit :math:`P(\text{success}\mid x) = \sigma(s\,(x - C_{50}))` by maximum likelihood in the
   reported ratio :math:`x = \mathrm{count}/KN`, where count is the manifold dimension d
   (``count="manifold"``) or the symmetric Sard count r(r+1)/2 (``count="sard"``, Jang et al.
   2024) — the same experiment read in the two units;
4. a nonparametric bootstrap CI: resample the instances of every grid point with replacement
   (a binomial draw with the observed rate), refit, take percentiles.

Deterministic per ``seed``: instance i at KN uses the random stream (seed, KN, i).

Performance: ``workers > 1`` solves the grid points in that many processes (spawned, one torch
thread each); every grid point is independent and seeded by (seed, KN, i), so the success curve
is identical to a one-process run. Two workers halve the wall time on two free cores.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.special import expit

from lorank.capacity.losses import check_loss
from lorank.capacity.problems import check_features, feature_batch, gaussian_batch
from lorank.capacity.solvers import (
    DEFAULT_CHUNK,
    DEFAULT_STEPS,
    check_solver,
    check_tol,
    n_chunks,
    resolve_backend,
    solve,
)
from lorank.errors import LorankError, check_choice, check_number, check_positive_int
from lorank.provenance import provenance
from lorank.theory.thresholds import check_problem, manifold_dim

COUNTS: tuple[str, ...] = ("manifold", "sard")
#: default grid of d/(KN) ratios swept by the estimator.
DEFAULT_RATIOS: tuple[float, ...] = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.7, 2.0)
#: default tolerance on L/L0 per loss (CE only reaches 0 asymptotically).
DEFAULT_TOL: dict[str, float] = {"mse": 1e-8, "ce": 1e-3}


def count_dim(r: int, m: int, n: int, count: str = "manifold") -> int:
    """The parameter count the ratio is read in: r(m+n) − r² (manifold) or r(r+1)/2 (Sard)."""
    if check_choice("count", count, COUNTS) == "manifold":
        return manifold_dim(r, m, n)
    r, m, n = check_problem(r, m, n)
    return r * (r + 1) // 2


@dataclass(frozen=True)
class SuccessCurve:
    """Success counts per grid point, ratio = count/KN (increasing); ``failed``: instances per
    point whose solver failed numerically (:attr:`lorank.capacity.solvers.SolveResult.failed`),
    counted among the unsuccessful ones (empty: none recorded)."""

    ratios: tuple[float, ...]
    KN: tuple[int, ...]
    successes: tuple[int, ...]
    counts: tuple[int, ...]
    failed: tuple[int, ...] = ()

    @property
    def rates(self) -> tuple[float, ...]:
        """Success rate per grid point."""
        return tuple(k / c for k, c in zip(self.successes, self.counts, strict=True))


@dataclass(frozen=True)
class CStarResult:
    """The measured 50 % transition C50 (in units of ``count``/KN) with its bootstrap CI."""

    r: int
    m: int
    n: int
    solver: str
    steps: int
    tol: float
    loss: str
    count: str
    d: int
    instances: int
    seed: int
    step_rule: str
    features: str | None
    c50: float
    ci_low: float
    ci_high: float
    ci_level: float
    slope: float
    bracketed: bool
    curve: SuccessCurve
    wall_s: float
    backend: str = "torch"
    failures: tuple[str, ...] = ()

    @property
    def failed(self) -> int:
        """Instances whose solver failed numerically (counted as unsuccessful); ``failures``
        says why, one line each."""
        return int(sum(self.curve.failed))

    def to_dict(self) -> dict:
        """A JSON-ready dict (the curve's rates and the provenance — versions, git commit, host,
        time — included; NaN, e.g. an unbracketed C50, → None)."""
        out = asdict(self)
        out["curve"]["rates"] = list(self.curve.rates)
        out["failed"] = self.failed
        out["provenance"] = provenance()
        for key, value in out.items():
            if isinstance(value, float) and math.isnan(value):
                out[key] = None
        return out


def sweep_KN(d: int, ratios: Sequence[float]) -> list[int]:
    """Distinct KN = round(d/ρ) ≥ 1 for the grid ρ, in decreasing KN (increasing ratio) order."""
    if len(ratios) < 2:
        raise LorankError("the ratio grid needs at least 2 points")
    for x in ratios:
        check_number("ratios", x, low=0)
    KNs = sorted({max(1, round(d / x)) for x in ratios}, reverse=True)
    if len(KNs) < 2:
        raise LorankError(f"the ratio grid gives fewer than 2 distinct KN values for d={d}")
    return KNs


#: ridge penalty λ/2·b² on the slope (standardised x): keeps the fit finite on perfectly
#: separated curves (then C50 lands in the gap between the last failure and the first success).
RIDGE = 1e-3


def _objective(a, b, x, k, c):
    u = a[:, None] + b[:, None] * x[None, :]
    return (np.sum(c * np.logaddexp(0, u) - k * u, axis=1) + 0.5 * RIDGE * b * b)


def fit_logistic(x: np.ndarray, k: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched ridge-logistic MLE of P(success) = σ(a + b·x) by damped Newton steps.

    Args:
        x: standardised grid, shape (J,); k: successes, shape (R, J); c: trials, shape (J,).

    Returns:
        (a, b), each of shape (R,). The objective Σ_j [c_j log(1+e^{u_j}) − k_j u_j] + λb²/2 is
        strictly convex, so Newton with step halving converges from (0, 0).
    """
    R = k.shape[0]
    a, b = np.zeros(R), np.zeros(R)
    f = _objective(a, b, x, k, c)
    for _ in range(100):
        p = expit(a[:, None] + b[:, None] * x[None, :])
        r = c * p - k
        ga, gb = r.sum(1), (r * x).sum(1) + RIDGE * b
        w = c * p * (1 - p)
        haa, hab, hbb = w.sum(1) + 1e-12, (w * x).sum(1), (w * x * x).sum(1) + RIDGE
        det = haa * hbb - hab * hab
        da, db = -(hbb * ga - hab * gb) / det, -(haa * gb - hab * ga) / det
        step = np.ones(R)
        for _ in range(30):
            fn = _objective(a + step * da, b + step * db, x, k, c)
            bad = ~(fn <= f + 1e-12)
            if not bad.any():
                break
            step = np.where(bad, step / 2, step)
        a, b, f = a + step * da, b + step * db, np.minimum(fn, f)
        if np.max(np.abs(step * da) + np.abs(step * db)) < 1e-10:
            break
    return a, b


def _fit_many(ratios, successes, counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """C50, slope and bracketed flag for R success vectors (R, J) on one grid."""
    x = np.asarray(ratios, float)
    k = np.atleast_2d(np.asarray(successes, float))
    c = np.asarray(counts, float)
    mean, std = x.mean(), x.std()
    if not std > 0:
        raise LorankError("the ratio grid needs at least 2 distinct ratios")
    rate = k / c
    bracketed = np.any(rate < 0.5, axis=1) & np.any(rate > 0.5, axis=1)
    bracketed |= np.any(rate == 0.5, axis=1)
    a, b = fit_logistic((x - mean) / std, k, c)
    with np.errstate(divide="ignore", invalid="ignore"):
        c50 = np.where(bracketed & (b > 0), mean - std * a / b, np.nan)
    return c50, np.where(bracketed, b / std, np.nan), bracketed & np.isfinite(c50)


def fit_transition(
    ratios: Sequence[float], successes: Sequence[int], counts: Sequence[int]
) -> tuple[float, float, bool]:
    """Maximum-likelihood logistic fit P(success | x) = σ(s (x − C50)) of a success curve.

    Args:
        ratios: grid x_j (any positive unit), successes k_j, counts c_j.

    Returns:
        (C50, slope s, bracketed). ``bracketed`` is False when the rates never cross 1/2 on the
        grid (all above or all below) or the fitted slope is not positive; C50 is then NaN. A tiny
        ridge on the slope (:data:`RIDGE`) keeps perfectly separated curves finite.
    """
    c50, slope, ok = _fit_many(ratios, successes, counts)
    return float(c50[0]), float(slope[0]), bool(ok[0])


def bootstrap_ci(
    curve: SuccessCurve, n_boot: int = 500, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of C50: resample the instances of every grid point.

    Resampling c_j instances with replacement from k_j successes is a Binomial(c_j, k_j/c_j)
    draw. All replicates are fitted at once (:func:`fit_logistic`); replicates whose rates do
    not cross 1/2 are dropped (NaN CI if more than half are).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
    c = np.asarray(curve.counts)
    p = np.asarray(curve.successes) / c
    draws = rng.binomial(c, p, size=(n_boot, len(c)))
    c50, _, ok = _fit_many(curve.ratios, draws, c)
    vals = c50[ok]
    if len(vals) * 2 < n_boot:
        return math.nan, math.nan
    a = (1 - level) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))


@dataclass(frozen=True)
class CStarConfig:
    """One C* measurement, validated and resolved on construction (defaults filled in).

    Attributes:
        r, m, n: rank and matrix shape (1 ≤ r ≤ min(m, n)).
        solver: ``"gd"`` or ``"lm"`` (:mod:`lorank.capacity.solvers`).
        steps: budget T (None → 1000 for GD, 200 for LM).
        tol: success threshold on L/L0 (None → 1e-8 for mse, 1e-3 for ce).
        loss: ``"mse"`` (Gaussian targets) or ``"ce"`` (±1 targets, logistic loss).
        count: ``"manifold"`` (d = r(m+n) − r²) or ``"sard"`` (r(r+1)/2) units for the ratio.
        ratios: grid of d/(KN) ratios (manifold units) that fixes the swept KN values.
        instances: instances per grid point.
        seed: sweep seed (instance i at KN uses the stream (seed, KN, i)).
        step_rule: GD step rule (``"hessian"`` or ``"bound"``; recorded as ``"lm"`` for LM).
        n_boot, ci_level: bootstrap replicates and CI level.
        chunk: instances solved together (:func:`lorank.capacity.solvers.solve`).
        backend: ``"auto"``, ``"torch"`` or ``"numba"``
            (:func:`lorank.capacity.solvers.resolve_backend`; resolved when the estimate runs).
    """

    r: int = 1
    m: int = 24
    n: int = 24
    solver: str = "gd"
    steps: int | None = None
    tol: float | None = None
    loss: str = "mse"
    count: str = "manifold"
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    instances: int = 100
    seed: int = 0
    step_rule: str = "hessian"
    n_boot: int = 500
    ci_level: float = 0.95
    chunk: int = DEFAULT_CHUNK
    backend: str = "auto"

    def __post_init__(self) -> None:
        r, m, n = check_problem(self.r, self.m, self.n)
        solver = check_solver(self.solver)
        loss = check_loss(self.loss)
        steps = check_positive_int("steps", DEFAULT_STEPS[solver] if self.steps is None
                                   else self.steps)
        tol = check_tol(DEFAULT_TOL[loss] if self.tol is None else self.tol)
        if tol <= 0:
            raise LorankError(f"tol must be > 0, got {tol!r}")
        check_positive_int("instances", self.instances)
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise LorankError(f"seed must be an integer from 0 to 2**32-1, got {seed!r}")
        check_positive_int("n_boot", self.n_boot)
        if not 0 < self.ci_level < 1:
            raise LorankError(f"ci_level must be in (0, 1), got {self.ci_level!r}")
        count_dim(r, m, n, self.count)
        for name, value in (("r", r), ("m", m), ("n", n), ("solver", solver), ("loss", loss),
                            ("steps", steps), ("tol", tol),
                            ("ratios", tuple(float(x) for x in self.ratios))):
            object.__setattr__(self, name, value)

    @property
    def recorded_step_rule(self) -> str:
        """The step rule as results record it (LM has none of GD's rules: ``"lm"``)."""
        return self.step_rule if self.solver == "gd" else "lm"

    def progress_total(self) -> int:
        """Number of progress ticks :func:`estimate_c_star` emits (grid points × chunks)."""
        return (len(sweep_KN(manifold_dim(self.r, self.m, self.n), self.ratios))
                * n_chunks(self.instances, self.chunk))


def estimate_c_star(config: CStarConfig, *, features: np.ndarray | None = None,
                    features_name: str | None = None,
                    progress: Callable[[int], None] | None = None,
                    workers: int = 1) -> CStarResult:
    """Measure the 50 % success transition C50 of count/(KN) for one solver setting.

    Args:
        config: what is measured (problem, solver and budget, grid, bootstrap).
        features: optional feature pool (P, m, n) or (P, m·n); rows are sampled as G_i
            (None: Gaussian iid features).
        features_name: label recorded for the pool (e.g. its file name).
        progress: called with 1 per solved chunk; the total is
            :meth:`CStarConfig.progress_total` (with ``workers > 1`` the ticks of a grid point
            arrive when the point is done).
        workers: processes solving grid points in parallel (1: in this process). The result
            does not depend on it. The numba backend runs ``torch.get_num_threads()`` threads.

    Returns:
        A :class:`CStarResult` with C50, its CI and the success curve.
    """
    t0 = time.perf_counter()
    c = config
    d_count = count_dim(c.r, c.m, c.n, c.count)
    KNs = sweep_KN(manifold_dim(c.r, c.m, c.n), c.ratios)
    targets = "sign" if c.loss == "ce" else "gaussian"
    if features is not None:
        features = check_features(features, c.m, c.n)
        if features.shape[0] < KNs[0]:
            raise LorankError(f"features pool has P={features.shape[0]} rows but the sweep needs "
                              f"KN up to {KNs[0]}; use fewer constraints (larger ratios)")
    workers = check_positive_int("workers", workers)
    backend = resolve_backend(c.backend, c.solver,
                              c.step_rule if c.solver == "gd" else "hessian")
    kwargs = {"step_rule": c.step_rule, "backend": backend} if c.solver == "gd" else {}
    point = dict(r=c.r, m=c.m, n=c.n, instances=c.instances, seed=c.seed, targets=targets,
                 features=features, solver=c.solver, chunk=c.chunk, loss=c.loss, steps=c.steps,
                 tol=c.tol, kwargs=kwargs)
    if workers == 1 or len(KNs) == 1:
        points = [_solve_point(KN, progress=progress, **point) for KN in KNs]
    else:
        points = _solve_points_parallel(KNs, point, min(workers, len(KNs)), progress,
                                        n_chunks(c.instances, c.chunk))
    failures = tuple(f"KN={KN} instance {i}: {why}" for KN, p in zip(KNs, points, strict=True)
                     for i, why in sorted(p[1].items()))
    curve = SuccessCurve(tuple(d_count / KN for KN in KNs), tuple(KNs),
                         tuple(p[0] for p in points), tuple([c.instances] * len(KNs)),
                         tuple(len(p[1]) for p in points))
    c50, slope, bracketed = fit_transition(curve.ratios, curve.successes, curve.counts)
    lo, hi = (bootstrap_ci(curve, c.n_boot, c.ci_level, c.seed) if bracketed
              else (math.nan, math.nan))
    return CStarResult(
        r=c.r, m=c.m, n=c.n, solver=c.solver, steps=c.steps, tol=c.tol, loss=c.loss,
        count=c.count, d=d_count, instances=c.instances, seed=c.seed,
        step_rule=c.recorded_step_rule, features=features_name, c50=c50, ci_low=lo, ci_high=hi,
        ci_level=c.ci_level, slope=slope, bracketed=bracketed, curve=curve,
        wall_s=time.perf_counter() - t0, backend=backend, failures=failures)


def _solve_point(KN: int, *, r: int, m: int, n: int, instances: int, seed: int, targets: str,
                 features: np.ndarray | None, solver: str, chunk: int, loss: str, steps: int,
                 tol: float, kwargs: dict, progress: Callable[[int], None] | None = None,
                 threads: int | None = None) -> tuple[int, dict[int, str]]:
    """Successes among the ``instances`` instances of one grid point (KN constraints), and the
    instances whose solver failed numerically (index → reason)."""
    if threads is not None:
        torch.set_num_threads(threads)
    if features is None:
        batch = gaussian_batch(r, m, n, KN, instances, seed, targets)
    else:
        batch = feature_batch(features, r, KN, instances, seed, targets)
    res = solve(batch, solver, chunk=chunk, progress=progress, loss=loss, steps=steps, tol=tol,
                **kwargs)
    return int(res.success.sum()), dict(res.reasons)


def _solve_points_parallel(KNs: list[int], point: dict, workers: int,
                           progress: Callable[[int], None] | None, ticks: int
                           ) -> list[tuple[int, dict[int, str]]]:
    """:func:`_solve_point` for every KN in ``workers`` spawned processes (1 torch thread each);
    results in KN order. The largest KN (slowest, mostly failing) are submitted first."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_solve_point, KN, threads=1, **point) for KN in KNs]
        succ = []
        for fut in futures:
            succ.append(fut.result())
            if progress is not None:
                progress(ticks)
    return succ
