r"""Settings of one real (non-linearized) LoRA fine-tuning run, validated on construction.

Two frozen records, one per concern:

* :class:`LoraSettings` — what peft builds: rank r, α and the scaling rule, target modules,
  layer selection, dropout and initialisation. The update of an adapted matrix
  :math:`W \in \mathbb{R}^{m\times n}` is :math:`\Delta W = s\,B A` with
  :math:`B \in \mathbb{R}^{m\times r}` (zero at init), :math:`A \in \mathbb{R}^{r\times n}`, and
  :math:`s = \alpha/r` (LoRA, Hu et al. 2021) or :math:`s = \alpha/\sqrt{r}` (rsLoRA, Kalajdzievski
  2023), or :math:`s = 1` (``"none"``, the convention of Jang, Lee, Ryu, ICML 2024, and of
  lorank's linearized engine). ``alpha=None`` also means :math:`s = 1` at every rank (α = r, or
  α = √r for rsLoRA), so that rank is the only capacity knob.
* :class:`TrainSettings` — the optimisation: loss, optimiser, learning rate and schedule,
  weight decay, steps or epochs, batch size (``None`` = full batch), evaluation period on the
  k-shot dev split (LM-BFF model selection), seed, and whether the head is trained too.

Every bad value raises :class:`~lorank.errors.LorankError` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import Any, Literal

from lorank.errors import LorankError
from lorank.models.lora_shape import Scaling, parse_layers, scale

Init = Literal["gaussian", "kaiming", "fan_in"]
Schedule = Literal["constant", "linear"]
Optimizer = Literal["adamw", "adam", "sgd", "gd"]
Metric = Literal["accuracy", "f1"]
Loss = Literal["ce", "mse"]
Keep = Literal["best", "last"]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise LorankError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise LorankError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise LorankError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


@dataclass(frozen=True)
class LoraSettings:
    """The adapter peft builds (see module docstring for the math).

    Attributes:
        r: LoRA rank (1 ≤ r ≤ min(m, n) of every adapted matrix; checked on attach).
        alpha: peft's ``lora_alpha``; ``None`` → s = 1 (α = r, or √r with rsLoRA).
        scaling: ``"lora"`` (s = α/r), ``"rslora"`` (s = α/√r, peft ``use_rslora``) or
            ``"none"`` (s = 1 whatever α; peft gets α = r).
        targets: target module names (``query``/``value``…; aliases resolved per architecture);
            ``None`` → the architecture's defaults (query and value).
        layers: ``"all"``, ``"last"`` or layer indices.
        dropout: LoRA dropout probability on the adapter input, in [0, 1).
        init: ``"gaussian"`` (A entries ~ N(0, 1/r²), peft), ``"kaiming"`` (peft's default
            uniform) or ``"fan_in"`` (A entries ~ N(0, 1/n), as lorank's linearized engine);
            B = 0 in every case, so f(W0 + ΔW) = f(W0) at init.
    """

    r: int = 1
    alpha: float | None = None
    scaling: str = Scaling.LORA.value
    targets: tuple[str, ...] | None = None
    layers: str | tuple[int, ...] = "all"
    dropout: float = 0.0
    init: Init = "gaussian"

    def __post_init__(self) -> None:
        _positive_int("r (LoRA rank)", self.r)
        if self.alpha is not None and _finite("alpha", self.alpha) <= 0:
            raise LorankError(f"alpha must be > 0, got {self.alpha!r}")
        object.__setattr__(self, "scaling", Scaling.parse(self.scaling).value)
        _choice("init", self.init, ("gaussian", "kaiming", "fan_in"))
        dropout = _finite("dropout", self.dropout)
        if not 0.0 <= dropout < 1.0:
            raise LorankError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.targets is not None:
            targets = tuple(str(t).strip() for t in self.targets if str(t).strip())
            object.__setattr__(self, "targets", targets or None)
        object.__setattr__(self, "layers", parse_layers(self.layers))

    @property
    def lora_alpha(self) -> float:
        """The α passed to peft: the given one, or the one giving s = 1."""
        if self.alpha is not None and self.scaling != "none":
            return float(self.alpha)
        return math.sqrt(self.r) if self.scaling == "rslora" else float(self.r)

    @property
    def s(self) -> float:
        """The scaling s with ΔW = s·B·A (:func:`lorank.models.lora_shape.scale`, the rule the
        linearized engine uses too)."""
        return scale(self.scaling, self.alpha, self.r)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists) including the resolved α and s."""
        out = asdict(self)
        out["targets"] = list(self.targets) if self.targets else None
        out["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        out.update(lora_alpha=self.lora_alpha, s=self.s)
        return out


@dataclass(frozen=True)
class TrainSettings:
    """How the adapter is trained and selected.

    Attributes:
        lr: learning rate (> 0).
        steps: optimiser steps; ``epochs`` instead gives epochs × ⌈N/batch⌉ steps. Exactly one
            of them may be set; neither → 100 steps.
        batch_size: mini-batch size; ``None`` = full batch (plain GD with ``optimizer="sgd"``).
        optimizer: ``"adamw"`` (decoupled weight decay, LM-BFF), ``"adam"``, ``"sgd"`` or
            ``"gd"`` (full-batch SGD). For adam/sgd/gd, weight decay λ adds λθ to the gradient,
            i.e. the penalty λ/2·(‖A‖²+‖B‖²) = λ‖BA‖_* at the optimum (as the linearized
            engine).
        weight_decay: λ ≥ 0.
        schedule: ``"constant"`` or ``"linear"`` decay to 0 over the run (no warm-up).
        loss: ``"ce"`` (cross-entropy over the K logits) or ``"mse"``
            (½‖f(x) − e_y‖² averaged over examples).
        eval_every: evaluate the k-shot dev split every this many steps (and at steps 0 and
            the last); the best dev metric wins, ties go to the lower dev loss, then to the
            earlier step (as the linearized engine, :mod:`lorank.linearized.selection`).
        eval_early: also evaluate dev at steps 1, 2, 3, 4, 6, 8, 12, … below ``eval_every``
            (:meth:`is_eval_step`; the linearized engine's schedule).
        keep: ``"best"`` (the best-dev state, LM-BFF) or ``"last"`` (the final state, e.g.
            Jang et al.'s fixed-budget protocol).
        metric: dev metric for checkpoint selection (``"f1"``: binary F1 of label 1).
        seed: seeds adapter init, batch order and dropout.
        train_head: also train the head's parameters (off: rank is the only capacity knob).
        cache_prefix: run frozen lower layers once per example (identical results, faster).
    """

    lr: float = 1e-3
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: Optimizer = "adamw"
    weight_decay: float = 0.0
    schedule: Schedule = "constant"
    loss: Loss = "ce"
    eval_every: int = 10
    keep: Keep = "best"
    metric: Metric = "accuracy"
    seed: int = 42
    train_head: bool = False
    cache_prefix: bool = True
    eval_early: bool = True

    def __post_init__(self) -> None:
        if _finite("lr (learning rate)", self.lr) <= 0:
            raise LorankError(f"lr (learning rate) must be > 0, got {self.lr!r}")
        if self.steps is not None and self.epochs is not None:
            raise LorankError("give steps or epochs, not both")
        if self.steps is not None:
            _positive_int("steps", self.steps)
        if self.epochs is not None:
            _positive_int("epochs", self.epochs)
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        _choice("optimizer", self.optimizer, ("adamw", "adam", "sgd", "gd"))
        _choice("metric", self.metric, ("accuracy", "f1"))
        if self.optimizer == "gd" and self.batch_size is not None:
            raise LorankError("optimizer gd is full-batch: leave batch_size unset (or use sgd)")
        _choice("schedule", self.schedule, ("constant", "linear"))
        _choice("loss", self.loss, ("ce", "mse"))
        if _finite("weight_decay", self.weight_decay) < 0:
            raise LorankError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        _positive_int("eval_every", self.eval_every)
        _choice("keep", self.keep, ("best", "last"))
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral):
            raise LorankError(f"seed must be an integer, got {self.seed!r}")

    def is_eval_step(self, step: int, total: int) -> bool:
        """Whether dev is evaluated after ``step`` of ``total`` steps (step 0 always is):
        every ``eval_every`` steps, the last step and, with ``eval_early``, the geometric
        steps of :func:`lorank.linearized.train.early_step` below ``eval_every``."""
        from lorank.linearized.train import is_early_step

        return (step % self.eval_every == 0 or step == total
                or (self.eval_early and step < self.eval_every and is_early_step(step)))

    def total_steps(self, N: int) -> int:
        """Number of optimiser steps for N training examples."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            batch = self.batch_size or N
            return self.epochs * math.ceil(N / min(batch, N))
        return 100

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the settings."""
        return asdict(self)
