"""The method registry: what a run *does* is looked up by ``RunConfig.method``.

An engine registers a method with one decorator in its own module::

    from lorank.experiments import register_method

    def build_features(key: FeaturesKey, ctx: RunContext) -> Jacobians:   # optional
        ...                                                               # once per key

    @register_method("linearized", prepare=build_features)
    def run_linearized(config: RunConfig, ctx: RunContext) -> dict:
        feats = ctx.features            # the value build_features returned for config's key
        ...
        return {"metrics": {"test_acc": 0.73}, "curves": {"train_loss": [...]}}

and adds its module to :data:`METHOD_PROVIDERS` so ``get_method("linearized")`` imports it on
first use (in the coordinating process and in every worker). ``prepare`` runs once per
:class:`~lorank.experiments.config.FeaturesKey` and process: the runners execute the runs of one
key back to back, so features are built once per group.

A method that trains several runs at once registers with ``grouped=True``; its function then
takes a *batch* — the runs of one features group that differ only in their rank
(:attr:`RunConfig.batch_key`), formed by the runners — and returns each run's result by run id
(an exception in place of a result fails that run alone)::

    @register_method("linearized", grouped=True)
    def run_group(runs: Sequence[RunConfig], ctx: RunContext) -> dict[str, dict]:
        ...                               # every rank of the batch in one vectorised call
        return {run.run_id: {"metrics": ..., "curves": ...} for run in runs}
"""

from __future__ import annotations

import importlib
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorank.errors import LorankError
from lorank.experiments.config import FeaturesKey, RunConfig

#: method name → module that registers it when imported (engines add their line here).
METHOD_PROVIDERS: dict[str, str] = {
    "prescribe": "lorank.experiments.methods.prescribe",
    "linearized": "lorank.experiments.methods.linearized",
    "lora": "lorank.experiments.methods.lora",
    "cstar": "lorank.experiments.methods.cstar",
    "planted": "lorank.experiments.methods.controls",
    "capacity": "lorank.experiments.methods.controls",
}

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

RunFn = Callable[[RunConfig, "RunContext"], Mapping[str, Any]]
#: a grouped method: a batch of runs → run id → result mapping (or the exception that failed it)
GroupFn = Callable[[Sequence[RunConfig], "RunContext"], Mapping[str, Any]]
PrepareFn = Callable[[FeaturesKey, "RunContext"], Any]
ValidateFn = Callable[[RunConfig], None]


@dataclass(frozen=True)
class Method:
    """A registered method: its run function, optional per-features-key ``prepare`` and a
    ``validate`` hook that checks a config before the sweep starts (raise LorankError).
    ``grouped``: ``run`` is a :data:`GroupFn` taking a batch of runs (module doc)."""

    name: str
    run: RunFn | GroupFn
    prepare: PrepareFn | None = None
    validate: ValidateFn | None = None
    grouped: bool = False

    @property
    def module(self) -> str:
        """The module that defines the run function (imported by workers)."""
        return self.run.__module__


_REGISTRY: dict[str, Method] = {}


def register_method(
    name: str, *, prepare: PrepareFn | None = None, validate: ValidateFn | None = None,
    grouped: bool = False,
) -> Callable[[RunFn], RunFn]:
    """Decorator registering ``fn(config, ctx) -> {"metrics": {...}, "curves": {...}}``, or
    with ``grouped=True`` ``fn(runs, ctx) -> {run_id: {"metrics": ..., "curves": ...}}`` for a
    batch of runs that differ only in their rank (module doc).

    Re-registering a name from the same module (a re-import) replaces it; from another module
    it is an error, so two engines cannot silently shadow each other.
    """
    if not _NAME.match(name):
        raise LorankError(f"method name must match [a-z][a-z0-9_]*, got {name!r}")

    def decorator(fn: RunFn) -> RunFn:
        old = _REGISTRY.get(name)
        if old is not None and old.module != fn.__module__:
            raise LorankError(f"method {name!r} is already registered by {old.module}")
        _REGISTRY[name] = Method(name, fn, prepare, validate, grouped)
        return fn

    return decorator


def get_method(name: str) -> Method:
    """The registered :class:`Method` ``name``, importing its provider module if needed."""
    if name not in _REGISTRY and name in METHOD_PROVIDERS:
        module = METHOD_PROVIDERS[name]
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise
            raise LorankError(
                f"method {name!r} is not available: its engine module {module} is not "
                "installed yet") from None
    if name not in _REGISTRY:
        known = ", ".join(sorted(set(available_methods()) | set(METHOD_PROVIDERS)))
        raise LorankError(f"unknown method {name!r}; available methods: {known}")
    return _REGISTRY[name]


