"""Sweeps at scale: declarative specs, a method registry, a SQLite results store, runners.

* :mod:`~lorank.experiments.config` — :class:`RunConfig` (frozen), stable ``run_id``,
  :class:`FeaturesKey`.
* :mod:`~lorank.experiments.spec` — YAML/TOML sweep specs → runs (:func:`load_spec`).
* :mod:`~lorank.experiments.registry` — :func:`register_method`, :class:`RunContext`.
* :mod:`~lorank.experiments.store` — :class:`ResultStore`, :class:`RunRecord`, export.
* :mod:`~lorank.experiments.runners` — :class:`LocalRunner`, :class:`RayRunner`.
* :mod:`~lorank.experiments.methods.prescribe` — the built-in ``prescribe`` method.

See docs/experiments.md.
"""

from lorank.experiments.config import FeaturesKey, Options, RunConfig, canonical_json
from lorank.experiments.registry import (
    METHOD_PROVIDERS,
    FeatureCache,
    Method,
    RunContext,
    RunResult,
    available_methods,
    get_method,
    register_method,
)
from lorank.experiments.runners import (
    LocalRunner,
    RayRunner,
    Runner,
    RunOutcome,
    SweepInterrupted,
    SweepSummary,
    execute_batch,
    make_runner,
)
from lorank.experiments.spec import SweepSpec, load_spec, parse_spec
from lorank.experiments.store import ResultStore, RunRecord, export_records, records_frame
from lorank.experiments.sweep import run_sweep

__all__ = [
    "METHOD_PROVIDERS",
    "FeatureCache",
    "FeaturesKey",
    "LocalRunner",
    "Method",
    "Options",
    "RayRunner",
    "ResultStore",
    "RunConfig",
    "RunContext",
    "RunOutcome",
    "RunRecord",
    "RunResult",
    "Runner",
    "SweepInterrupted",
    "SweepSpec",
    "SweepSummary",
    "available_methods",
    "canonical_json",
    "execute_batch",
    "export_records",
    "get_method",
    "load_spec",
    "make_runner",
    "parse_spec",
    "records_frame",
    "register_method",
    "run_sweep",
]
