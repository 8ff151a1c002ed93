r"""How one real (non-linearized) LoRA fine-tuning run is trained, validated on construction.

What peft builds — rank, α and the scaling rule, targets, layers, dropout, init — is the
:class:`~lorank.models.lora_shape.AdapterConfig` both engines share (a single rank for one run).

:class:`LoraTraining` — the optimisation: what both engines share
  (:class:`lorank.training.TrainSettings`: loss, optimiser, weight decay, steps, batch size
  (``None`` = full batch), evaluation period on the k-shot dev split — LM-BFF model selection —
  and metric) plus learning rate and schedule, epochs, keep rule, seed, and whether the head is
  trained too.

Every bad value raises :class:`~lorank.errors.LorankError` naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from typing import ClassVar, Literal

from lorank import training
from lorank.errors import LorankError, check_choice, check_number

Schedule = Literal["constant", "linear"]
Keep = Literal["best", "last"]


@dataclass(frozen=True, kw_only=True)
class LoraTraining(training.TrainSettings):
    """How the adapter is trained and selected: the optimisation both engines share
    (:class:`lorank.training.TrainSettings`) with this engine's defaults and fields.

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
            (:meth:`~lorank.training.TrainSettings.is_eval_step`, both engines' schedule).
        keep: ``"best"`` (the best-dev state, LM-BFF) or ``"last"`` (the final state, e.g.
            Jang et al.'s fixed-budget protocol).
        metric: dev metric for checkpoint selection (``"f1"``: binary F1 of label 1).
        seed: seeds adapter init, batch order and dropout.
        train_head: also train the head's parameters (off: rank is the only capacity knob).
        cache_prefix: run frozen lower layers once per example (identical results, faster).
    """

    OPTIMIZERS: ClassVar[tuple[str, ...]] = ("adamw", "adam", "sgd", "gd")

    optimizer: str = "adamw"
    eval_every: int = 10
    lr: float = 1e-3
    epochs: int | None = None
    schedule: Schedule = "constant"
    keep: Keep = "best"
    seed: int = 42
    train_head: bool = False
    cache_prefix: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("lr (learning rate)", self.lr, low=0.0)
        if self.steps is not None and self.epochs is not None:
            raise LorankError("give steps or epochs, not both")
        self._ints("epochs", optional=True)
        if self.optimizer == "gd" and self.batch_size is not None:
            raise LorankError("optimizer gd is full-batch: leave batch_size unset (or use sgd)")
        check_choice("schedule", self.schedule, ("constant", "linear"))
        check_choice("keep", self.keep, ("best", "last"))
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral):
            raise LorankError(f"seed must be an integer, got {self.seed!r}")

    def total_steps(self, N: int) -> int:
        """Number of optimiser steps for N training examples."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            batch = self.batch_size or N
            return self.epochs * math.ceil(N / min(batch, N))
        return 100
