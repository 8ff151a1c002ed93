r"""NTK features of a split: the stacked Jacobians J, the initial logits f0, and the NTK Gram.

For N examples, K logits and adapted matrices W_ℓ ∈ R^{m_ℓ×n_ℓ} with P = Σ_ℓ m_ℓ n_ℓ, the features
are J ∈ R^{N×K×P} with J[i, k] = vec(G_1(x_i)[k]) ⊕ … ⊕ vec(G_L(x_i)[k]) (row-major vec of each
∂f_k/∂W_ℓ, matrices concatenated in the order of :attr:`Features.blocks`), f0 = f(x; W0) ∈ R^{N×K}
and the labels. The empirical NTK restricted to the adapted matrices is Θ = J Jᵀ ∈ R^{NK×NK}
(Malladi et al., ICML 2023, "A Kernel-Based View of Language Model Fine-Tuning").
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
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


@dataclass
class Features:
    """NTK features of one split.

    Attributes:
        J: (N, K, P) Jacobians, blocks concatenated along the last axis.
        f0: (N, K) logits at W0.
        labels: (N,) int64 label indices.
        blocks: the adapted matrices, in the order of J's last axis.
        meta: provenance (model, head config, task, split, seed, targets, layers, dtype,
            max_length, code version, seconds); JSON-able.
        factors: per block name, the per-token factors with G_i = Σ_t δ_t x_tᵀ
            (:class:`~lorank.ntk.jacobian.TokenFactors`), when the OUTER method produced J;
            the linearized trainer then never touches J (``lorank.linearized.train``).
    """

    J: Tensor
    f0: Tensor
    labels: Tensor
    blocks: list[Block]
    meta: dict[str, Any] = field(default_factory=dict)
    factors: dict[str, TokenFactors] | None = None

    def __post_init__(self) -> None:
        N, K, P = self.J.shape
        if tuple(self.f0.shape) != (N, K) or tuple(self.labels.shape) != (N,):
            raise LorankError(f"features: f0 {tuple(self.f0.shape)} / labels "
                              f"{tuple(self.labels.shape)} do not match J {(N, K, P)}")
        if sum(b.size for b in self.blocks) != P:
            raise LorankError(f"features: blocks hold {sum(b.size for b in self.blocks)} "
                              f"entries but J has P = {P}")
        if self.factors is not None:
            for b in self.blocks:
                fac = self.factors.get(b.name)
                if fac is None or tuple(fac.X.shape[1:]) != (b.n,) or tuple(
                        fac.Delta.shape[::2]) != (K, b.m) or fac.Delta.shape[1] != fac.T:
                    raise LorankError(f"features: token factors of {b.name!r} do not match "
                                      f"its block ({b.m}x{b.n}, K = {K})")

    @property
    def N(self) -> int:
        return int(self.J.shape[0])

    @property
    def K(self) -> int:
        return int(self.J.shape[1])

    @property
    def P(self) -> int:
        return int(self.J.shape[2])

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
        idx = torch.as_tensor(index, dtype=torch.int64, device=self.J.device).reshape(-1)
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
        return Features(self.J[idx], self.f0[idx], new, list(self.blocks),
                        dict(self.meta, subset=int(idx.numel())), factors)

    def to(self, dtype: torch.dtype | None = None,
           device: torch.device | str | None = None) -> Features:
        """A copy in another dtype / on another device (labels stay int64)."""
        factors = (None if self.factors is None else
                   {k: v.to(dtype, device) for k, v in self.factors.items()})
        return Features(self.J.to(device=device, dtype=dtype), self.f0.to(device=device,
                        dtype=dtype), self.labels.to(device=device), list(self.blocks),
                        dict(self.meta), factors)


def _by_example(fac: TokenFactors) -> TokenFactors:
    """Tokens ordered by example (stable: each example's tokens keep their order), as if the
    chunks had followed the examples' order."""
    order = torch.argsort(fac.ex, stable=True)
    return TokenFactors(fac.ex[order], fac.X[order], fac.Delta[:, order])


def ntk_gram(features: Features) -> Tensor:
    """Empirical NTK Θ = J Jᵀ of shape (N·K, N·K); entry (iK+k, jK+l) = ⟨∂f_k(x_i), ∂f_l(x_j)⟩."""
    J = features.flat()
    return J @ J.T


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
    allocated once in the classifier's dtype.

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
    J = torch.empty(N, K, P, dtype=ref.dtype, device=ref.device)
    offsets, pos = [], 0
    for b in blocks:
        offsets.append((pos, pos + b.size))
        pos += b.size
    f0 = torch.empty(N, K, dtype=ref.dtype, device=ref.device)
    t0 = time.perf_counter()
    start = lowest_layer([b.layer for b in blocks])
    parts: dict[str, list[TokenFactors]] | None = {b.name: [] for b in blocks}
    used = JacobianMethod.parse(method)
    for part in jacobian_chunks(clf, inputs, params, start_layer=start, method=method,
                                chunk_size=chunk):
        rows = part.rows
        for b, (lo, hi) in zip(blocks, offsets, strict=True):  # one copy, no torch.cat
            J[rows, :, lo:hi] = part.G[b.name].flatten(2)
        f0[rows] = part.f0
        if part.factors is None:
            parts = None
        elif parts is not None:
            for b in blocks:
                fac = part.factors[b.name]
                ex = (fac.ex + part.start if part.index is None
                      else part.index.to(fac.ex.device)[fac.ex])
                parts[b.name].append(TokenFactors(ex, fac.X, fac.Delta))
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
