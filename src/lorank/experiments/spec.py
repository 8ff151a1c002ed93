"""Declarative sweep specs (YAML or TOML): validation with key paths, expansion into runs.

Shape of a spec (every key optional unless marked)::

    name: quick                    # required; [A-Za-z0-9_.-]+
    store: results/quick.sqlite    # default results/<name>.sqlite (relative to the cwd)
    data_dir: /path/to/data        # few-shot data root (else --data-dir / $LORANK_DATA_DIR)
    cache_dir: /path/to/cache      # on-disk feature cache (default <store>.features/)
    base: {model: minilm, k: 16, lrs: [0.01, 0.05], ...}    # fields common to every run
    grid: {task: [sst2, rte], method: [linearized, lora], rank: [1, 2], seed: [13, 42]}
    methods:                       # per-method overrides (fields) and grid restrictions (only)
      lora: {steps: 40, num_cpus: 2, only: {rank: [1, 12], task: [sst2]}}
    exclude: [{task: mnli, rank: [1, 2]}]     # drop grid points matching every given field
    include: [{method: lora, task: rte, rank: 4, seed: 13}]  # extra points (on top of base)
    # an include entry with a ``grid`` mapping expands to the product of its lists (a block of
    # runs with settings of their own, e.g. a positive control):
    #   - {method: linearized, task: sst2, k: 512, grid: {loss: [mse, ce], rank: [1, 2]}}
    report: {margin: 0.01}         # equivalence margin δ of the report (fraction of the metric)

A run on a user's own files gives ``data`` (a mapping of :class:`~lorank.data.DataSource`
fields: ``train`` — the pool or training file —, ``dev``, ``test``, ``columns``, ``text_a``,
``text_b``, ``label``, ``labels``, ``label_words``, ``metric``, ``data_format``,
``empty_text``, ``name``, ``task``) instead of ``task``; the run's task is ``data.name`` (the
file's stem by default). The files are read when the spec is (bad data fails before any
model), and their sha256 and label set are part of the run's identity and features key::

    base: {method: linearized, model: minilm,
           data: {train: reviews.csv, columns: [label, text],
                  label_words: {0: terrible, 1: great}}}

The runs are the product of the grid (keys in sorted order) with base < method overrides <
grid point < include entry precedence; a field value in ``exclude``/``only`` may be a value or
a list of values. Duplicates (same run id) are dropped, first occurrence kept.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import math
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from lorank.data.source import DataSource
from lorank.errors import LorankError, check_choice, check_number
from lorank.experiments.config import RunConfig

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_METHOD = re.compile(r"^[a-z][a-z0-9_]*$")
_EXP_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
REQUIRED = ("method", "task", "model", "rank", "seed")
TOP_KEYS = ("name", "description", "store", "data_dir", "cache_dir", "base", "grid", "methods",
            "include", "exclude", "report")
#: Default equivalence margin δ of the report: 1 point of the task's metric.
DEFAULT_MARGIN = 0.01


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, list | dict) else type(value).__name__


def _type_error(path: str, expected: str, value: Any) -> LorankError:
    return LorankError(f"{path}: expected {expected}, got {_show(value)}")


def _int(path: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(path, "int", value)
    if minimum is not None and value < minimum:
        raise LorankError(f"{path}: must be >= {minimum}, got {value}")
    return value


def _float(path: str, value: Any, positive: bool = False, minimum: float | None = None) -> float:
    if isinstance(value, str) and _EXP_FLOAT.match(value.strip()):
        value = float(value)  # PyYAML (YAML 1.1) reads 1e-3 as a string
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(path, "number", value)
    return check_number(f"{path}:", value, low=0.0 if positive else minimum, strict=positive)


def _str(path: str, value: Any, choices: tuple[str, ...] | None = None,
         pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _type_error(path, "non-empty string", value)
    if choices is not None:
        check_choice(f"{path}:", value, choices)
    if pattern is not None and not pattern.match(value):
        raise LorankError(f"{path}: invalid name {value!r} (allowed: {pattern.pattern})")
    return value


def _list(path: str, value: Any, item: Callable[[str, Any], Any]) -> tuple:
    if not isinstance(value, list) or not value:
        raise _type_error(path, "non-empty list", value)
    return tuple(item(f"{path}[{i}]", v) for i, v in enumerate(value))


def _layers(path: str, value: Any) -> str | tuple[int, ...]:
    if isinstance(value, str):
        return _str(path, value, ("all", "last"))
    if isinstance(value, list):
        return tuple(sorted(set(_list(path, value, _int))))
    raise _type_error(path, "'all', 'last' or a list of layer indices", value)


def _options(path: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _type_error(path, "mapping", value)
    for key in value:
        _str(f"{path}.{key}", key)
    return dict(value)


def _data(path: str, value: Any) -> DataSource:
    """A ``data:`` entry (a user's own files, :class:`~lorank.data.DataSource` fields), pinned:
    the label set read from the file when not declared and the files' sha256 recorded, so both
    are part of the run's identity (an edited file is a new run)."""
    try:
        return DataSource.from_dict(value, path).pin()
    except LorankError as exc:
        message = str(exc)
        if message.endswith("file not found"):
            message += " (data paths are relative to the current folder)"
        raise LorankError(message if message.startswith(path) else f"{path}: {message}") \
            from None


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda path, value: None if value is None else check(path, value)


#: RunConfig field → validator(path, value) returning the normalised value.
FIELD_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "method": lambda p, v: _str(p, v, pattern=_METHOD),
    "task": _str,
    "model": _str,
    "head": _str,
    "targets": lambda p, v: _list(p, v, _str),
    "layers": _layers,
    "k": lambda p, v: _int(p, v, 1),
    "seed": lambda p, v: _int(p, v, 0),
    "rank": lambda p, v: _int(p, v, 1),
    "loss": lambda p, v: _str(p, v, ("ce", "mse")),
    "lrs": lambda p, v: _list(p, v, lambda q, x: _float(q, x, positive=True)),
    "lr_unit": lambda p, v: _str(p, v, ("eta0", "abs")),
    "steps": lambda p, v: _int(p, v, 1),
    "eval_interval": lambda p, v: _int(p, v, 1),
    "dtype": lambda p, v: _str(p, v, ("float32", "float64")),
    "init_seed": lambda p, v: _int(p, v, 0),
    "max_length": lambda p, v: _int(p, v, 1),
    "test_cap": _optional(lambda p, v: _int(p, v, 1)),
    "options": _options,
    "num_cpus": lambda p, v: _float(p, v, minimum=0.0),
    "num_gpus": lambda p, v: _float(p, v, minimum=0.0),
    "data": _data,
}
FIELDS = tuple(FIELD_CHECKS)
assert set(FIELDS) == {f.name for f in fields(RunConfig)} - {"sweep"}


