r"""How one real (non-linearized) LoRA fine-tuning run is trained, validated on construction.

What peft builds — rank, α and the scaling rule, targets, layers, dropout, init — is the
:class:`~lorank.models.lora_shape.AdapterConfig` both engines share (a single rank for one run).

:class:`TrainSettings` — the optimisation: loss, optimiser, learning rate and schedule,
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
