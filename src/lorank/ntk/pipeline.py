"""Features of a data split, through the cache: the one call the CLI and experiments use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from lorank.ntk.cache import cached_features, feature_key
from lorank.ntk.features import Features, compute_features
from lorank.ntk.jacobian import JacobianMethod


def split_features(
    clf: nn.Module,
    split: Any,
    *,
    targets: Sequence[str] | None = ("query", "value"),
    layers: str | Sequence[int] | None = "last",
    max_length: int = 128,
    method: JacobianMethod | str = JacobianMethod.AUTO,
    memory_budget_mb: float = 1024.0,
    k: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    cache_root: str | Path | None = None,
) -> tuple[Features, Path | None, bool]:
    """NTK features J (N, K, P), f0, labels of a ``lorank.data`` Split, cached on disk.

    The cache key (:func:`lorank.ntk.cache.feature_key`) covers model, head, task, split
    name and contents, targets, layers, dtype, max_length and the feature-code version — not
    k or seed, so equal test splits of different data seeds share one file; the Jacobian
    method is not part of it (all methods give the same numbers).

    Returns:
        (features, cache file or None, whether it was a cache hit).
    """
    key = feature_key(clf, split, targets=targets, layers=layers, max_length=max_length,
                      k=k, seed=seed)

    def build() -> Features:
        inputs = clf.encode(split, max_length=max_length)
        meta = {"model": key["model"], "head": key["head"], "task": key["task"],
                "split": split.name, "k": k, "seed": seed, "targets": key["targets"],
                "layers": key["layers"], "max_length": max_length}
        return compute_features(clf, inputs, split.labels, targets=targets, layers=layers,
                                method=method, memory_budget_mb=memory_budget_mb, meta=meta)

    feats, path, hit = cached_features(key, build, root=cache_root, use_cache=use_cache)
    if hit and (feats.meta.get("k"), feats.meta.get("seed")) != (k, seed):
        feats.meta.update(k=k, seed=seed, cached_from_seed=feats.meta.get("seed"))
    return feats, path, hit
