"""``cstar(...)``: :func:`estimate_c_star` of ``CStarConfig(*args, **kw)``, run-time arguments
(features, progress, workers) apart — the tests' shorthand for one measurement."""

from __future__ import annotations

from lorank.capacity.estimator import CStarConfig, CStarResult, estimate_c_star


def cstar(*args, features=None, features_name=None, progress=None, workers=1,
          **kw) -> CStarResult:
    return estimate_c_star(CStarConfig(*args, **kw), features=features,
                           features_name=features_name, progress=progress, workers=workers)
