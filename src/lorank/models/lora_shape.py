r"""The LoRA adapter both engines share: :class:`AdapterConfig`, its scaling rule and layers.

One definition for the linearized engine (:mod:`lorank.linearized`) and the real one
(:mod:`lorank.finetune`, peft), so the two cannot drift apart; the CLI and the sweep methods build
one :class:`AdapterConfig` and pass it down whole, the way peft's ``LoraConfig`` travels to
``LoraModel`` and ``LoraLayer.update_layer``. The update of an adapted matrix
:math:`W \in \mathbb{R}^{m\times n}` is :math:`\Delta W = s\,B A` with
:math:`B \in \mathbb{R}^{m\times r}`, :math:`A \in \mathbb{R}^{r\times n}` and

* :math:`s = \alpha/r` (``lora``: Hu et al., 2021; peft's default),
* :math:`s = \alpha/\sqrt{r}` (``rslora``: Kalajdzievski, 2023; peft ``use_rslora``),
* :math:`s = 1` (``none``: the convention of Jang, Lee, Ryu, ICML 2024, under which rank is the
  only capacity knob).

No torch here: the module sits with the architecture registry (:mod:`lorank.models.arch`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from lorank.errors import LorankError, check_choice, check_number, parse_choice

#: How A is initialised (B = 0 always, so f(W0 + ΔW) = f(W0) at init): ``fan_in`` A ~ N(0, 1/n)
#: (the linearized engine's and Jang et al.'s), ``gaussian`` A ~ N(0, 1/r²) (peft),
#: ``kaiming`` (peft's default uniform).
INITS = ("fan_in", "gaussian", "kaiming")


class Scaling(StrEnum):
    """LoRA output scale s: α/r (``lora``), α/√r (``rslora``) or 1 (``none``)."""

    LORA = "lora"
    RSLORA = "rslora"
    NONE = "none"

    @classmethod
    def parse(cls, value: str | Scaling) -> Scaling:
        """The member named ``value`` (case-insensitive); LorankError naming the choices."""
        return parse_choice(cls, value, "scaling")


def scale(scaling: str | Scaling, alpha: float | None, r: int) -> float:
    """s = α/r (lora), α/√r (rslora) or 1 (none, or ``alpha=None``: s = 1 at every rank).

    Args:
        scaling: the rule (:class:`Scaling` or its name).
        alpha: α > 0, or None for s = 1.
        r: the rank, ≥ 1.
    """
    if r < 1:
        raise LorankError(f"rank must be >= 1, got {r}")
    kind = Scaling.parse(scaling)
    if kind is Scaling.NONE or alpha is None:
        return 1.0
    check_number("alpha", alpha, low=0)
    return alpha / r if kind is Scaling.LORA else alpha / math.sqrt(r)


def parse_layers(layers: str | Sequence[int] | None) -> str | tuple[int, ...]:
    """A layer selection, normalised: ``"all"``, ``"last"`` or a tuple of (possibly negative)
    indices. Accepts ``"0,5"``/``"-1"`` strings and None (= ``"all"``); the range is checked
    against a model by :func:`lorank.models.arch.resolve_layers`."""
    if layers is None:
        return "all"
    if isinstance(layers, str):
        text = layers.strip()
        if text in ("all", "last"):
            return text
        try:
            parsed = tuple(int(p) for p in text.split(",") if p.strip())
        except ValueError:
            raise LorankError(
                f"layers must be 'all', 'last' or comma-separated integers, got {layers!r}"
            ) from None
    else:
        parsed = tuple(int(i) for i in layers)
    if not parsed:
        raise LorankError("layer selection is empty")
    return parsed


def layers_json(layers: str | Sequence[int]) -> str | list[int]:
    """A layer selection as a JSON value: ``"all"``/``"last"`` as they are, indices as a list
    (what stored configs, cache keys and peft's ``layers_to_transform`` take)."""
    return layers if isinstance(layers, str) else list(layers)


@dataclass(frozen=True)
class AdapterConfig:
    r"""The LoRA adapter of either engine, validated on construction and serialisable.

    ΔW_ℓ = s·B_ℓ A_ℓ on every target matrix W_ℓ ∈ R^{m×n} of the chosen layers, B_ℓ ∈ R^{m×r}
    (zero at init), A_ℓ ∈ R^{r×n}, for each rank r of the grid ``ranks`` (Hu et al., 2021; the
    rank-threshold setting of Jang, Lee, Ryu, ICML 2024).

    Attributes:
        ranks: the rank grid (distinct positive integers; one rank for a single real run).
        alpha: α > 0 of the scaling rule, or None for s = 1 at every rank.
        scaling: ``none`` (s = 1), ``lora`` (α/r) or ``rslora`` (α/√r): :func:`scale`.
        init: how A is initialised (:data:`INITS`); the linearized engine uses ``fan_in``.
        targets: target module names (``query``/``value``…; aliases resolved per
            architecture), or None for the architecture's defaults (query and value).
        layers: ``"all"``, ``"last"`` or layer indices (:func:`parse_layers`).
        dropout: LoRA dropout on the adapter input, in [0, 1) (real engine only).
    """

    ranks: tuple[int, ...] = (1,)
    alpha: float | None = None
    scaling: str = Scaling.NONE.value
    init: str = "fan_in"
    targets: tuple[str, ...] | None = ("query", "value")
    layers: str | tuple[int, ...] = "last"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        ranks = tuple(self.ranks)
        if not ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 1
                            for r in ranks):
            raise LorankError(f"ranks must be positive integers, got {list(ranks)}")
        if len(set(ranks)) != len(ranks):
            raise LorankError(f"ranks must be distinct, got {list(ranks)}")
        object.__setattr__(self, "ranks", ranks)
        if self.alpha is not None:
            check_number("alpha", self.alpha, low=0)
        object.__setattr__(self, "scaling", Scaling.parse(self.scaling).value)
        check_choice("init", self.init, INITS)
        if not check_number("dropout", self.dropout, low=0, strict=False) < 1.0:
            raise LorankError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.targets is not None:
            targets = tuple(str(t).strip() for t in self.targets if str(t).strip())
            object.__setattr__(self, "targets", targets or None)
        object.__setattr__(self, "layers", parse_layers(self.layers))

    @property
    def r(self) -> int:
        """The rank of a single-rank adapter (one real run); LorankError for a grid."""
        if len(self.ranks) != 1:
            raise LorankError(f"one rank expected, got the grid {list(self.ranks)}")
        return self.ranks[0]

    def at(self, r: int) -> AdapterConfig:
        """The same adapter at the single rank ``r``."""
        return replace(self, ranks=(r,))

    def s_at(self, r: int) -> float:
        """The scale s at rank r (:func:`scale`)."""
        return scale(self.scaling, self.alpha, r)

    @property
    def s(self) -> float:
        """The scale s of a single-rank adapter."""
        return self.s_at(self.r)

    @property
    def lora_alpha(self) -> float:
        """peft's ``lora_alpha`` giving s at the single rank: α, or r (√r with rsLoRA) for
        s = 1."""
        if self.alpha is not None and self.scaling != Scaling.NONE:
            return float(self.alpha)
        return math.sqrt(self.r) if self.scaling == Scaling.RSLORA else float(self.r)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists); a single-rank adapter adds its ``r``, the resolved
        ``lora_alpha`` and ``s``."""
        out = asdict(self)
        out["ranks"] = list(self.ranks)
        out["targets"] = list(self.targets) if self.targets else None
        out["layers"] = layers_json(self.layers)
        if len(self.ranks) == 1:
            out.update(r=self.r, lora_alpha=self.lora_alpha, s=self.s)
        return out
