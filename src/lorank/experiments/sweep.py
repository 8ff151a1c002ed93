"""Run a sweep spec end to end: load, pick a runner, execute into the store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lorank.errors import LorankError
from lorank.experiments.runners import SweepSummary, make_runner, validate_configs
from lorank.experiments.spec import SweepSpec, load_spec
from lorank.experiments.store import ResultStore


def resolve_data_dir(flag: str | Path | None, spec: SweepSpec) -> Path | None:
    """Data root: the flag, else the spec's ``data_dir``, else ``$LORANK_DATA_DIR``, else None.

    A folder that was given but does not exist is a LorankError.
    """
    value = flag or spec.data_dir or os.environ.get("LORANK_DATA_DIR") or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise LorankError(f"data directory not found: {path}")
    return path


def run_sweep(spec: SweepSpec | str | Path, *, backend: str = "local", workers: int = 1,
              store: str | Path | None = None, data_dir: str | Path | None = None,
              address: str | None = None, retry_failed: bool = False, progress: bool = True,
              device: str = "cpu", **runner_kwargs: Any) -> SweepSummary:
    """Execute a spec (object or file path) and return the :class:`SweepSummary`.

    ``store`` overrides the spec's store; the feature cache is the spec's ``cache_dir`` or
    ``<store>.features/`` beside the store. Every config is validated (and the data folder
    checked) before the store is opened, so bad input creates no store file. Raises
    :class:`~lorank.experiments.runners.SweepInterrupted` on Ctrl-C.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    store_path = Path(store) if store else spec.store
    cache_dir = spec.cache_dir or store_path.with_name(store_path.name + ".features")
    validate_configs(spec.runs)
    runner = make_runner(backend, workers=workers, address=address, cache_dir=cache_dir,
                         data_dir=resolve_data_dir(data_dir, spec), device=device,
                         progress=progress, **runner_kwargs)
    with ResultStore(store_path) as results:
        return runner.run(spec.runs, results, retry_failed=retry_failed, label=spec.name)
