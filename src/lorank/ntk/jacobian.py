r"""Per-example Jacobians of a classifier's logits with respect to the LoRA-adapted matrices.

For a classifier f(x; W) with K logits and adapted matrices W_ℓ ∈ R^{m_ℓ×n_ℓ} (LoRA targets), the
NTK features of an example x are

    G_ℓ(x) = ∂f_k(x; W0)/∂W_ℓ ∈ R^{K×m_ℓ×n_ℓ},   k = 1..K,

the quantities the linearized model f_lin(x; ΔW) = f(x; W0) + Σ_ℓ ⟨G_ℓ(x), ΔW_ℓ⟩_F is built from
(Jang, Lee, Ryu, ICML 2024; Malladi et al., ICML 2023). Only the adapted matrices are
differentiated; every other weight stays frozen.

Several implementations of the same quantity sit behind :func:`jacobian_chunks`, chosen by
:class:`JacobianMethod` (the pattern of neural-tangents' ``empirical.py``):

* ``AUTOGRAD_LOOP`` — the reference: one example at a time, one ``torch.autograd.grad`` per logit.
  Cost K backward passes per example, no batching. Simple and obviously right.
* ``VMAP_JACREV`` — ``torch.func.vmap(jacrev(functional_call(clf, ...)))`` over the whole forward
  pass: all examples of a chunk and all K logits in one batched reverse pass.
* ``VMAP_JACREV_TRUNCATED`` (default) — as above, but the frozen lower layers [0, s) (s = the lowest
  adapted layer) run once, without gradients, for the chunk (``clf.lower``); only ``clf.upper``
  (layers [s, L) + head) is differentiated. When LoRA adapts only the last layer this skips almost
  the entire backward pass.

Memory: a chunk of b examples holds b·K·P Jacobian entries (P = Σ_ℓ m_ℓ n_ℓ) plus the reverse-pass
intermediates of b·K cotangents; :func:`chunk_size_for_budget` chooses b from a user budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from lorank.errors import LorankError

#: Default multiplier on K·P·itemsize per example for reverse-pass intermediates (measured on
#: MiniLM: peak/Jacobian bytes ≈ 2-3 for one layer, higher when many layers are differentiated).
DEFAULT_OVERHEAD = 4.0


class JacobianMethod(StrEnum):
    """How per-example Jacobians are computed (all give the same numbers; see module doc)."""

    AUTOGRAD_LOOP = "autograd_loop"
    VMAP_JACREV = "vmap_jacrev"
    VMAP_JACREV_TRUNCATED = "vmap_jacrev_truncated"

    @classmethod
    def parse(cls, value: str | JacobianMethod) -> JacobianMethod:
        """Accept an enum member or its value (``"vmap_jacrev"``); LorankError otherwise."""
        if isinstance(value, JacobianMethod):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            known = ", ".join(m.value for m in cls)
            raise LorankError(f"unknown Jacobian method {value!r}; choose from: {known}") from None


@dataclass(frozen=True)
class JacobianChunk:
    """Jacobians of examples ``[start, stop)``: ``G[name]`` (b, K, m, n) and ``f0`` (b, K)."""

    start: int
    stop: int
    G: dict[str, Tensor]
    f0: Tensor


def batch_size_of(inputs: Mapping[str, Any]) -> int:
    """Number of examples in an ``encode`` dict (batch dim first on every tensor)."""
    sizes = {int(v.shape[0]) for v in inputs.values() if isinstance(v, Tensor)}
    if len(sizes) != 1:
        raise LorankError(f"inputs must hold tensors with one common batch size, got {sizes}")
    return sizes.pop()


def slice_inputs(inputs: Mapping[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Rows [start, stop) of every tensor in an ``encode``/``lower`` dict (others unchanged)."""
    return {k: (v[start:stop] if isinstance(v, Tensor) else v) for k, v in inputs.items()}


def _to_device(inputs: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in inputs.items()}


