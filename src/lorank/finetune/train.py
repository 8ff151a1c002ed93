r"""The LoRA training loop with LM-BFF-style model selection on the k-shot dev split.

Minimises, over the LoRA factors θ = {A_ℓ, B_ℓ} (and the head if asked),

    L(θ) = (1/|batch|) Σ_i ℓ(f(x_i; W0 + s·B A), y_i),
    ℓ = cross-entropy over the K logits ("ce")  or  ½‖f(x_i) − e_{y_i}‖² ("mse"),

with AdamW (decoupled weight decay) or SGD (weight decay λ as the penalty λ/2·‖θ‖²; full batch
makes it plain gradient descent), a constant or linearly decaying learning rate, for a fixed number
of steps. Every ``eval_every`` steps (and at steps 0 and the last) the dev accuracy is measured and
the adapter state with the best one is kept — ties go to the earlier step (Gao et al., LM-BFF,
ACL 2021, select checkpoints on the k-shot dev set) — or, with ``keep="last"``, the last finite
state. A non-finite loss stops the run; it is
recorded as diverged at that step, and the best state seen so far is kept.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lorank.errors import LorankError
from lorank.finetune.adapter import Adapter
from lorank.finetune.config import LoraTraining
from lorank.finetune.inputs import PreparedSplit, predict


def loss_fn(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean loss over examples: cross-entropy or ½‖f − e_y‖² (logits (B, K), labels (B,))."""
    if loss == "ce":
        return F.cross_entropy(logits, y)
    target = F.one_hot(y, logits.shape[-1]).to(logits.dtype)
    return 0.5 * (logits - target).pow(2).sum(-1).mean()


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of examples with argmax_k f_k(x_i) = y_i."""
    return float((logits.argmax(-1) == y).double().mean()) if len(y) else float("nan")


@dataclass
class Evaluation:
    """Dev-split measurement at one step."""

    step: int
    dev_metric: float
    dev_accuracy: float
    dev_loss: float


@dataclass
class FitResult:
    """What a training run produced.

    Attributes:
        losses: the training (mini-batch) loss at every step taken, before the update.
        evals: dev evaluations, in step order.
        best_step: step whose state was kept (0 = the untrained adapter, f = f(W0)).
        best_state: that adapter state (see :meth:`Adapter.state`).
        final_state: the state after the last step (None if the run diverged).
        steps: steps taken (fewer than planned if diverged).
        diverged_step: step at which the loss became NaN/inf, or None.
        wall_s: wall time of the loop (s).
    """

    losses: list[float] = field(default_factory=list)
    evals: list[Evaluation] = field(default_factory=list)
    best_step: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    final_state: dict[str, torch.Tensor] | None = None
    steps: int = 0
    diverged_step: int | None = None
    wall_s: float = 0.0

    @property
    def best_dev_accuracy(self) -> float:
        return next((e.dev_accuracy for e in self.evals if e.step == self.best_step), math.nan)

    @property
    def best_dev_metric(self) -> float:
        return next((e.dev_metric for e in self.evals if e.step == self.best_step), math.nan)


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Context: ``torch.use_deterministic_algorithms(True)`` (warn-only), restored on exit."""
    was = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)


def head_parameters(adapter: Adapter) -> dict[str, torch.nn.Parameter]:
    """Parameters of the classifier outside its base model (the head), by name."""
    if not adapter.prefix:
        return {}
    return {n: p for n, p in adapter.clf.named_parameters() if not n.startswith(adapter.prefix)}


#: the torch optimiser of each ``LoraTraining.optimizer`` ("gd" is SGD on the full batch)
OPTIMIZERS = {"sgd": torch.optim.SGD, "gd": torch.optim.SGD, "adam": torch.optim.Adam,
              "adamw": torch.optim.AdamW}


def lr_factor(s: LoraTraining, t: int, total: int) -> float:
    """λ(t), the learning-rate multiplier after t of ``total`` updates: 1 (``"constant"``) or
    max(0, 1 − t/total) (``"linear"``)."""
    return max(0.0, 1.0 - t / total) if s.schedule == "linear" else 1.0


def batch_indices(n: int, batch: int | None, total: int, gen: torch.Generator
                  ) -> Iterator[torch.Tensor | slice]:
    """Index sets for ``total`` steps: the full batch, or shuffled epochs of size ``batch``."""
    if batch is None or batch >= n:
        for _ in range(total):
            yield slice(None)
        return
    taken = 0
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            if taken == total:
                return
            yield order[i:i + batch]
            taken += 1


