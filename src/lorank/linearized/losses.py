r"""Losses of the linearized model, batched over configurations, with their logit gradients.

Logits ``out`` have shape (N, K, C): N examples, K logits, C configurations trained at once.
Per-example weights ``w`` (C, N) select the examples of each configuration's step (1/N for
full-batch GD, 1/b on a mini-batch for SGD); the loss of configuration c is

* cross-entropy: L_c = Σ_i w_ci · (−log softmax(out[i, :, c])_{y_i}),
  ∂L_c/∂out[i, :, c] = w_ci · (softmax(out[i, :, c]) − e_{y_i});
* squared error: L_c = Σ_i w_ci · ½ Σ_k (out[i, k, c] − Y_ik)², ∂L_c/∂out = w_ci (out − Y),
  with Y one-hot (``"onehot"``) or ±1 (``"pm1"``: +1 for the true class, −1 elsewhere).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lorank.errors import check_choice
from lorank.training import LOSSES

MSE_TARGETS = ("onehot", "pm1")


def check_loss(loss: str) -> str:
    """Validate a loss name ("ce" or "mse")."""
    return check_choice("loss", loss, LOSSES)


def targets(labels: Tensor, K: int, kind: str = "onehot", dtype: torch.dtype = torch.float32
            ) -> Tensor:
    """Regression targets Y (N, K): one-hot, or ±1 (``"pm1"``)."""
    check_choice("MSE target", kind, MSE_TARGETS)
    Y = torch.nn.functional.one_hot(labels.long(), K).to(dtype)
    return 2 * Y - 1 if kind == "pm1" else Y


def loss_and_grad(out: Tensor, labels: Tensor, loss: str, weights: Tensor | None = None,
                  mse_target: str = "onehot") -> tuple[Tensor, Tensor]:
    """Per-configuration loss L (C,) and its gradient ∂L/∂out (N, K, C) (see module doc).

    ``weights`` (C, N) defaults to 1/N for every example (mean over the split).
    """
    N, K, C = out.shape
    if weights is None:
        weights = out.new_full((C, N), 1.0 / N)
    w = weights.T[:, None, :]  # (N, 1, C)
    if check_loss(loss) == "ce":
        logp = torch.log_softmax(out, dim=1)
        onehot = torch.nn.functional.one_hot(labels.long(), K).to(out.dtype)[:, :, None]
        per = -(logp * onehot).sum(dim=1)  # (N, C)
        grad = w * (logp.exp() - onehot)
    else:  # mse
        diff = out - targets(labels, K, mse_target, out.dtype)[:, :, None]
        per = 0.5 * (diff**2).sum(dim=1)
        grad = w * diff
    return (weights.T * per).sum(dim=0), grad


def accuracy(out: Tensor, labels: Tensor) -> Tensor:
    """Accuracy per configuration: out (N, K, C) -> (C,); non-finite logits count as wrong."""
    pred = out.argmax(dim=1)
    ok = (pred == labels[:, None]) & torch.isfinite(out).all(dim=1)
    return ok.to(torch.float64).mean(dim=0)


def f1_binary(out: Tensor, labels: Tensor, positive: int = 1) -> Tensor:
    """Binary F1 of class ``positive`` per configuration: out (N, 2, C) -> (C,)."""
    pred = (out.argmax(dim=1) == positive) & torch.isfinite(out).all(dim=1)
    true = (labels == positive)[:, None]
    tp = (pred & true).sum(0).double()
    fp = (pred & ~true).sum(0).double()
    fn = (~pred & true).sum(0).double()
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))


def metric(name: str, out: Tensor, labels: Tensor) -> Tensor:
    """Task metric ``"accuracy"`` or ``"f1"`` per configuration (C,)."""
    if check_choice("metric", name, ("accuracy", "f1")) == "accuracy":
        return accuracy(out, labels)
    return f1_binary(out, labels)


def metrics_dict(names: tuple[str, ...] | list[str], out: Tensor, labels: Tensor
                 ) -> list[dict[str, float]]:
    """{metric: value} for every configuration (a list of length C)."""
    vals = {n: metric(n, out, labels).cpu().numpy() for n in names}
    C = out.shape[2]
    return [{n: float(np.asarray(v)[c]) for n, v in vals.items()} for c in range(C)]
