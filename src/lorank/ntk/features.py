r"""NTK features of a split: the stacked Jacobians J, the initial logits f0, and the NTK Gram.

For N examples, K logits and adapted matrices W_ℓ ∈ R^{m_ℓ×n_ℓ} with P = Σ_ℓ m_ℓ n_ℓ, the features
are J ∈ R^{N×K×P} with J[i, k] = vec(G_1(x_i)[k]) ⊕ … ⊕ vec(G_L(x_i)[k]) (row-major vec of each
∂f_k/∂W_ℓ, matrices concatenated in the order of :attr:`Features.blocks`), f0 = f(x; W0) ∈ R^{N×K}
and the labels. The empirical NTK restricted to the adapted matrices is Θ = J Jᵀ ∈ R^{NK×NK}
(Malladi et al., ICML 2023, "A Kernel-Based View of Language Model Fine-Tuning").
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lorank.errors import LorankError
from lorank.ntk.jacobian import (
    DEFAULT_OVERHEAD,
    JacobianMethod,
    TokenFactors,
    batch_size_of,
    chunk_size_for_budget,
    concat_factors,
    jacobian_chunks,
    lowest_layer,
)

#: Bump whenever the numbers a feature file holds would change (part of every cache key).
#: 2: files also hold the per-token factors of the OUTER method.
#: 3: chunks follow the examples' lengths and are cut to their longest row (round-off changes).
FEATURE_CODE_VERSION = "3"


@dataclass(frozen=True)
class Block:
    """One adapted matrix inside J: classifier parameter ``name``, its layer/target, (m, n)."""

    name: str
    layer: int
    target: str
    m: int
    n: int

    @property
    def size(self) -> int:
        return self.m * self.n


def block_offsets(blocks: Sequence[Block]) -> list[tuple[int, int]]:
    """[start, stop) of every block along J's last axis (blocks concatenated in order)."""
    out, pos = [], 0
    for b in blocks:
        out.append((pos, pos + b.size))
        pos += b.size
    return out


def blocks_of(clf: nn.Module, targets: Sequence[str] | None,
              layers: str | Sequence[int] | None) -> list[Block]:
    """The adapted matrices of a classifier as :class:`Block` s (names of ``clf`` parameters)."""
    matrices = clf.adapted_matrices(targets, layers)
    return [Block(clf.param_name(a), int(a.layer), str(a.target), int(a.m), int(a.n))
            for a in matrices]


#: J above this many MiB is not held when the per-token factors are: the features keep only the
#: factors and reach J through :meth:`Features.apply`, :meth:`Features.apply_T` and
#: :meth:`Features.gram`, column slice by column slice (MNLI at 512 shots per class, MiniLM
#: last-layer q,v: J of train + dev is 2 x 5.4 GB, its factors 2 x 0.6 GB).
DENSE_J_MAX_MB = 4096.0

#: Column slices of J built from the factors hold at most this many MiB each.
SLICE_MB = 256.0


def holds_dense(N: int, K: int, P: int, element_size: int) -> bool:
    """Whether features of this size keep the dense J (N, K, P) next to their token factors
    (at most :data:`DENSE_J_MAX_MB`)."""
    return N * K * P * element_size <= DENSE_J_MAX_MB * 2**20


