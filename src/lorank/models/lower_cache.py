"""Reuse the frozen bottom of the network, ``Classifier.lower(x, s)``, across classifiers and calls.

Linearized test predictions stream the test split through the encoder once per classifier: once
per data seed for the pair head (its head is fitted per seed) and once per seed group in a sweep.
Below the lowest adapted layer s nothing depends on the seed: state_s = blocks_{<s}(embed(x)) is a
function of the encoder weights W0 and the tokens only. Inside :func:`reuse_lower_states`,
``Classifier.lower`` looks state_s up by

    (fingerprint of the encoder weights, towers, s, fingerprint of the input tensors)

and stores what it computes in a process-wide LRU bounded in bytes, so the second and later
seeds pay only the upper layers (measured on MiniLM SST-2, last layer q,v: the lower five layers
are ~45 % of a streamed test evaluation). The weights fingerprint (BLAKE2b over every tensor of
the encoder) is taken anew in every ``with`` block, so weights changed between blocks (a
fine-tuning step) can never be served a stale state; inside a block the weights must stay frozen,
which is what the linearized (NTK) regime means. Outside a block ``lower`` computes as usual.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

State = dict[str, torch.Tensor]

#: default byte budget of the process-wide cache (the test split of one task at s = L−1 on
#: MiniLM: 80–200 MB).
DEFAULT_MAX_MB = 512.0


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of a tensor (C order; empty for an empty tensor), without a copy when it is
    contiguous on the CPU. Also what :func:`lorank.ntk.cache.tensor_sha256` hashes."""
    return memoryview(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy())


def _digest(items: Iterator[tuple[str, torch.Tensor]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name, t in items:
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


def weights_fingerprint(module: nn.Module) -> str:
    """BLAKE2b of every parameter and buffer of ``module`` (names, dtypes, shapes, bytes)."""
    return _digest(iter(module.state_dict(keep_vars=False).items()))


def inputs_fingerprint(inputs: Mapping[str, object]) -> str:
    """BLAKE2b of the tensors of an input dict (other values by their repr)."""
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(inputs):
        v = inputs[k]
        if isinstance(v, torch.Tensor):
            h.update(_digest(iter([(k, v)])).encode())
        else:
            h.update(f"{k}={v!r}".encode())
    return h.hexdigest()


def state_nbytes(state: Mapping[str, object]) -> int:
    """Bytes held by the tensors of a state dict."""
    return sum(v.numel() * v.element_size() for v in state.values()
               if isinstance(v, torch.Tensor))


class LowerCache:
    """An LRU of lower states bounded by ``max_bytes``; counts hits and misses."""

    def __init__(self, max_mb: float = DEFAULT_MAX_MB) -> None:
        self.entries: OrderedDict[tuple, State] = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = 0
        self.resize(max_mb)

    def resize(self, max_mb: float) -> None:
        """Set the byte budget (evicting the least recently used states over it)."""
        if not max_mb >= 0:
            raise ValueError(f"max_mb must be >= 0, got {max_mb!r}")
        self.max_bytes = int(max_mb * 2**20)
        self._evict()

    def _evict(self) -> None:
        while self.entries and self.nbytes > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.nbytes -= state_nbytes(old)

    def get(self, key: tuple) -> State | None:
        state = self.entries.get(key)
        if state is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return state

    def put(self, key: tuple, state: State) -> None:
        size = state_nbytes(state)
        if size > self.max_bytes or key in self.entries:
            return
        self.entries[key] = state
        self.nbytes += size
        self._evict()

    def clear(self) -> None:
        """Drop every state and reset the counters."""
        self.entries.clear()
        self.nbytes = self.hits = self.misses = 0


CACHE = LowerCache()
#: inside a block: id(encoder) -> (encoder, weights fingerprint); the reference keeps the id
#: from being reused by another module while the block lasts.
_active: dict[int, tuple[nn.Module, str]] | None = None


@contextmanager
def reuse_lower_states(max_mb: float = DEFAULT_MAX_MB) -> Iterator[LowerCache]:
    """Within the block, ``Classifier.lower`` reuses states of frozen encoders (module doc).
    Nested blocks share the outer block's fingerprints. Yields the process-wide cache."""
    global _active
    outer = _active
    CACHE.resize(max_mb)
    if outer is None:
        _active = {}
    try:
        yield CACHE
    finally:
        if outer is None:
            _active = None


def cached_lower(encoder: nn.Module, towers: tuple[str, ...], inputs: Mapping[str, object],
                 start: int, compute: Callable[[], State]) -> State:
    """``compute()`` (the state at layer ``start`` of ``encoder``, the module holding the frozen
    weights), through the cache inside
    :func:`reuse_lower_states`; always returns a fresh dict (the cached tensors are shared and
    must not be modified in place — no lorank code does)."""
    if _active is None:
        return compute()
    if id(encoder) not in _active:
        _active[id(encoder)] = (encoder, weights_fingerprint(encoder))
    key = (_active[id(encoder)][1], towers, int(start), inputs_fingerprint(inputs))
    state = CACHE.get(key)
    if state is None:
        state = compute()
        CACHE.put(key, state)
    return dict(state)
