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
* ``VMAP_JACREV_TRUNCATED`` — as above, but the frozen lower layers [0, s) (s = the lowest
  adapted layer) run once, without gradients, for the chunk (``clf.lower``); only ``clf.upper``
  (layers [s, L) + head) is differentiated. When LoRA adapts only the last layer this skips almost
  the entire backward pass.
* ``OUTER`` (default) — the structure of a linear layer y_t = W x_t (token t): its Jacobian is a
  sum of per-token outer products,

      ∂f_k(x)/∂W = Σ_t δ_{k,t} x_tᵀ,   δ_{k,t} = ∂f_k/∂y_t ∈ R^m,  x_t ∈ R^n

  (Goodfellow, "Efficient per-example gradient computations", 2015; the trick behind Opacus and
  BackPACK). One batched forward of the chunk (truncated as above) records every x_t with a
  forward hook and adds a zero leaf z to every y_t; K batched backward passes of Σ_i f_k(x_i)
  give δ_{k,t} = ∂/∂z_t for all examples at once, because examples in a batch never interact.
  G = Σ_t δ xᵀ is one einsum. The factors (x_t, δ_{k,t}) are also returned
  (:class:`TokenFactors`; tokens whose δ is exactly zero, such as padding or queries the head
  never reads, are dropped): the linearized trainer works on them directly.
  Requires every adapted matrix to be an ``nn.Linear`` called once per tower on per-example
  inputs; otherwise (e.g. DeBERTa-v2 applies ``query_proj`` to shared relative-position
  embeddings too) it raises and ``AUTO`` falls back to ``VMAP_JACREV_TRUNCATED``.
* ``AUTO`` — ``OUTER`` when it applies, else ``VMAP_JACREV_TRUNCATED``.

Memory: a chunk of b examples holds b·K·P Jacobian entries (P = Σ_ℓ m_ℓ n_ℓ) plus the reverse-pass
intermediates of b·K cotangents; :func:`chunk_size_for_budget` chooses b from a user budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from lorank.errors import LorankError, check_number, check_positive_int, parse_choice

#: Default multiplier on K·P·itemsize per example for reverse-pass intermediates (measured on
#: MiniLM: peak/Jacobian bytes ≈ 2-3 for one layer, higher when many layers are differentiated).
DEFAULT_OVERHEAD = 4.0


class JacobianMethod(StrEnum):
    """How per-example Jacobians are computed (all give the same numbers; see module doc)."""

    AUTOGRAD_LOOP = "autograd_loop"
    VMAP_JACREV = "vmap_jacrev"
    VMAP_JACREV_TRUNCATED = "vmap_jacrev_truncated"
    OUTER = "outer"
    AUTO = "auto"

    @classmethod
    def parse(cls, value: str | JacobianMethod) -> JacobianMethod:
        """Accept an enum member or its value (``"vmap_jacrev"``); LorankError otherwise."""
        return parse_choice(cls, value, "Jacobian method")


@dataclass(frozen=True)
class TokenFactors:
    r"""Per-token factors of one adapted matrix's Jacobians: G_i[k] = Σ_{t: ex_t = i} Δ[k,t] X[t]ᵀ.

    Attributes:
        ex: (T,) int64 example index of every kept token (tokens of all towers, in order).
        X: (T, n) the input x_t of the linear layer at that token.
        Delta: (K, T, m) δ_{k,t} = ∂f_k/∂y_t at that token.
    """

    ex: Tensor
    X: Tensor
    Delta: Tensor

    @property
    def T(self) -> int:
        return int(self.X.shape[0])

    def padded(self, N: int) -> tuple[Tensor, Tensor]:
        """Tokens scattered into per-example padded slots: X (N, w, n) and Δ (K, N, w, m), w the
        most tokens of one example (zeros in the unused slots contribute nothing)."""
        K, T, m = self.Delta.shape
        n = self.X.shape[1]
        order = torch.argsort(self.ex, stable=True)
        ex = self.ex[order]
        counts = torch.bincount(ex, minlength=N)
        width = int(counts.max()) if T else 0
        pos = torch.arange(T, device=ex.device) - (torch.cumsum(counts, 0) - counts)[ex]
        Xp = self.X.new_zeros(N, width, n)
        Xp[ex, pos] = self.X[order]
        Dp = self.Delta.new_zeros(K, N, width, m)
        Dp[:, ex, pos] = self.Delta[:, order]
        return Xp, Dp

    def dense(self, N: int) -> Tensor:
        """G of every example: (N, K, m, n) (Σ over each example's tokens of δ ⊗ x), one
        batched matmul over the :meth:`padded` slots — never a (T, K, m, n) intermediate."""
        Xp, Dp = self.padded(N)
        return torch.einsum("kitm,itn->ikmn", Dp, Xp)

    def to(self, dtype: torch.dtype | None = None,
           device: torch.device | str | None = None) -> TokenFactors:
        return TokenFactors(self.ex.to(device=device), self.X.to(device=device, dtype=dtype),
                            self.Delta.to(device=device, dtype=dtype))


