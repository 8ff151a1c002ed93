"""One experiment run, fully resolved: :class:`RunConfig`, its stable id and its features key.

A run is identified by ``run_id = sha256(canonical_json(identity))`` where ``identity`` is every
field of the config except the resource hints (``num_cpus``, ``num_gpus``), and the canonical JSON
has sorted keys, no whitespace, tuples as lists and floats in Python's shortest round-trip form.
The id is therefore the same in every process, on every machine and for every key order of the
spec that produced the config.

Runs whose Jacobian features are identical share a :class:`FeaturesKey`: the fields that decide
what the encoder sees and which matrices are differentiated (model, head, task, data seed, k,
targets, layers, dtype, max_length, test_cap, and a user's own data with the sha256 of its
files). Rank, loss, learning rates and steps do not change
the features G_ℓ(x) = ∂f(x; W0)/∂W_ℓ of the linearized model f_lin(x; ΔW) = f(x; W0) + Σ_ℓ
⟨G_ℓ(x), ΔW_ℓ⟩ (Jang, Lee, Ryu, ICML 2024; Malladi et al., ICML 2023), so a sweep over ranks
builds them once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lorank.data.source import DataSource
from lorank.errors import LorankError
from lorank.models.lora_shape import AdapterConfig, layers_json

#: Fields of :class:`RunConfig` that are resource hints, not part of the run's identity.
RESOURCE_FIELDS = ("num_cpus", "num_gpus")

#: Fields that determine the Jacobian features (see module docstring).
FEATURE_FIELDS = ("model", "head", "task", "seed", "k", "targets", "layers", "dtype",
                  "max_length", "test_cap", "data")


class Options(Mapping[str, Any]):
    """An immutable, hashable mapping of method-specific options (JSON values).

    Nested lists become tuples and nested dicts become :class:`Options`; :meth:`to_json` turns
    them back into plain lists and dicts. Equality and hashing follow the canonical JSON.
    """

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = {str(k): _freeze(v) for k, v in dict(data or {}).items()}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def to_json(self) -> dict[str, Any]:
        """Plain dict with lists and dicts, ready for :func:`json.dumps`."""
        return {k: _thaw(self._data[k]) for k in sorted(self._data)}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.to_json() == (other.to_json() if isinstance(other, Options)
                                      else dict(other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(canonical_json(self.to_json()))

    def __repr__(self) -> str:
        return f"Options({self.to_json()!r})"


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value if isinstance(value, Options) else Options(value)
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Options):
        return value.to_json()
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def sha256_of(obj: Any) -> str:
    """sha256 hex digest of the canonical JSON of ``obj`` (run ids, batch and features keys)."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def canonical_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, compact separators, UTF-8 kept, NaN/inf rejected."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


