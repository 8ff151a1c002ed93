"""What lorank knows about each encoder architecture: LoRA target names and layer structure.

One declarative :class:`ArchSpec` per Hugging Face ``model_type``. Module paths are relative to the
*base* model (``BertModel``, ``MPNetModel``, ...); a task model (``...ForMaskedLM``) prefixes them
with its ``base_model_prefix``. Adding an architecture is one entry in :data:`ARCHITECTURES`.

Shapes follow ``torch.nn.Linear``: a weight W ∈ R^{m×n} maps n inputs to m outputs, and LoRA adapts
it by ΔW = B·A with B ∈ R^{m×r}, A ∈ R^{r×n}.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lorank.errors import LorankError
from lorank.models.lora_shape import parse_layers


@dataclass(frozen=True)
class ArchSpec:
    """Layer structure of one encoder family.

    Attributes:
        model_type: the config's ``model_type``.
        layer_path: module path of transformer block ``{i}`` inside the base model.
        targets: LoRA target name → (path inside a block, (out, in) config-size keys).
            Size keys are ``"h"`` (hidden_size) or ``"i"`` (intermediate_size).
        default_targets: the names peft and the papers adapt by default (query and value).
    """

    model_type: str
    layer_path: str
    targets: dict[str, tuple[str, tuple[str, str]]]
    default_targets: tuple[str, ...]


def _bert_like(model_type: str, q: str = "query", k: str = "key", v: str = "value") -> ArchSpec:
    return ArchSpec(
        model_type=model_type,
        layer_path="encoder.layer.{i}",
        targets={
            q: (f"attention.self.{q}", ("h", "h")),
            k: (f"attention.self.{k}", ("h", "h")),
            v: (f"attention.self.{v}", ("h", "h")),
            "attention.output.dense": ("attention.output.dense", ("h", "h")),
            "intermediate.dense": ("intermediate.dense", ("i", "h")),
            "output.dense": ("output.dense", ("h", "i")),
        },
        default_targets=(q, v),
    )


ARCHITECTURES: dict[str, ArchSpec] = {
    "bert": _bert_like("bert"),
    "roberta": _bert_like("roberta"),
    "xlm-roberta": _bert_like("xlm-roberta"),
    "electra": _bert_like("electra"),
    "deberta-v2": _bert_like("deberta-v2", "query_proj", "key_proj", "value_proj"),
    "mpnet": ArchSpec(
        model_type="mpnet",
        layer_path="encoder.layer.{i}",
        targets={
            "q": ("attention.attn.q", ("h", "h")),
            "k": ("attention.attn.k", ("h", "h")),
            "v": ("attention.attn.v", ("h", "h")),
            "o": ("attention.attn.o", ("h", "h")),
            "intermediate.dense": ("intermediate.dense", ("i", "h")),
            "output.dense": ("output.dense", ("h", "i")),
        },
        default_targets=("q", "v"),
    ),
}

#: Names that mean the same projection across architectures (``query`` ↔ MPNet's ``q``).
_ALIAS_GROUPS = (
    frozenset({"query", "q", "query_proj"}),
    frozenset({"key", "k", "key_proj"}),
    frozenset({"value", "v", "value_proj"}),
    frozenset({"o", "attention.output.dense"}),
)


@dataclass(frozen=True)
class AdaptedMatrix:
    """One weight matrix LoRA adapts: its module path (in the base model), layer, target, (m, n)."""

    path: str
    layer: int
    target: str
    m: int
    n: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.m, self.n)


def arch_spec(model_type: str) -> ArchSpec:
    """The :class:`ArchSpec` for a config's ``model_type``; LorankError if unsupported."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise LorankError(f"unsupported architecture {model_type!r}; supported: {known}") from None


def resolve_targets(spec: ArchSpec, targets: Sequence[str] | None) -> list[str]:
    """Map user target names onto the architecture's own names (``query`` ↔ MPNet's ``q``)."""
    if not targets:
        return list(spec.default_targets)
    out = []
    for name in targets:
        name = name.strip()
        group = next((g for g in _ALIAS_GROUPS if name in g), frozenset({name}))
        match = [t for t in spec.targets if t == name] or [t for t in spec.targets if t in group]
        if match:
            out.append(match[0])
        else:
            known = ", ".join(spec.targets)
            raise LorankError(
                f"unknown target module {name!r} for {spec.model_type}; choose from: {known}")
    return list(dict.fromkeys(out))


def resolve_layers(layers: str | Sequence[int] | None, num_layers: int) -> list[int]:
    """Layer selection: ``"all"`` (default), ``"last"``, or indices (negative counts from the end).

    A string of comma-separated integers (``"0,5"`` or ``"-1"``) is accepted too.
    """
    layers = parse_layers(layers)
    if layers == "all":
        return list(range(num_layers))
    if layers == "last":
        return [num_layers - 1]
    out = []
    for idx in layers:
        if not -num_layers <= idx < num_layers:
            raise LorankError(
                f"layer index {idx} out of range for a model with {num_layers} layers")
        out.append(idx % num_layers)
    return sorted(set(out))


def _config_value(config: Any, key: str) -> int:
    name = {"h": "hidden_size", "i": "intermediate_size"}[key]
    return int(getattr(config, name))


def adapted_matrices(
    config: Any, targets: Sequence[str] | None = None, layers: str | Sequence[int] | None = "all"
) -> list[AdaptedMatrix]:
    """List the matrices LoRA adapts for a Hugging Face config, target names and layer selection.

    Uses only the config (no weights): hidden_size, intermediate_size, num_hidden_layers.
    """
    spec = arch_spec(getattr(config, "model_type", None))
    names = resolve_targets(spec, targets)
    chosen = resolve_layers(layers, int(config.num_hidden_layers))
    out = []
    for i in chosen:
        for name in names:
            sub, (mk, nk) = spec.targets[name]
            path = f"{spec.layer_path.format(i=i)}.{sub}"
            out.append(AdaptedMatrix(path, i, name, _config_value(config, mk),
                                     _config_value(config, nk)))
    return out