def concat_factors(parts: Sequence[TokenFactors]) -> TokenFactors:
    """Token-wise concatenation (``ex`` must already be global example indices)."""
    return TokenFactors(torch.cat([p.ex for p in parts]), torch.cat([p.X for p in parts]),
                        torch.cat([p.Delta for p in parts], dim=1))


@dataclass(frozen=True)
class JacobianChunk:
    """Jacobians of the examples ``index`` (b,) (rows of the caller's inputs, where the chunk's
    examples go in arrays over them): ``G[name]`` (b, K, m, n) and ``f0`` (b, K);
    ``factors[name]`` (example indices relative to the chunk) when the method yields them.
    ``start`` and ``stop`` count the examples done before and after this chunk (progress)."""

    start: int
    stop: int
    index: Tensor
    G: dict[str, Tensor]
    f0: Tensor
    factors: dict[str, TokenFactors] | None = None


class OuterNotApplicable(LorankError):
    """The OUTER method cannot split this classifier's Jacobians into per-example outer products."""


def batch_size_of(inputs: Mapping[str, Any]) -> int:
    """Number of examples in an ``encode`` dict (batch dim first on every tensor)."""
    sizes = {int(v.shape[0]) for v in inputs.values() if isinstance(v, Tensor)}
    if len(sizes) != 1:
        raise LorankError(f"inputs must hold tensors with one common batch size, got {sizes}")
    return sizes.pop()


def map_tensors(inputs: Mapping[str, Any], fn: Callable[[Tensor], Tensor]) -> dict[str, Any]:
    """``fn`` applied to every tensor of an ``encode``/``lower`` dict (e.g. rows of a chunk, a
    move to a device); other entries unchanged."""
    return {k: (fn(v) if isinstance(v, Tensor) else v) for k, v in inputs.items()}


def length_chunks(clf: nn.Module, inputs: Mapping[str, Any], chunk_size: int
                  ) -> Iterator[tuple[Tensor, dict[str, Any]]]:
    """(index, batch) chunks of at most ``chunk_size`` examples in order of length, each batch
    cut to its own longest row (``clf.trim_padding``): a split tokenized to its longest row
    spends most of a chunk's FLOPs on padding otherwise (SST-2, length ≤ 64: 25 real tokens of
    54 on average). Classifiers without ``lengths``/``trim_padding`` keep their order."""
    N = batch_size_of(inputs)
    if hasattr(clf, "lengths") and hasattr(clf, "trim_padding"):
        order = torch.argsort(clf.lengths(inputs), stable=True)
        trim = clf.trim_padding
    else:
        order, trim = torch.arange(N), (lambda batch: batch)
    for lo in range(0, N, chunk_size):
        index = order[lo:lo + chunk_size]
        yield index, trim(map_tensors(inputs, lambda v, index=index: v[index]))


