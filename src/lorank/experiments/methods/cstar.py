"""The ``cstar`` sweep method: one stored run = one C* estimate (:func:`estimate_c_star`).

The run's ``rank`` is r, its ``seed`` seeds the instances and its ``steps`` is the solver's
budget T; everything else comes from ``options``: ``m``, ``n`` (default 24), ``solver``
(gd|lm), ``tol``, ``loss`` (mse|ce), ``count`` (manifold|sard), ``instances`` (default 100),
``ratios``, ``step_rule``, ``n_boot``, ``backend`` (auto|torch|numba). The task/model fields of
the config are labels only (Gaussian features need neither).

Stored metrics: ``c50`` with ``ci_low``/``ci_high``, ``slope``, ``bracketed``, ``d``, ``wall_s``,
``failed_instances`` (instances whose solver failed numerically, counted as unsuccessful);
curves: ``ratios``, ``success`` (rates), ``KN``, ``counts`` — what :mod:`lorank.report` draws.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lorank.experiments.config import RunConfig
from lorank.experiments.registry import RunContext, register_method

if TYPE_CHECKING:
    from lorank.capacity.estimator import CStarConfig

_OPTIONS = ("m", "n", "solver", "tol", "loss", "count", "instances", "ratios",
            "step_rule", "n_boot", "backend")


def estimator_config(config: RunConfig) -> CStarConfig:
    """The :class:`~lorank.capacity.estimator.CStarConfig` of a stored run (LorankError if
    bad)."""
    from lorank.capacity.estimator import CStarConfig

    options = config.known_options(_OPTIONS)
    kwargs = {k: options[k] for k in _OPTIONS if k in options}
    if "ratios" in kwargs:
        kwargs["ratios"] = tuple(float(x) for x in kwargs["ratios"])
    return CStarConfig(r=config.rank, seed=config.seed, steps=config.steps, **kwargs)


def _validate(config: RunConfig) -> None:
    from lorank.capacity.solvers import resolve_backend

    c = estimator_config(config)
    resolve_backend(c.backend, c.solver, c.step_rule)


@register_method("cstar", validate=_validate)
def run(config: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """Estimate C50 with a bootstrap CI and store the success curve."""
    from lorank.capacity.estimator import estimate_c_star

    res = estimate_c_star(estimator_config(config))
    curve = res.curve
    metrics = {"c50": res.c50, "ci_low": res.ci_low, "ci_high": res.ci_high,
               "slope": res.slope, "bracketed": res.bracketed, "d": res.d, "m": res.m,
               "n": res.n, "solver": res.solver, "steps": res.steps, "tol": res.tol,
               "loss": res.loss, "count": res.count, "instances": res.instances,
               "wall_s": res.wall_s, "backend": res.backend, "failed_instances": res.failed}
    curves = {"ratios": list(curve.ratios), "success": list(curve.rates),
              "KN": list(curve.KN), "counts": list(curve.counts)}
    return {"metrics": metrics, "curves": curves}