def _unknown(path: str, key: Any, allowed: Sequence[str]) -> LorankError:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = f"{path}.{key}" if path else str(key)
    return LorankError(f"{where}: unknown key{hint}; allowed: {', '.join(allowed)}")


def _mapping(path: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _type_error(path, "mapping", value)
    return value


def _items(path: str, value: Any, allowed: Sequence[str] = FIELDS
           ) -> Iterator[tuple[str, Any]]:
    """The (key, value) pairs of the mapping ``value`` in order; LorankError at the first key
    not in ``allowed`` (default: the RunConfig fields), with a did-you-mean hint."""
    for key, v in _mapping(path, value).items():
        if key not in allowed:
            raise _unknown(path, key, allowed)
        yield key, v


def _fields(path: str, value: Any, forbid: tuple[str, ...] = ()) -> dict[str, Any]:
    """Validate a mapping of RunConfig fields (base, method overrides, include entries)."""
    out = {}
    for key, v in _items(path, value):
        if key in forbid:
            raise LorankError(f"{path}.{key}: {key!r} is a grid field; restrict it with "
                              f"{path}.only.{key}")
        out[key] = FIELD_CHECKS[key](f"{path}.{key}", v)
    return out


def _is_multi(key: str, value: Any) -> bool:
    """Whether an ``only``/``exclude`` value lists several alternatives (list-valued fields
    take a list of lists; ``layers`` also a list of 'all'/'last')."""
    if not isinstance(value, list):
        return False
    if key not in ("targets", "lrs", "layers"):
        return True
    return bool(value) and all(isinstance(x, list) or (key == "layers" and isinstance(x, str))
                               for x in value)


def _choices(path: str, value: Any) -> dict[str, tuple]:
    """A mapping field → value or list of values (``only`` and ``exclude`` entries)."""
    return {key: _list(f"{path}.{key}", v, FIELD_CHECKS[key]) if _is_multi(key, v)
            else (FIELD_CHECKS[key](f"{path}.{key}", v),) for key, v in _items(path, value)}


def _grid(value: Any, path: str = "grid") -> dict[str, tuple]:
    return {key: _list(f"{path}.{key}", v, FIELD_CHECKS[key]) for key, v in _items(path, value)}


def _include(path: str, value: Any) -> list[dict[str, Any]]:
    """One include entry: its fields, expanded over the product of its own ``grid`` if any."""
    body = dict(_mapping(path, value))
    grid = _grid(body.pop("grid"), f"{path}.grid") if "grid" in body else {}
    fields_ = _fields(path, body)
    both = sorted(set(grid) & set(fields_))
    if both:
        raise LorankError(f"{path}.grid.{both[0]}: also fixed in the entry; give it once")
    keys = sorted(grid)
    return [{**fields_, **dict(zip(keys, combo, strict=True))}
            for combo in itertools.product(*(grid[k] for k in keys))]


def _matches(point: Mapping[str, Any], choices: Mapping[str, tuple]) -> bool:
    return all(point.get(key) in allowed for key, allowed in choices.items())


@dataclass(frozen=True)
class ReportSettings:
    """``report:`` — how ``lorank reproduce`` builds the report of this sweep.

    Attributes:
        margin: equivalence margin δ of the headline TOST and of the tie rule, as a fraction of
            the task's metric (0.01 = 1 point); in (0, 1).
    """

    margin: float = DEFAULT_MARGIN


REPORT_KEYS = ("margin",)


def check_margin(margin: float, what: str = "margin") -> float:
    """δ as a fraction of the metric: finite and in (0, 1); LorankError otherwise."""
    if isinstance(margin, bool) or not isinstance(margin, int | float) \
            or not math.isfinite(margin) or not 0 < margin < 1:
        raise LorankError(f"{what} must be in (0, 1) (a fraction of the metric: 0.01 = 1 point), "
                          f"got {margin!r}")
    return float(margin)


def _report(value: Any) -> ReportSettings:
    body = dict(_items("report", value, REPORT_KEYS))
    margin = _float("report.margin", body.get("margin", DEFAULT_MARGIN), positive=True)
    return ReportSettings(check_margin(margin, "report.margin:"))


@dataclass(frozen=True)
class MethodOverride:
    """``methods.<name>``: fixed field values and ``only`` restrictions of grid values."""

    values: dict[str, Any]
    only: dict[str, tuple]


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: its name, where results go and the expanded, de-duplicated runs."""

    name: str
    store: Path
    data_dir: Path | None
    cache_dir: Path | None
    runs: tuple[RunConfig, ...]
    description: str = ""
    source: Path | None = None
    report: ReportSettings = ReportSettings()


def _methods(value: Any, grid_keys: tuple[str, ...]) -> dict[str, MethodOverride]:
    out = {}
    for name, body in _mapping("methods", value).items():
        path = f"methods.{name}"
        _str(path, name, pattern=_METHOD)
        body = dict(_mapping(path, body))
        only = _choices(f"{path}.only", body.pop("only", {}))
        out[name] = MethodOverride(_fields(path, body, forbid=grid_keys), only)
    return out


def _resolve(sweep: str, point: dict[str, Any], path: str) -> RunConfig:
    data = point.get("data")
    if data is not None and point.setdefault("task", data.name) != data.name:
        raise LorankError(f"{path}: task {point['task']!r} differs from the name of its "
                          f"data ({data.name!r}); a run on your own data is named by "
                          "data.name (drop task, or set data.name)")
    missing = [key for key in REQUIRED if key not in point]
    if missing:
        raise LorankError(f"{path}: missing required field {missing[0]!r} (set it in base, "
                          "grid or the entry)")
    config = RunConfig(sweep=sweep, **point)
    if data is not None:
        _check_data(data, config.k if data.sampled else None, config.seed, config.test_cap,
                    path)
    return config


@functools.lru_cache(maxsize=64)
def _check_data(data: DataSource, k: int | None, seed: int, test_cap: int | None,
                path: str) -> None:
    """Load a run's own data once per (data, k, seed, test cap): every file and option is
    checked when the spec is read, before any model is loaded."""
    from lorank.data.source import load_source

    try:
        load_source(data, k=k, seed=seed, test_max=test_cap)
    except LorankError as exc:
        raise LorankError(f"{path}: data: {exc}") from None


def _expand(name: str, base: dict, grid: dict[str, tuple], methods: dict[str, MethodOverride],
            exclude: list[dict[str, tuple]], include: list[dict[str, Any]]) -> list[RunConfig]:
    keys = sorted(grid)
    runs: dict[str, RunConfig] = {}

    def merge(point: dict[str, Any]) -> tuple[MethodOverride | None, dict[str, Any]]:
        override = methods.get(point.get("method", base.get("method")))
        return override, {**base, **(override.values if override else {}), **point}

    for combo in itertools.product(*(grid[k] for k in keys)):
        override, merged = merge(dict(zip(keys, combo, strict=True)))
        if override is not None and not _matches(merged, override.only):
            continue
        if any(_matches(merged, ex) for ex in exclude):
            continue
        config = _resolve(name, merged, "grid")
        runs.setdefault(config.run_id, config)
    for i, entry in enumerate(include):
        config = _resolve(name, merge(entry)[1], f"include[{i}]")
        runs.setdefault(config.run_id, config)
    return list(runs.values())


def parse_spec(data: Any, source: Path | None = None) -> SweepSpec:
    """Validate a spec mapping and expand it into :class:`RunConfig` s (LorankError on error)."""
    data = dict(_items("", _mapping("spec", data), TOP_KEYS))
    if "name" not in data:
        raise LorankError("name: missing required key (the sweep's name)")
    name = _str("name", data["name"], pattern=_NAME)
    description = _str("description", data["description"]) if "description" in data else ""
    paths = {key: Path(_str(key, data[key])).expanduser() if data.get(key) is not None else None
             for key in ("store", "data_dir", "cache_dir")}
    base = _fields("base", data.get("base", {}))
    grid = _grid(data.get("grid", {}))
    methods = _methods(data.get("methods", {}), tuple(grid))
    exclude = [_choices(f"exclude[{i}]", e) for i, e in enumerate(_seq("exclude", data))]
    include = [point for i, e in enumerate(_seq("include", data))
               for point in _include(f"include[{i}]", e)]
    used = set(grid.get("method", ())) | {base.get("method")} | {e.get("method") for e in include}
    for method in methods:
        if method not in used:
            raise LorankError(f"methods.{method}: method not used by this sweep (its methods: "
                              f"{', '.join(sorted(m for m in used if m))})")
    runs = _expand(name, base, grid, methods, exclude, include)
    if not runs:
        raise LorankError("the sweep expands to no runs (check grid, only and exclude)")
    store = paths["store"] or Path("results") / f"{name}.sqlite"
    report = _report(data["report"]) if data.get("report") is not None else ReportSettings()
    return SweepSpec(name, store, paths["data_dir"], paths["cache_dir"], tuple(runs),
                     description, source, report)


def _seq(key: str, data: Mapping[str, Any]) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise _type_error(key, "list", value)
    return value


def load_spec(path: str | Path) -> SweepSpec:
    """Read a ``.yaml``/``.yml`` or ``.toml`` spec file, validate and expand it."""
    path = Path(path)
    if not path.is_file():
        raise LorankError(f"sweep spec not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first = " ".join(str(exc).split())
        raise LorankError(f"invalid spec file {path}: {first}") from None
    if data is None:
        raise LorankError(f"spec file {path} is empty")
    return parse_spec(data, source=path)