def task_metric(logits: torch.Tensor, y: torch.Tensor, metric: str) -> float:
    """Accuracy, or binary F1 of label 1 (:func:`lorank.linearized.losses.metric`)."""
    if metric == "accuracy":
        return accuracy(logits, y)
    from lorank.linearized.losses import metric as lin_metric

    return float(lin_metric(metric, logits[:, :, None], y)[0])


def evaluation(logits: torch.Tensor, y: torch.Tensor, loss: str, step: int,
               metric: str = "accuracy") -> Evaluation:
    """Dev metric, accuracy and loss of logits (n, K) against labels (n,) (all NaN if a logit
    is not finite)."""
    if not bool(torch.isfinite(logits).all()):
        return Evaluation(step, math.nan, math.nan, math.nan)
    return Evaluation(step, task_metric(logits, y, metric), accuracy(logits, y),
                      float(loss_fn(logits, y, loss)))


def dev_key(ev: Evaluation) -> tuple[float, float]:
    """What checkpoint selection maximises: (dev metric, −dev loss); a non-finite loss never
    wins a tie (:mod:`lorank.linearized.selection`)."""
    return (ev.dev_metric, -ev.dev_loss if math.isfinite(ev.dev_loss) else -math.inf)


@dataclass
class Track:
    """A run's :class:`FitResult` as it grows, and the :func:`dev_key` of its kept state: the
    evaluation, keep and divergence protocol of :func:`fit`, shared with the batched trainer."""

    result: FitResult = field(default_factory=FitResult)
    best: tuple[float, float] = (-math.inf, -math.inf)  # (dev metric, −dev loss) of the kept state

    def checkpoint(self, ev: Evaluation, keep: str,
                   state: Callable[[], dict[str, torch.Tensor]]) -> None:
        """Record a dev evaluation and keep ``state()`` at its step if its metric is finite and
        ``keep="last"`` or its :func:`dev_key` beats the kept one (ties: the earlier step)."""
        self.result.evals.append(ev)
        if math.isfinite(ev.dev_metric) and (keep == "last" or dev_key(ev) > self.best):
            self.best = dev_key(ev)
            self.result.best_step, self.result.best_state = ev.step, state()

    def train_loss(self, step: int, loss: torch.Tensor) -> bool:
        """Record the training loss of ``step``; a non-finite one is not recorded but marks the
        run diverged at ``step``. Returns whether it was finite."""
        if not bool(torch.isfinite(loss)):
            self.result.diverged_step = step
            return False
        self.result.losses.append(float(loss.detach()))
        return True


def fit(adapter: Adapter, train: PreparedSplit, dev: PreparedSplit, s: LoraTraining
        ) -> FitResult:
    """Train the adapter from its current state; keep the best dev state (loaded on return).

    Args:
        adapter: the adapter inside the classifier (reset it first for a fresh run).
        train, dev: prepared splits (same ``start``: both cached or both full-forward).
        s: training settings (``s.total_steps(len(train))`` steps).

    Returns:
        A :class:`FitResult`; the adapter (and head if trained) hold ``best_state`` afterwards.
    """
    clf = adapter.clf
    total = s.total_steps(len(train))
    extra = head_parameters(adapter) if s.train_head else {}
    if s.train_head and not extra:
        raise LorankError(f"the {getattr(clf, 'head', '')} head has no trainable parameters "
                          "(its weights are fixed buffers); train it with train_head=False")
    for p in extra.values():
        p.requires_grad_(True)
    params = [*adapter.parameters().values(), *extra.values()]
    torch.manual_seed(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    opt = OPTIMIZERS[s.optimizer](params, lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lr_factor(s, t, total))
    track = Track()
    result = track.result
    t0 = time.perf_counter()

    def checkpoint(step: int) -> None:
        adapter.set_dropout_training(False)
        track.checkpoint(evaluation(predict(clf, dev), dev.y, s.loss, step, s.metric), s.keep,
                         lambda: adapter.state(extra))

    with deterministic():
        checkpoint(0)
        for step, index in enumerate(batch_indices(len(train), s.batch_size, total, gen), start=1):
            adapter.set_dropout_training(True)
            loss = loss_fn(train.logits(clf, index), train.y[index], s.loss)
            if not track.train_loss(step, loss):
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            result.steps = step
            if s.is_eval_step(step, total):
                checkpoint(step)
    adapter.set_dropout_training(False)
    if result.diverged_step is None:
        result.final_state = adapter.state(extra)
    adapter.load_state(result.best_state)
    for p in extra.values():
        p.requires_grad_(False)
    result.wall_s = time.perf_counter() - t0
    return result
