r"""What both training engines share: one base type for the optimisation and its checkpoints.

The linearized engine (:class:`lorank.linearized.train.LinearizedTraining`: gradient descent on
the NTK features, f_lin = f0 + J·vec(BA)) and the real one (:class:`lorank.finetune.config.
LoraTraining`: peft's LoRA on the network) minimise the same objective

    Φ(A, B) = (1/N) Σ_i ℓ(f(x_i), y_i) + λ/2 · Σ_ℓ (‖A_ℓ‖²_F + ‖B_ℓ‖²_F)

with ℓ cross-entropy over the K logits or ½‖f(x) − e_y‖², and select the checkpoint on the k-shot
dev split with the same schedule (LM-BFF model selection, Gao et al. 2021): dev is evaluated at
step 0, every ``eval_every`` steps, at the last step and — with ``eval_early`` — at the geometric
steps 1, 2, 3, 4, 6, 8, 12, … below ``eval_every`` (with a learning rate near the kernel step a
few-shot model fits its examples within ten steps; a grid that starts at ``eval_every`` would
leave selection only W0 or an over-fitted state). :class:`TrainSettings` holds these shared
fields and their validation; each engine's subclass adds what only it has (and its defaults).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from lorank.data.tasks import METRICS
from lorank.errors import LorankError, check_choice, check_number, check_positive_int

#: the losses of both engines: cross-entropy over the K logits, ½‖f(x) − e_y‖²
LOSSES = ("ce", "mse")


def is_early_step(step: int) -> bool:
    """Whether ``step`` is one of the early checkpoints 1, 2, 3, 4, 6, 8, 12, … (2^i or
    3·2^(i−1))."""
    if step < 1:
        return False
    odd = step
    while odd % 2 == 0:
        odd //= 2
    return odd in (1, 3)


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """The optimisation both engines share (module doc); validated on construction.

    Attributes:
        steps: optimiser steps T (None: the engine's rule, e.g. epochs).
        loss: ``"ce"`` (cross-entropy over the K logits) or ``"mse"``.
        optimizer: one of the engine's :attr:`OPTIMIZERS`.
        weight_decay: λ ≥ 0 of the penalty λ/2·(‖A‖²_F + ‖B‖²_F) (= λ‖BA‖_* at the optimum).
        batch_size: mini-batch size; None = full batch.
        eval_every: dev evaluation interval (steps).
        eval_early: also evaluate dev at the early steps below ``eval_every``.
        metric: dev selection metric, ``"accuracy"`` or ``"f1"`` (binary F1 of label 1).
    """

    #: the optimisers an engine implements (subclasses narrow or widen it)
    OPTIMIZERS: ClassVar[tuple[str, ...]] = ("gd", "sgd", "adam")

    steps: int | None = None
    loss: str = "ce"
    optimizer: str = "gd"
    weight_decay: float = 0.0
    batch_size: int | None = None
    eval_every: int = 50
    eval_early: bool = True
    metric: str = "accuracy"

    def __post_init__(self) -> None:
        self._ints("eval_every")
        self._ints("steps", "batch_size", optional=True)
        check_choice("loss", self.loss, LOSSES)
        check_choice("optimizer", self.optimizer, self.OPTIMIZERS)
        check_number("weight_decay", self.weight_decay, low=0.0, strict=False)
        check_choice("metric", self.metric, METRICS)

    def _ints(self, *names: str, optional: bool = False) -> None:
        """Each named field is a positive integer (None allowed when ``optional``), stored as a
        Python int: numpy integers are accepted and converted, as the settings are dumped to
        JSON as they are."""
        for name in names:
            value = getattr(self, name)
            if value is not None or not optional:
                object.__setattr__(self, name, check_positive_int(name, value))

    def is_eval_step(self, step: int, total: int) -> bool:
        """Whether dev is evaluated after ``step`` of ``total`` steps: step 0, every
        ``eval_every`` steps, the last step and, with ``eval_early``, the early steps
        (:func:`is_early_step`) below ``eval_every``."""
        return (step % self.eval_every == 0 or step == total
                or (self.eval_early and step < self.eval_every and is_early_step(step)))

    def eval_steps(self, total: int | None = None) -> frozenset[int]:
        """Every step of a ``total``-step run (default ``steps``) at which dev is evaluated
        (:meth:`is_eval_step`); the linearized engine logs the train loss at each of them."""
        total = self.steps if total is None else total
        if total is None:
            raise LorankError("eval_steps needs the number of steps (steps is None)")
        return frozenset(t for t in range(total + 1) if self.is_eval_step(t, total))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the settings."""
        return asdict(self)