@dataclass
class Features:
    """NTK features of one split.

    Attributes:
        stored_J: (N, K, P) Jacobians, blocks concatenated along the last axis, or None when
            only the per-token ``factors`` are held (J above :data:`DENSE_J_MAX_MB`); the
            property :attr:`J` then builds and keeps the dense J on first use, while
            :meth:`apply`, :meth:`apply_T` and :meth:`gram` never hold more than a column slice.
        f0: (N, K) logits at W0.
        labels: (N,) int64 label indices.
        blocks: the adapted matrices, in the order of J's last axis.
        meta: provenance (model, head config, task, split, seed, targets, layers, dtype,
            max_length, code version, seconds); JSON-able.
        factors: per block name, the per-token factors with G_i = Σ_t δ_t x_tᵀ
            (:class:`~lorank.ntk.jacobian.TokenFactors`), when the OUTER method produced J;
            the linearized trainer then never touches J (``lorank.linearized.train``).
    """

    stored_J: Tensor | None
    f0: Tensor
    labels: Tensor
    blocks: list[Block]
    meta: dict[str, Any] = field(default_factory=dict)
    factors: dict[str, TokenFactors] | None = None
    _gram: Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        P = sum(b.size for b in self.blocks)
        if self.stored_J is not None:
            N, K, P_J = self.stored_J.shape
        elif self.factors is not None and self.f0.dim() == 2:
            (N, K), P_J = self.f0.shape, P
        else:
            raise LorankError("features: neither J nor per-token factors with (N, K) logits "
                              "were given")
        if tuple(self.f0.shape) != (N, K) or tuple(self.labels.shape) != (N,):
            raise LorankError(f"features: f0 {tuple(self.f0.shape)} / labels "
                              f"{tuple(self.labels.shape)} do not match J {(N, K, P_J)}")
        if P_J != P:
            raise LorankError(f"features: blocks hold {P} entries but J has P = {P_J}")
        if self.factors is not None:
            for b in self.blocks:
                fac = self.factors.get(b.name)
                if fac is None or tuple(fac.X.shape[1:]) != (b.n,) or tuple(
                        fac.Delta.shape[::2]) != (K, b.m) or fac.Delta.shape[1] != fac.T:
                    raise LorankError(f"features: token factors of {b.name!r} do not match "
                                      f"its block ({b.m}x{b.n}, K = {K})")

    @property
    def J(self) -> Tensor:
        """(N, K, P) Jacobians; built from the factors (and kept) on first use if not held."""
        if self.stored_J is None:
            self.stored_J = torch.cat([self.factors[b.name].dense(self.N).flatten(2)
                                       for b in self.blocks], -1)
        return self.stored_J

    def column_slices(self, max_mb: float | None = None) -> Iterator[tuple[int, int, Tensor]]:
        """(lo, hi, J[:, :, lo:hi]) covering P: the held J in one piece, or slices of at most
        ``max_mb`` built from the factors (rows m0:m1 of one block: Σ_t δ_t[m0:m1] x_tᵀ)."""
        if self.stored_J is not None:
            yield 0, self.P, self.stored_J
            return
        N, K = self.N, self.K
        for b, (lo, _) in zip(self.blocks, self.offsets(), strict=True):
            Xp, Dp = self.factors[b.name].padded(N)  # (N, w, n), (K, N, w, m)
            budget = (SLICE_MB if max_mb is None else max_mb) * 2**20
            step = max(1, int(budget // (N * K * b.n * self.f0.element_size())))
            for m0 in range(0, b.m, step):
                m1 = min(b.m, m0 + step)
                part = torch.einsum("kitm,itn->ikmn", Dp[..., m0:m1], Xp)
                yield lo + m0 * b.n, lo + m1 * b.n, part.flatten(2)

    def apply(self, D: Tensor) -> Tensor:
        """J @ D: D (P,) or (P, C) → (N, K) or (N, K, C), in D's dtype."""
        if self.stored_J is not None:
            return self.stored_J @ D
        out = None
        for lo, hi, part in self.column_slices():
            term = part.to(D.dtype) @ D[lo:hi]
            out = term if out is None else out.add_(term)
        return out

    def apply_T(self, E: Tensor) -> Tensor:
        """Jᵀ E: E (N, K) or (N, K, C) → (P,) or (P, C), in E's dtype."""
        rows = E.reshape(self.N * self.K, -1)
        parts = [part.reshape(self.N * self.K, -1).to(E.dtype).T @ rows
                 for _, _, part in self.column_slices()]
        out = torch.cat(parts)
        return out[:, 0] if E.dim() == 2 else out

    def gram(self) -> Tensor:
        """Θ = J Jᵀ (N·K, N·K) in float64; entry (iK+k, jK+l) = ⟨∂f_k(x_i), ∂f_l(x_j)⟩
        (Malladi et al., 2023). Kept when only factors are held (building it is the expensive
        part: the kernel step and the kernel baselines of one split share it)."""
        if self._gram is not None:
            return self._gram
        theta = None
        for _, _, part in self.column_slices():
            phi = part.reshape(self.N * self.K, -1).to(torch.float64)
            theta = phi @ phi.T if theta is None else theta.addmm_(phi, phi.T)
        if self.stored_J is None:
            self._gram = theta
        return theta

    @property
    def N(self) -> int:
        return int(self.f0.shape[0])

    @property
    def K(self) -> int:
        return int(self.f0.shape[1])

    @property
    def P(self) -> int:
        return sum(b.size for b in self.blocks)

    def offsets(self) -> list[tuple[int, int]]:
        """[start, stop) of every block along J's last axis."""
        return block_offsets(self.blocks)

    @property
    def G(self) -> dict[str, Tensor]:
        """Per-matrix views G[name] of shape (N, K, m, n) (no copy is made when J is contiguous)."""
        return {b.name: self.J[:, :, lo:hi].unflatten(-1, (b.m, b.n))
                for b, (lo, hi) in zip(self.blocks, self.offsets(), strict=True)}

    def flat(self) -> Tensor:
        """J reshaped to (N·K, P); row i·K + k is example i, logit k."""
        return self.J.reshape(self.N * self.K, self.P)

    def subset(self, index: Sequence[int] | Tensor, labels: Tensor | None = None) -> Features:
        """The features of examples ``index`` (in that order), optionally with other labels.

        J, f0 and labels are indexed (a copy); token factors keep the tokens of the chosen
        examples, renumbered. ``labels`` (len(index),) replaces the split's labels (e.g. a
        teacher's, :mod:`lorank.linearized.planted`)."""
        idx = torch.as_tensor(index, dtype=torch.int64, device=self.f0.device).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.N):
            raise LorankError(f"features subset: indices must be in 0..{self.N - 1}")
        new = self.labels[idx] if labels is None else torch.as_tensor(labels).reshape(-1).to(
            self.labels)
        factors = None
        if self.factors is not None:
            pos = torch.full((self.N,), -1, dtype=torch.int64, device=idx.device)
            pos[idx] = torch.arange(idx.numel(), device=idx.device)
            factors = {}
            for name, fac in self.factors.items():
                where = pos[fac.ex.to(idx.device)]
                keep = where >= 0
                order = torch.argsort(where[keep], stable=True)
                factors[name] = TokenFactors(where[keep][order], fac.X[keep][order],
                                             fac.Delta[:, keep][:, order])
        J = None if self.stored_J is None else self.stored_J[idx]
        return Features(J, self.f0[idx], new, list(self.blocks),
                        dict(self.meta, subset=int(idx.numel())), factors)

    def to(self, dtype: torch.dtype | None = None,
           device: torch.device | str | None = None) -> Features:
        """A copy in another dtype / on another device (labels stay int64)."""
        factors = (None if self.factors is None else
                   {k: v.to(dtype, device) for k, v in self.factors.items()})
        J = None if self.stored_J is None else self.stored_J.to(device=device, dtype=dtype)
        return Features(J, self.f0.to(device=device,
                        dtype=dtype), self.labels.to(device=device), list(self.blocks),
                        dict(self.meta), factors)


def _by_example(fac: TokenFactors) -> TokenFactors:
    """Tokens ordered by example (stable: each example's tokens keep their order), as if the
    chunks had followed the examples' order."""
    order = torch.argsort(fac.ex, stable=True)
    return TokenFactors(fac.ex[order], fac.X[order], fac.Delta[:, order])


def compute_features(
    clf: nn.Module,
    inputs: Mapping[str, Any],
    labels: Sequence[int] | Tensor,
    *,
    targets: Sequence[str] | None = None,
    layers: str | Sequence[int] | None = "all",
    method: JacobianMethod | str = JacobianMethod.AUTO,
    memory_budget_mb: float = 1024.0,
    overhead: float = DEFAULT_OVERHEAD,
    meta: Mapping[str, Any] | None = None,
) -> Features:
    """Jacobian features of ``inputs`` w.r.t. the adapted matrices, computed chunk by chunk.

    J[i, k] = vec(∂f_k(x_i; W0)/∂W_ℓ) over the adapted matrices (targets × layers). The chunk
    size is chosen so that a chunk's Jacobian work fits ``memory_budget_mb``
    (:func:`~lorank.ntk.jacobian.chunk_size_for_budget`); the result J (N·K·P entries) is
    allocated once in the classifier's dtype — unless the OUTER method yields per-token
    factors and J would exceed :data:`DENSE_J_MAX_MB`: then only the factors are kept.

    Returns:
        :class:`Features` with J (N, K, P), f0 (N, K), labels (N,), and the per-token
        ``factors`` when the OUTER method ran (``auto`` picks it whenever it applies).
    """
    blocks = blocks_of(clf, targets, layers)
    params = clf.adapted_parameters(targets, layers)
    missing = [b.name for b in blocks if b.name not in params]
    if missing:
        raise LorankError(f"classifier has no adapted parameter named {missing[0]!r}")
    params = {b.name: params[b.name] for b in blocks}
    N, K, P = batch_size_of(inputs), int(clf.K), sum(b.size for b in blocks)
    ref = next(iter(params.values()))
    labels_t = torch.as_tensor(np.array(labels, dtype=np.int64)).reshape(-1)
    if labels_t.numel() != N:
        raise LorankError(f"{labels_t.numel()} labels for {N} examples")
    chunk = chunk_size_for_budget(K, P, ref.element_size(), memory_budget_mb, overhead)
    dense = holds_dense(N, K, P, ref.element_size())
    J: Tensor | None = None
    offsets = block_offsets(blocks)
    f0 = torch.empty(N, K, dtype=ref.dtype, device=ref.device)
    t0 = time.perf_counter()
    start = lowest_layer([b.layer for b in blocks])
    parts: dict[str, list[TokenFactors]] | None = {b.name: [] for b in blocks}
    for part in jacobian_chunks(clf, inputs, params, start_layer=start, method=method,
                                chunk_size=chunk):
        rows = part.index
        if part.factors is None:
            parts = None
        if parts is None or dense:  # with factors, J only when it is not too big
            if J is None and part.start > 0:
                raise LorankError("the Jacobian method yielded per-token factors for some "
                                  "chunks only")
            if J is None:
                J = torch.empty(N, K, P, dtype=ref.dtype, device=ref.device)
            for b, (lo, hi) in zip(blocks, offsets, strict=True):  # one copy, no torch.cat
                J[rows, :, lo:hi] = part.G[b.name].flatten(2)
        f0[rows] = part.f0
        if parts is not None:
            for b in blocks:
                fac = part.factors[b.name]
                parts[b.name].append(TokenFactors(rows.to(fac.ex.device)[fac.ex], fac.X,
                                                  fac.Delta))
    if J is None and parts is None:  # no examples at all
        J = torch.empty(N, K, P, dtype=ref.dtype, device=ref.device)
    factors = None if parts is None else {k: _by_example(concat_factors(v))
                                          for k, v in parts.items()}
    used = JacobianMethod.parse(method)
    if used is JacobianMethod.AUTO:  # what auto resolved to: only OUTER yields factors
        used = JacobianMethod.OUTER if factors is not None else \
            JacobianMethod.VMAP_JACREV_TRUNCATED
    info = dict(meta or {})
    info.update(method=used.value, chunk_size=chunk,
                seconds=time.perf_counter() - t0, dtype=str(ref.dtype).replace("torch.", ""),
                code_version=FEATURE_CODE_VERSION)
    return Features(J, f0, labels_t.to(ref.device), blocks, info, factors)