def available_methods() -> list[str]:
    """Names registered so far (providers not yet imported are not listed)."""
    return sorted(_REGISTRY)


class FeatureCache:
    """In-process LRU of prepared features, keyed by (method, features-key digest).

    ``maxsize`` defaults to 1: runs are executed grouped by key, so one entry is enough and
    large Jacobians (hundreds of MiB) are released as soon as the next group starts.
    """

    def __init__(self, maxsize: int = 1) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self.builds = 0

    def get_or_build(self, method: str, key: FeaturesKey, build: Callable[[], Any]) -> Any:
        """The cached value for (method, key), else ``build()`` stored under it."""
        slot = (method, key.digest)
        if slot in self._items:
            self._items.move_to_end(slot)
            return self._items[slot]
        value = build()
        self.builds += 1
        self._items[slot] = value
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)
        return value


def batch_ranks(runs: Sequence[RunConfig]) -> tuple[int, ...]:
    """The distinct ranks of a grouped method's batch, ascending (trained together)."""
    return tuple(sorted({run.rank for run in runs}))


def per_run(runs: Sequence[RunConfig], cell: Callable[[RunConfig], Any]) -> dict[str, Any]:
    """``{run_id: cell(run)}`` for a grouped method's per-run part, an exception in place of a
    run's result when ``cell`` raised for it — so one failing run fails alone, not its batch.
    KeyboardInterrupt and SystemExit propagate."""
    out: dict[str, Any] = {}
    for run in runs:
        try:
            out[run.run_id] = cell(run)
        except Exception as exc:
            out[run.run_id] = exc
    return out


def _no_progress(**info: Any) -> None:
    return None


@dataclass
class RunContext:
    """What a method gets besides its config.

    Attributes:
        cache_dir: folder for on-disk features shared across processes; a method keeps the
            files of one key under ``cache_dir / key.digest`` (see :meth:`features_dir`).
        data_dir: the few-shot data root (LM-BFF layout), or None.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:0"`` ...
        progress: callback ``progress(step=..., total=..., **metrics)`` for in-run progress.
        cache: the in-process :class:`FeatureCache`.
        features: set by the runner before each run: what the method's ``prepare`` returned
            for the run's features key (None when the method has no ``prepare``).
        group: the runs of the current features group that this process executes back to
            back (set by the runners). Methods that train several runs at once register as
            grouped instead of reading it (module doc).
    """

    cache_dir: Path | None = None
    data_dir: Path | None = None
    device: str = "cpu"
    progress: Callable[..., None] = _no_progress
    cache: FeatureCache = field(default_factory=FeatureCache)
    features: Any = None
    group: tuple[RunConfig, ...] = ()

    def features_dir(self, key: FeaturesKey) -> Path:
        """``cache_dir / key.digest`` (created); LorankError if the context has no cache_dir."""
        if self.cache_dir is None:
            raise LorankError("this run needs a feature cache folder; pass cache_dir")
        path = Path(self.cache_dir) / key.digest
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class RunResult:
    """A run's output: scalar ``metrics`` (JSON values) and ``curves`` (name → list)."""

    metrics: dict[str, Any]
    curves: dict[str, Any]


def _check_json(value: Any, where: str) -> Any:
    """Plain JSON types (numpy scalars/arrays converted); NaN/inf kept (a diverged run)."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _check_json(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_check_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else float(value)
    raise TypeError(f"{where}: run results must be JSON values, got {type(value).__name__}")


def normalize_result(raw: Mapping[str, Any] | RunResult) -> RunResult:
    """Turn what a method returned into a :class:`RunResult` (TypeError if malformed)."""
    if isinstance(raw, RunResult):
        raw = {"metrics": raw.metrics, "curves": raw.curves}
    if not isinstance(raw, Mapping):
        raise TypeError(f"a method must return a mapping, got {type(raw).__name__}")
    extra = set(raw) - {"metrics", "curves"}
    if extra:
        raise TypeError(f"unexpected keys in run result: {sorted(extra)}; "
                        "use 'metrics' and 'curves'")
    return RunResult(_check_json(dict(raw.get("metrics") or {}), "metrics"),
                     _check_json(dict(raw.get("curves") or {}), "curves"))
