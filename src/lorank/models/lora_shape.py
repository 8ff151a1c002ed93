r"""What both LoRA engines share about the adapter: the scaling rule and the layer selection.

One definition for the linearized engine (:mod:`lorank.linearized`) and the real one
(:mod:`lorank.finetune`, peft), so the two cannot drift apart. The update of an adapted matrix
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
from enum import StrEnum

from lorank.errors import LorankError, parse_choice


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
    if not math.isfinite(alpha) or alpha <= 0:
        raise LorankError(f"alpha must be a positive number, got {alpha!r}")
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
