r"""Per-constraint losses of the capacity problems, as functions of the predictions z.

For predictions :math:`z_i = \langle G_i, BA\rangle_F` and targets y (i = 1..KN):

* ``"mse"``: :math:`L = \tfrac12\sum_i (z_i - y_i)^2`, :math:`\ell'_i = z_i - y_i`,
  :math:`\ell''_i = 1`, value at X = 0: :math:`L_0 = \tfrac12\|y\|^2`.
* ``"ce"`` (logistic loss on the signed margin, y_i = ±1):
  :math:`L = \sum_i \log(1 + e^{-y_i z_i})`, :math:`\ell'_i = -y_i\,\sigma(-y_i z_i)`,
  :math:`\ell''_i = \sigma(y_i z_i)\,\sigma(-y_i z_i) \le 1/4`, :math:`L_0 = KN\log 2`.

Success in the capacity experiment is :math:`L / L_0 <` tol.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from lorank.errors import check_choice

Loss = Literal["mse", "ce"]
LOSSES: tuple[str, ...] = ("mse", "ce")


def check_loss(loss: str) -> str:
    """Validate a loss name."""
    return check_choice("loss", loss, LOSSES)


def loss_terms(
    loss: str, z: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss value, first and second derivatives with respect to z.

    Args:
        loss: ``"mse"`` or ``"ce"``.
        z, y: predictions and targets, shape (I, KN).

    Returns:
        (L of shape (I,), ℓ' of shape (I, KN), ℓ'' of shape (I, KN)).
    """
    if check_loss(loss) == "mse":
        res = z - y
        return 0.5 * (res * res).sum(-1), res, torch.ones_like(z)
    t = y * z
    L = torch.nn.functional.softplus(-t).sum(-1)
    s_neg = torch.sigmoid(-t)
    return L, -y * s_neg, s_neg * torch.sigmoid(t)


def initial_loss(loss: str, y: torch.Tensor) -> torch.Tensor:
    """Loss at X = 0, shape (I,): ½‖y‖² (mse) or KN·log 2 (ce)."""
    if loss == "mse":
        return 0.5 * (y * y).sum(-1)
    return torch.full(y.shape[:-1], y.shape[-1] * math.log(2.0), dtype=y.dtype)