def chunk_size_for_budget(K: int, P: int, itemsize: int, memory_budget_mb: float,
                          overhead: float = DEFAULT_OVERHEAD) -> int:
    """Examples per chunk so that the Jacobian work of a chunk fits ``memory_budget_mb``.

    Estimate: bytes per example = K · P · itemsize · overhead (the K×P Jacobian itself, times
    ``overhead`` for reverse-pass intermediates and the copy made when a chunk is stored).
    Returns max(1, floor(budget / bytes per example)).
    """
    check_number("memory budget (MB)", memory_budget_mb, low=0)
    per_example = K * P * itemsize * overhead
    return max(1, int(memory_budget_mb * 2**20 // per_example))


class UpperCall(nn.Module):
    """``forward(state) = clf.upper(state, start)``: the differentiated part of the classifier
    above the frozen layers [0, start) as a module, so that ``functional_call`` can swap its
    weights (named ``clf.<parameter>``)."""

    def __init__(self, clf: nn.Module, start: int) -> None:
        super().__init__()
        self.clf = clf
        self.start = start

    def forward(self, state: dict[str, Any]) -> Tensor:
        return self.clf.upper(state, self.start)


def _vmap_jacobian(module: nn.Module, prefix: str, params: dict[str, Tensor],
                   batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
    """vmap over examples of jacrev over params of ``module(batch_of_one)[0]`` -> (K,)."""
    tensors = {k: v for k, v in batch.items() if isinstance(v, Tensor)}
    others = {k: v for k, v in batch.items() if not isinstance(v, Tensor)}
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
            out = functional_call(clf, leaves, (map_tensors(batch, lambda v, i=i: v[i:i + 1]),))[0]
            grads = [torch.autograd.grad(out[k], list(leaves.values()), retain_graph=True)
                     for k in range(out.shape[0])]
        rows.append({name: torch.stack([g[j] for g in grads])
                     for j, name in enumerate(leaves)})
        outs.append(out.detach())
    return {n: torch.stack([r[n] for r in rows]) for n in leaves}, torch.stack(outs)


def _linear_modules(clf: nn.Module, params: Mapping[str, Tensor]) -> dict[str, nn.Module]:
    mods = {}
    for name in params:
        mod = clf.get_submodule(name.rsplit(".", 1)[0]) if "." in name else None
        if not isinstance(mod, nn.Linear):
            raise OuterNotApplicable(f"adapted parameter {name!r} is not the weight of an "
                                     "nn.Linear; use the vmap_jacrev_truncated method")
        mods[name] = mod
    return mods


def _outer_jacobian(clf: nn.Module, params: Mapping[str, Tensor], batch: Mapping[str, Any],
                    start: int) -> tuple[dict[str, Tensor], Tensor, dict[str, TokenFactors]]:
    """OUTER method on one chunk: hooks record x_t, zero leaves z_t give δ_{k,t} (module doc)."""
    mods = _linear_modules(clf, params)
    calls: dict[str, list[tuple[Tensor, Tensor]]] = {n: [] for n in params}

    def recorder(name: str) -> Any:
        def hook(_mod: nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor:
            z = torch.zeros_like(out, requires_grad=True)
            calls[name].append((args[0].detach(), z))
            return out + z
        return hook

    b = batch_size_of(batch)
    with torch.no_grad():
        state = clf.lower(batch, start)
    handles = [m.register_forward_hook(recorder(n)) for n, m in mods.items()]
    try:
        with torch.enable_grad():
            out = clf.upper(state, start)
            towers = len(getattr(clf, "towers", ("",)))
            for name, seen in calls.items():
                if len(seen) != towers or any(x.dim() != 3 or x.shape[0] != b for x, _ in seen):
                    raise OuterNotApplicable(
                        f"{name!r} is not applied once per tower to per-example inputs "
                        "(e.g. DeBERTa's shared relative-position projections); use "
                        "vmap_jacrev_truncated")
            zs = [z for seen in calls.values() for _, z in seen]
            K = out.shape[1]
            deltas = [torch.autograd.grad(out[:, k].sum(), zs, retain_graph=k < K - 1,
                                          allow_unused=True) for k in range(K)]
    finally:
        for h in handles:
            h.remove()
    G, factors, j = {}, {}, 0
    for name, seen in calls.items():
        parts = []
        for x, z in seen:
            d = torch.stack([dk[j] if dk[j] is not None else torch.zeros_like(z)
                             for dk in deltas])  # (K, b, T, m)
            j += 1
            G[name] = G.get(name, 0) + torch.einsum("kbtm,btn->bkmn", d, x)
            keep = d.ne(0).any(dim=3).any(dim=0)  # (b, T): tokens with a nonzero δ
            ex = torch.arange(b, device=x.device)[:, None].expand_as(keep)[keep]
            parts.append(TokenFactors(ex, x[keep], d[:, keep]))
        factors[name] = concat_factors(parts)
    return G, out.detach(), factors


def lowest_layer(layers: Sequence[int]) -> int:
    """The first adapted layer s: everything below it is frozen and can run without gradients."""
    if not layers:
        raise LorankError("no adapted matrices selected")
    return min(int(x) for x in layers)


def _one_chunk(clf: nn.Module, W0: dict[str, Tensor], batch: dict[str, Any],
               method: JacobianMethod, start: int
               ) -> tuple[dict[str, Tensor], Tensor, dict[str, TokenFactors] | None]:
    if method is JacobianMethod.OUTER:
        return _outer_jacobian(clf, W0, batch, start)
    if method is JacobianMethod.AUTOGRAD_LOOP:
        return (*_loop_jacobian(clf, W0, batch), None)
    if method is JacobianMethod.VMAP_JACREV:
        return (*_vmap_jacobian(clf, "", W0, batch), None)
    with torch.no_grad():
        state = clf.lower(batch, start)
    return (*_vmap_jacobian(UpperCall(clf, start), "clf.", W0, state), None)


def jacobian_chunks(
    clf: nn.Module,
    inputs: Mapping[str, Any],
    params: Mapping[str, Tensor],
    *,
    start_layer: int = 0,
    method: JacobianMethod | str = JacobianMethod.AUTO,
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
        detached, in the dtype and on the device of the classifier, for the examples
        ``chunk.index``: chunks follow the examples' lengths (:func:`length_chunks`), not their
        order.
    """
    method = JacobianMethod.parse(method)
    check_positive_int("chunk size", chunk_size)
    device = next(clf.parameters()).device
    W0 = {k: v.detach() for k, v in params.items()}
    lo = 0
    for index, rows in length_chunks(clf, inputs, chunk_size):
        hi = lo + len(index)
        batch = map_tensors(rows, lambda v: v.to(device))
        if method is JacobianMethod.AUTO:
            try:
                G, f0, factors = _outer_jacobian(clf, W0, batch, start_layer)
                method = JacobianMethod.OUTER
            except OuterNotApplicable:
                method = JacobianMethod.VMAP_JACREV_TRUNCATED
                G, f0, factors = _one_chunk(clf, W0, batch, method, start_layer)
        else:
            G, f0, factors = _one_chunk(clf, W0, batch, method, start_layer)
        yield JacobianChunk(lo, hi, index.to(device), {k: v.detach() for k, v in G.items()},
                            f0.detach(), factors)
        lo = hi
