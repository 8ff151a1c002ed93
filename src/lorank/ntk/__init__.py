"""NTK features: per-example Jacobians of a classifier w.r.t. its LoRA-adapted matrices.

* :mod:`lorank.ntk.jacobian` — :class:`JacobianMethod` (autograd loop, vmap+jacrev, truncated),
  chunked by a memory budget.
* :mod:`lorank.ntk.features` — :class:`Features` (J or token factors, f0, labels, blocks, meta;
  the NTK Gram ``Features.gram()``).
* :mod:`lorank.ntk.cache` — atomic, checksummed safetensors cache keyed by model/head/task/split.
* :mod:`lorank.ntk.stream` — linearized predictions on large splits, Jacobians streamed.
* :mod:`lorank.ntk.pipeline` — :func:`split_features`: a data split's features via the cache.

Imports torch (unlike :mod:`lorank.theory`).
"""

from lorank.ntk.cache import (
    CorruptCacheError,
    cache_path,
    cached_features,
    feature_key,
    load_features,
    save_features,
)
from lorank.ntk.features import (
    FEATURE_CODE_VERSION,
    Block,
    Features,
    blocks_of,
    compute_features,
)
from lorank.ntk.jacobian import JacobianMethod, chunk_size_for_budget, jacobian_chunks
from lorank.ntk.pipeline import split_features
from lorank.ntk.stream import stream_linearized_logits

__all__ = [
    "FEATURE_CODE_VERSION",
    "Block",
    "CorruptCacheError",
    "Features",
    "JacobianMethod",
    "blocks_of",
    "cache_path",
    "cached_features",
    "chunk_size_for_budget",
    "compute_features",
    "feature_key",
    "jacobian_chunks",
    "load_features",
    "save_features",
    "split_features",
    "stream_linearized_logits",
]