def chunk_size_for_budget(K: int, P: int, itemsize: int, memory_budget_mb: float,
                          overhead: float = DEFAULT_OVERHEAD) -> int:
    """Examples per chunk so that the Jacobian work of a chunk fits ``memory_budget_mb``.

    Estimate: bytes per example = K · P · itemsize · overhead (the K×P Jacobian itself, times
    ``overhead`` for reverse-pass intermediates and the copy made when a chunk is stored).
    Returns max(1, floor(budget / bytes per example)).
    """
    if not memory_budget_mb or memory_budget_mb <= 0 or not math.isfinite(memory_budget_mb):
        raise LorankError(
            f"memory budget must be a positive number of MB, got {memory_budget_mb!r}")
    per_example = K * P * itemsize * overhead
    return max(1, int(memory_budget_mb * 2**20 // per_example))


class _UpperCall(nn.Module):
    """``forward(state) = clf.upper(state, start)`` so that ``functional_call`` can drive it."""

    def __init__(self, clf: nn.Module, start: int) -> None:
        super().__init__()
        self.clf = clf
        self.start = start

    def forward(self, state: dict[str, Any]) -> Tensor:
        return self.clf.upper(state, self.start)


def _split_tensors(batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {k: v for k, v in batch.items() if isinstance(v, Tensor)}
    others = {k: v for k, v in batch.items() if not isinstance(v, Tensor)}
    return tensors, others


def _vmap_jacobian(module: nn.Module, prefix: str, params: dict[str, Tensor],
                   batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
    """vmap over examples of jacrev over params of ``module(batch_of_one)[0]`` -> (K,)."""
    tensors, others = _split_tensors(batch)
    full = {prefix + k: v for k, v in params.items()}

    def single(p: dict[str, Tensor], example: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        one = {k: v.unsqueeze(0) for k, v in example.items()}
        out = functional_call(module, p, ({**one, **others},))[0]
        return out, out

    jac, f0 = vmap(jacrev(single, has_aux=True), in_dims=(None, 0))(full, tensors)
    return {k[len(prefix):]: v for k, v in jac.items()}, f0


def _loop_jacobian(clf: nn.Module, params: dict[str, Tensor],
                   batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
    """Reference: per example, per logit, ``torch.autograd.grad``."""
    b = batch_size_of(batch)
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    rows: list[dict[str, Tensor]] = []
    outs = []
    for i in range(b):
        with torch.enable_grad():
            out = functional_call(clf, leaves, (slice_inputs(batch, i, i + 1),))[0]
            grads = [torch.autograd.grad(out[k], list(leaves.values()), retain_graph=True)
                     for k in range(out.shape[0])]
        rows.append({name: torch.stack([g[j] for g in grads])
                     for j, name in enumerate(leaves)})
        outs.append(out.detach())
    return {n: torch.stack([r[n] for r in rows]) for n in leaves}, torch.stack(outs)


def lowest_layer(layers: Sequence[int]) -> int:
    """The first adapted layer s: everything below it is frozen and can run without gradients."""
    if not layers:
        raise LorankError("no adapted matrices selected")
    return min(int(x) for x in layers)


def jacobian_chunks(
    clf: nn.Module,
    inputs: Mapping[str, Any],
    params: Mapping[str, Tensor],
    *,
    start_layer: int = 0,
    method: JacobianMethod | str = JacobianMethod.VMAP_JACREV_TRUNCATED,
    chunk_size: int = 16,
) -> Iterator[JacobianChunk]:
    """Yield Jacobians G[name] = ∂f_k(x; W0)/∂W_name, chunk by chunk, with f0 = f(x; W0).

    Args:
        clf: a lorank classifier (``clf(inputs) -> (B, K)``, ``lower``/``upper``).
        inputs: ``clf.encode(...)`` output (batch dim first on every tensor).
        params: adapted parameters, name (as in ``clf.named_parameters()``) -> W0 (m, n).
        start_layer: lowest adapted layer s (used by the truncated method).
        method: a :class:`JacobianMethod`.
        chunk_size: examples per chunk b.

    Yields:
        :class:`JacobianChunk` with ``G[name]`` of shape (b, K, m, n) and ``f0`` of shape (b, K),
        detached, in the dtype and on the device of the classifier.
    """
    method = JacobianMethod.parse(method)
    if chunk_size < 1:
        raise LorankError(f"chunk size must be >= 1, got {chunk_size}")
    device = next(clf.parameters()).device
    W0 = {k: v.detach() for k, v in params.items()}
    N = batch_size_of(inputs)
    for lo in range(0, N, chunk_size):
        hi = min(N, lo + chunk_size)
        batch = _to_device(slice_inputs(inputs, lo, hi), device)
        if method is JacobianMethod.AUTOGRAD_LOOP:
            G, f0 = _loop_jacobian(clf, W0, batch)
        elif method is JacobianMethod.VMAP_JACREV:
            G, f0 = _vmap_jacobian(clf, "", W0, batch)
        else:
            with torch.no_grad():
                state = clf.lower(batch, start_layer)
            G, f0 = _vmap_jacobian(_UpperCall(clf, start_layer), "clf.", W0, state)
        yield JacobianChunk(lo, hi, {k: v.detach() for k, v in G.items()}, f0.detach())