@dataclass(frozen=True)
class RunConfig:
    """A fully resolved run of one method on one task/model/rank/seed (immutable, hashable).

    Attributes:
        sweep: name of the sweep the run belongs to (part of the id: the same point in two
            sweeps is two rows).
        method: registered method name (``prescribe``, ``linearized``, ``lora``, ``cstar``).
        task: few-shot task (``sst2``, ``qnli``, ``mrpc``, ``rte``, ``mnli``, ...).
        model: encoder, a bundled short name (``minilm``, ``mpnet``) or a path / hub id.
        head: how logits are read from the encoder (e.g. ``verbalizer``).
        targets: LoRA target modules (``query``, ``value``, ...).
        layers: ``"all"``, ``"last"`` or a tuple of layer indices.
        k: examples per class in the training split (LM-BFF k-shot), so N = k·classes.
        seed: data split seed (LM-BFF: 13, 21, 42, 87, 100).
        rank: LoRA rank r.
        loss: ``"ce"`` or ``"mse"``.
        lrs: learning-rate grid; the engine selects on the k-shot dev split.
        lr_unit: ``"eta0"`` — ``lrs`` are multiples c of the kernel step η0 of the run's train
            features (lr = c·η0, resolved per data seed; the unit that makes every head and
            rank train, :mod:`lorank.linearized.step_size`); ``"abs"`` — absolute rates.
        steps: optimisation steps; eval_interval: steps between curve points.
        dtype: ``"float32"`` or ``"float64"``.
        init_seed: seed of the LoRA initialisation (A Gaussian, B = 0).
        max_length: tokenizer truncation length; test_cap: test rows kept (None = all).
        options: method-specific settings, an immutable :class:`Options` mapping.
        num_cpus, num_gpus: resource hints for the Ray runner; not part of the id.
        data: a user's own files (:class:`~lorank.data.DataSource`, pinned: label set and
            sha256 of the files fixed), or None for a registered task. Part of the id and the
            features key only when set, so the ids of registered-task runs do not change.
    """

    sweep: str
    method: str
    task: str
    model: str
    rank: int
    seed: int
    head: str = "verbalizer"
    targets: tuple[str, ...] = ("query", "value")
    layers: str | tuple[int, ...] = "last"
    k: int = 16
    loss: str = "ce"
    lrs: tuple[float, ...] = (0.3,)
    lr_unit: str = "eta0"
    steps: int = 1000
    eval_interval: int = 100
    dtype: str = "float32"
    init_seed: int = 0
    max_length: int = 64
    test_cap: int | None = None
    options: Options = field(default_factory=Options)
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    data: DataSource | None = None

    def __post_init__(self) -> None:
        if self.data is not None and not isinstance(self.data, DataSource):
            object.__setattr__(self, "data", DataSource.from_dict(self.data))
        object.__setattr__(self, "targets", tuple(self.targets))
        if not isinstance(self.layers, str):
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        object.__setattr__(self, "lrs", tuple(float(x) for x in self.lrs))
        if not isinstance(self.options, Options):
            object.__setattr__(self, "options", Options(self.options))

    def option(self, name: str, default: Any = None) -> Any:
        """The method-specific option ``name`` (JSON value, lists as lists), or ``default``."""
        return self.options.to_json().get(name, default)

    def known_options(self, known: Sequence[str]) -> dict[str, Any]:
        """The options as JSON values (lists as lists); LorankError naming the first unknown
        one: ``unknown <method> option 'x'; known: a, b``."""
        options = self.options.to_json()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise LorankError(f"unknown {self.method} option {unknown[0]!r}; known: "
                              + ", ".join(known))
        return options

    def adapter(self) -> AdapterConfig:
        """The run's LoRA adapter at its rank, for either engine: the run's targets and layers,
        options ``scaling`` (default none: s = 1) and ``alpha`` (default 1), init fan_in
        (A ~ N(0, 1/n), B = 0)."""
        return AdapterConfig(ranks=(self.rank,), alpha=self.option("alpha", 1.0),
                             scaling=self.option("scaling", "none"), init="fan_in",
                             targets=self.targets, layers=self.layers)

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready values (tuples → lists, options → dict)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["targets"] = list(self.targets)
        out["layers"] = layers_json(self.layers)
        out["lrs"] = list(self.lrs)
        out["options"] = self.options.to_json()
        if self.data is None:
            out.pop("data")
        else:
            out["data"] = self.data.to_dict()
        return out

    def identity(self) -> dict[str, Any]:
        """The fields that define the run (``to_dict`` minus :data:`RESOURCE_FIELDS`)."""
        out = self.to_dict()
        for name in RESOURCE_FIELDS:
            out.pop(name)
        return out

    @property
    def run_id(self) -> str:
        """sha256 hex digest of the canonical JSON of :meth:`identity`."""
        return sha256_of(self.identity())

    @property
    def batch_key(self) -> str:
        """Digest of :meth:`identity` without the rank: runs equal in all else form one batch,
        which a grouped method (:func:`lorank.experiments.registry.register_method` with
        ``grouped=True``) trains in one call — every rank at once."""
        identity = {k: v for k, v in self.identity().items() if k != "rank"}
        return sha256_of(identity)[:16]

    @property
    def features_key(self) -> FeaturesKey:
        """The :class:`FeaturesKey` shared by every run with the same features."""
        return FeaturesKey(**{name: getattr(self, name) for name in FEATURE_FIELDS})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Rebuild from :meth:`to_dict` output (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class FeaturesKey:
    """The config fields that determine the Jacobian features; ``digest`` names a cache entry."""

    model: str
    head: str
    task: str
    seed: int
    k: int
    targets: tuple[str, ...]
    layers: str | tuple[int, ...]
    dtype: str
    max_length: int
    test_cap: int | None
    data: DataSource | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["targets"] = list(self.targets)
        out["layers"] = layers_json(self.layers)
        if self.data is None:
            out.pop("data")
        else:
            out["data"] = self.data.to_dict()
        return out

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON of the key (first 16 hex digits): a cache folder name."""
        return sha256_of(self.to_dict())[:16]
