r"""The pieces of the batched real-LoRA trainer: stacked adapters, their forward, their optimiser.

**Stacked adapters.** C configurations adapt the same matrices W_ℓ ∈ R^{m×n} of one frozen
encoder with their own factors. For every matrix the factors are stored zero-padded to the
largest rank R of the group,

    A_ℓ ∈ R^{C×R×n},  B_ℓ ∈ R^{C×m×R},  s ∈ R^C,   rows r_c..R−1 of A_c and columns of B_c = 0,

so that s_c·B_c A_c is configuration c's update. The padding is inert: its contribution to the
forward is an exact zero, and its gradients ∂L/∂B_c[:, j] = s_c·g·(A_c x)_j^T = 0 and
∂L/∂A_c[j] = s_c·B_c[:, j]^T g x^T = 0 vanish exactly, so gradient descent, Adam and weight decay
keep it zero; :class:`StackedOptimizer` also multiplies every gradient by the rank mask.

**Forward** (:func:`stacked_logits`). A forward hook on each adapted ``nn.Linear`` adds peft's
LoRA term to its output, ``y = W0 x + b + (B (A x))·s`` (the order of peft's
``lora_B(lora_A(dropout(x))) * scaling``, dropout 0), reading (A_c, B_c, s_c) from a slot that
:func:`torch.func.vmap` fills with one configuration's slice. vmap maps the classifier's upper
layers over the C configurations: every operation whose inputs do not depend on the adapter —
the cached lower state, and in the first adapted block the frozen projections W_k h, W_q h,
W_v h — is computed once for all C; everything downstream runs as one batched operation over
the C·b rows (b examples) instead of C separate calls.

**Optimiser** (:class:`StackedOptimizer`). ``torch.optim`` SGD, Adam and AdamW, element for
element (same update formulas, same order of operations), on the stacks, with a learning rate,
a weight decay and a step count per configuration, and an ``active`` mask: an inactive
configuration (diverged, or finished) is never updated, so a NaN in its rows cannot spread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import vmap

from lorank.errors import LorankError, check_choice
from lorank.finetune.adapter import factor_names

#: (A_c, B_c, s_c) of one configuration for one matrix path, as the hooks see them
Factors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class LoraStack:
    """Zero-padded LoRA factors of C configurations (see module doc).

    Attributes:
        paths: adapted matrix paths (relative to the base model), in a fixed order.
        A: path -> (C, R, n) tensor.
        B: path -> (C, m, R) tensor.
        s: (C,) scalings s_c (peft's ``scaling``).
        ranks: (C,) int64 ranks r_c ≤ R.
    """

    paths: list[str]
    A: dict[str, torch.Tensor]
    B: dict[str, torch.Tensor]
    s: torch.Tensor
    ranks: torch.Tensor

    def tensors(self) -> list[torch.Tensor]:
        """[A_ℓ, B_ℓ for ℓ in paths] — the order :class:`StackedOptimizer` uses."""
        return [t for p in self.paths for t in (self.A[p], self.B[p])]

    def masks(self) -> list[torch.Tensor]:
        """Rank masks broadcastable to :meth:`tensors`, (C, R, 1) for A and (C, 1, R) for B, of
        the (C, R) mask: 1 on the first r_c rank slots of configuration c, 0 on the padding."""
        R = self.A[self.paths[0]].shape[1]
        mask = (torch.arange(R)[None, :] < self.ranks[:, None]).to(self.s.dtype)
        return [m for _ in self.paths for m in (mask[:, :, None], mask[:, None, :])]

    def select(self, rows: Sequence[int], grad: bool = False
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """(A, B, s) of the configurations ``rows`` (copies, leading axis len(rows)), as
        :func:`stacked_logits` takes them; with ``grad``, A and B are leaves requiring grad."""
        idx = torch.as_tensor(rows, dtype=torch.long)
        A = {p: self.A[p].index_select(0, idx) for p in self.paths}
        B = {p: self.B[p].index_select(0, idx) for p in self.paths}
        if grad:
            for t in (*A.values(), *B.values()):
                t.requires_grad_(True)
        return A, B, self.s.index_select(0, idx)

    def state(self, c: int, prefix: str) -> dict[str, torch.Tensor]:
        """Configuration c's own factors A (r_c, n), B (m, r_c) of every path as a peft adapter
        state (detached copies; names :func:`~lorank.finetune.adapter.factor_names`)."""
        r = int(self.ranks[c])
        out = {}
        for p in self.paths:
            a, b = factor_names(prefix, p)
            out[a], out[b] = self.A[p][c, :r].detach().clone(), self.B[p][c, :, :r].detach().clone()
        return out


def stack_factors(factors: Sequence[Mapping[str, tuple[torch.Tensor, torch.Tensor]]],
                  scalings: Sequence[float]) -> LoraStack:
    """Stack per-configuration factors {path: (A (r_c, n), B (m, r_c))} with zero padding."""
    if not factors:
        raise LorankError("no configurations to stack")
    paths = list(factors[0])
    if any(list(f) != paths for f in factors):
        raise LorankError("every configuration must adapt the same matrices")
    ranks = [int(f[paths[0]][0].shape[0]) for f in factors]
    R = max(ranks)
    A, B = {}, {}
    for p in paths:
        a0, b0 = factors[0][p]
        A[p] = a0.new_zeros((len(factors), R, a0.shape[1]))
        B[p] = b0.new_zeros((len(factors), b0.shape[0], R))
        for c, f in enumerate(factors):
            a, b = f[p]
            A[p][c, :a.shape[0]] = a
            B[p][c, :, :b.shape[1]] = b
    dtype = next(iter(A.values())).dtype
    return LoraStack(paths, A, B, torch.tensor(list(scalings), dtype=dtype),
                     torch.tensor(ranks, dtype=torch.long))


@contextlib.contextmanager
def lora_hooks(base_model: torch.nn.Module, paths: Sequence[str]) -> Iterator[dict[str, Factors]]:
    """Context: forward hooks on the ``nn.Linear`` at each path that add (B (A x))·s.

    Yields the slot the hooks read: path -> (A, B, s). While the slot holds no entry for a path
    (outside :func:`stacked_logits`), that module computes W0 x + b unchanged. The hooks are
    removed on exit.
    """
    slot: dict[str, Factors] = {}

    def make(path: str) -> Any:
        def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            factors = slot.get(path)
            if factors is None:
                return output
            A, B, s = factors
            return output + F.linear(F.linear(inputs[0], A), B) * s

        return hook

    handles = []
    try:
        for p in paths:
            module = base_model.get_submodule(p)
            if not isinstance(module, torch.nn.Linear):
                raise LorankError(f"{p} is a {type(module).__name__}, not a plain nn.Linear: "
                                  "detach any peft adapter before batched training")
            handles.append(module.register_forward_hook(make(p)))
        yield slot
    finally:
        for h in handles:
            h.remove()
        slot.clear()


def stacked_logits(clf: torch.nn.Module, x: dict, start: int | None, slot: dict[str, Factors],
                   A: Mapping[str, torch.Tensor], B: Mapping[str, torch.Tensor],
                   s: torch.Tensor) -> torch.Tensor:
    """Logits of c = 1..C configurations on the same rows: (C, b, K).

    Args:
        clf: the classifier (no peft adapter), its adapted modules hooked by :func:`lora_hooks`.
        x: inputs or cached state of b rows (shared by the C configurations).
        start: the first layer ``x`` still has to run (None: ``x`` are token inputs).
        slot: the hooks' slot.
        A, B, s: stacked factors (leading axis C), e.g. slices of a :class:`LoraStack`.
    """
    paths = list(A)

    def one(A_c: dict, B_c: dict, s_c: torch.Tensor) -> torch.Tensor:
        slot.update({p: (A_c[p], B_c[p], s_c) for p in paths})
        try:
            return clf.logits_from(x, start)
        finally:
            slot.clear()

    return vmap(one)(dict(A), dict(B), s)


class StackedOptimizer:
    """``torch.optim`` SGD / Adam / AdamW applied to stacked factors, per-configuration
    learning rate lr_c·λ_c(t) and weight decay w_c (see module doc).

    Update of configuration c at its t-th step (g its gradient, masked by the rank mask):

    * ``sgd``/``gd``: θ ← θ − η (g + w θ).
    * ``adam``: g ← g + w θ; m ← m + (1−β1)(g − m); v ← β2 v + (1−β2) g²;
      θ ← θ − η/(1−β1^t) · m / (√v / √(1−β2^t) + ε).
    * ``adamw``: θ ← (1 − η w) θ, then the Adam step without the w θ term.

    β = (0.9, 0.999), ε = 1e-8: torch's defaults, which the one-at-a-time path uses.
    """

    BETAS = (0.9, 0.999)
    EPS = 1e-8

    def __init__(self, kind: str, params: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
                 lrs: torch.Tensor, weight_decays: torch.Tensor) -> None:
        self.kind = check_choice("optimizer", kind, ("adamw", "adam", "sgd", "gd"))
        self.params = list(params)
        self.lrs = lrs.double()
        self.wd = weight_decays.double()
        self.masks = list(masks)
        self.t = torch.zeros(len(lrs), dtype=torch.long)
        adam = kind in ("adam", "adamw")
        self.m = [torch.zeros_like(p) for p in self.params] if adam else []
        self.v = [torch.zeros_like(p) for p in self.params] if adam else []

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], factors: torch.Tensor,
             active: torch.Tensor) -> None:
        """One update of the active configurations.

        Args:
            grads: gradients, one per parameter (same shapes).
            factors: (C,) schedule factors λ_c(t) (lr_c·λ_c is the step's learning rate).
            active: (C,) bool; inactive rows keep their parameters and optimiser state.
        """
        idx = torch.nonzero(active).flatten()
        if idx.numel() == 0:
            return
        self.t[idx] += 1
        lr = (self.lrs * factors.double())[idx]
        wd = self.wd[idx]
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            shape = (-1,) + (1,) * (p.dim() - 1)
            theta = p[idx]
            g = g[idx] * self.masks[i][idx]
            lr_, wd_ = lr.to(p.dtype).view(shape), wd.to(p.dtype).view(shape)
            if self.kind in ("sgd", "gd"):
                theta = theta - lr_ * (g + wd_ * theta)
            else:
                if self.kind == "adamw":
                    theta = theta * (1 - (lr * wd).to(p.dtype).view(shape))
                else:
                    g = g + wd_ * theta
                b1, b2 = self.BETAS
                m = torch.lerp(self.m[i][idx], g, 1 - b1)
                v = self.v[i][idx] * b2 + (1 - b2) * g * g
                t = self.t[idx].double()
                bc1 = 1 - b1 ** t
                bc2_sqrt = (1 - b2 ** t).sqrt()
                step_size = (lr / bc1).to(p.dtype).view(shape)
                denom = v.sqrt() / bc2_sqrt.to(p.dtype).view(shape) + self.EPS
                theta = theta - step_size * (m / denom)
                self.m[i][idx], self.v[i][idx] = m, v
            p[idx] = theta
