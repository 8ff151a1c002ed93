r"""How far real LoRA is from its linearization: the measured NTK approximation error.

For a trained adapter with updates ΔW_ℓ = s·B_ℓ A_ℓ, compare on a split

    real:        f(x; W0 + ΔW)
    linearized:  f_lin(x; ΔW) = f(x; W0) + Σ_ℓ ⟨G_ℓ(x), ΔW_ℓ⟩_F,   G_ℓ(x) = ∂f(x; W0)/∂W_ℓ

(Jang, Lee, Ryu, ICML 2024; Malladi et al., ICML 2023). The directional derivative
Σ_ℓ ⟨G_ℓ(x), ΔW_ℓ⟩ is one forward-mode product ``torch.func.jvp`` of W ↦ f(x; W) at W0 along ΔW:
no Jacobian is materialised, the cost is about three forward passes. By Taylor's theorem
f − f_lin = O(‖ΔW‖²): the gap is second order in the update, so it measures how non-linear the
model is along the path LoRA actually took.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call, jvp

from lorank.finetune.adapter import Adapter
from lorank.finetune.inputs import CHUNK, PreparedSplit, predict


class _Forward(torch.nn.Module):
    """``clf`` seen as a module whose forward is the (possibly truncated) classifier forward."""

    def __init__(self, clf: torch.nn.Module, start: int | None) -> None:
        super().__init__()
        self.clf = clf
        self.start = start

    def forward(self, x: dict) -> torch.Tensor:
        return self.clf.logits_from(x, self.start)


def adapter_linearized_logits(adapter: Adapter, data: PreparedSplit
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(x; W0), f_lin(x; ΔW)) for every example of ``data``: two (n, K) tensors.

    The adapter is disabled while W0 is perturbed along ΔW (peft's ``get_delta_weight``).
    """
    wrapper = _Forward(adapter.clf, data.start)
    base = adapter.base_weights()  # name -> W0, in the order of adapter.matrices
    names = [f"clf.{name}" for name in base]
    primals = tuple(w.detach() for w in base.values())
    tangents = tuple(d.to(w.dtype) for w, d in zip(primals, adapter.delta_weights().values(),
                                                      strict=True))  # ΔW, same order
    f0_parts, lin_parts = [], []
    with adapter.disabled(), torch.no_grad():
        for i in range(0, len(data), CHUNK):
            x = data.rows(slice(i, i + CHUNK))

            def f(*weights: torch.Tensor, x: dict = x) -> torch.Tensor:
                return functional_call(wrapper, dict(zip(names, weights, strict=True)), (x,),
                                       strict=False)

            f0, df = jvp(f, primals, tangents)
            f0_parts.append(f0)
            lin_parts.append(f0 + df)
    return torch.cat(f0_parts), torch.cat(lin_parts)


@dataclass(frozen=True)
class LinearizationGap:
    """Real vs linearized predictions on one split.

    Attributes:
        max_abs: max_{i,k} |f_k(x_i) − f_lin,k(x_i)|.
        mean_abs: mean_{i,k} of the same.
        relative: ‖f − f_lin‖_F / ‖f − f(W0)‖_F (the part of the change the linear model misses;
            NaN when the adapter did not move the logits).
        agreement: fraction of examples where argmax f = argmax f_lin.
        accuracy_real, accuracy_lin, accuracy_base: accuracies of f(W0 + ΔW), f_lin and
            f(W0).
        n: number of examples.
    """

    max_abs: float
    mean_abs: float
    relative: float
    agreement: float
    accuracy_real: float
    accuracy_lin: float
    accuracy_base: float
    n: int


def linearization_gap(adapter: Adapter, data: PreparedSplit) -> LinearizationGap:
    """Measure f(W0 + ΔW) vs f(W0) + ⟨G, ΔW⟩ on ``data`` (see module docstring)."""
    real = predict(adapter.clf, data)
    f0, lin = adapter_linearized_logits(adapter, data)
    diff = (real - lin).double()
    moved = (real - f0).double().norm()
    y = data.y
    return LinearizationGap(
        max_abs=float(diff.abs().max()), mean_abs=float(diff.abs().mean()),
        relative=float(diff.norm() / moved) if moved > 0 else float("nan"),
        agreement=float((real.argmax(-1) == lin.argmax(-1)).double().mean()),
        accuracy_real=float((real.argmax(-1) == y).double().mean()),
        accuracy_lin=float((lin.argmax(-1) == y).double().mean()),
        accuracy_base=float((f0.argmax(-1) == y).double().mean()),
        n=len(data),
    )
