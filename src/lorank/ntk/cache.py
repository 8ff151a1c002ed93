"""On-disk cache of NTK features (safetensors), keyed by everything that determines the numbers.

A feature file ``<cache root>/features/<hash[:2]>/<hash>.safetensors`` holds the tensors ``J``
(N, K, P), ``f0`` (N, K) and ``labels`` (N,) — or, when the OUTER Jacobian method produced them,
the per-token factors ``ex.i``, ``X.i``, ``Delta.i`` of block i *instead of* J (J is rebuilt
from them on load, G_i = Σ_t δ_t x_tᵀ, unless it exceeds
:func:`~lorank.ntk.features.holds_dense`: an order of magnitude smaller files, e.g. 38.5 MB of
factors against 432 MB of J for MiniLM all-layer q,v on 32 SST-2 prompts). Its safetensors
metadata holds the JSON of the cache key, the provenance (:attr:`Features.meta`), the blocks, and
a manifest {tensor: shape, dtype, sha256 of the bytes}. Files are written to a temporary name in
the same folder and moved into place with ``os.replace``, so a reader sees either nothing or a
whole file. On load, the header, the key, every shape/dtype and every checksum are verified; a
truncated or corrupted file is reported, deleted and rebuilt — never silently used.

The key (:func:`feature_key`) covers: the model (name, resolved path, a hash of its config and of
its weight files' sizes/mtimes), the classifier's ``config_dict()`` (head and its fitted numbers),
the task fingerprint, the split (name, k, seed and a hash of its texts and labels), targets,
layers, dtype, max_length and :data:`~lorank.ntk.features.FEATURE_CODE_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from lorank.errors import LorankError
from lorank.models.lower_cache import tensor_bytes
from lorank.ntk.features import FEATURE_CODE_VERSION, Block, Features, holds_dense
from lorank.ntk.jacobian import TokenFactors

log = logging.getLogger(__name__)
_TENSORS = ("f0", "labels")


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def tensor_sha256(t: Tensor) -> str:
    """sha256 of a tensor's raw bytes (C order)."""
    return hashlib.sha256(tensor_bytes(t)).hexdigest()


def model_fingerprint(model: Any) -> dict[str, Any]:
    """Identity of a Hugging Face model: name/path, config hash, weight files' sizes and mtimes."""
    path = str(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", ""))
    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    files: dict[str, list[float]] = {}
    folder = Path(path)
    if folder.is_dir():
        for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
            st = f.stat()
            files[f.name] = [st.st_size, st.st_mtime]
    return {"path": str(folder.resolve()) if folder.exists() else path,
            "config_sha256": _sha(config), "weights": files}


def split_fingerprint(split: Any) -> str:
    """sha256 of a split's texts and labels (any object with text_a, text_b, labels)."""
    h = hashlib.sha256()
    for part in (split.text_a, split.text_b or ()):
        for text in part:
            h.update(text.encode())
            h.update(b"\x00")
        h.update(b"\x01")
    h.update(bytes(str([int(x) for x in split.labels]), "ascii"))
    return h.hexdigest()


def feature_key(clf: Any, split: Any, *, targets: Any, layers: Any, max_length: int,
                k: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """The JSON-able cache key of a classifier's features on a split (see module doc).

    The split enters by its name and the sha256 of its texts and labels only: ``k`` and ``seed``
    (accepted for the callers' provenance) are not part of the key, so a split whose contents do
    not change across data seeds — the test split of every LM-BFF seed — is computed once.
    """
    dtype = str(next(clf.parameters()).dtype).replace("torch.", "")
    task = getattr(clf, "task", None)
    return {
        "model": getattr(clf, "encoder_name", None),
        "model_id": model_fingerprint(clf.model),
        "head": clf.config_dict(),
        "task": getattr(task, "name", None),
        "task_fingerprint": getattr(task, "fingerprint", None),
        "split": split.name, "split_sha256": split_fingerprint(split),
        "targets": list(targets) if targets is not None else None,
        "layers": layers if isinstance(layers, str) or layers is None else [int(x) for x in layers],
        "dtype": dtype, "max_length": int(max_length),
        "code_version": FEATURE_CODE_VERSION,
    }


def cache_path(key: Mapping[str, Any], root: str | Path | None = None) -> Path:
    """Where the features of ``key`` live: ``<root>/features/<h[:2]>/<h>.safetensors``."""
    if root is None:
        from lorank.models.bundled import cache_dir

        root = cache_dir()
    digest = _sha(dict(key))
    return Path(root) / "features" / digest[:2] / f"{digest}.safetensors"


def save_features(path: str | Path, features: Features, key: Mapping[str, Any]) -> Path:
    """Write features + key + manifest atomically (temporary file, fsync, os.replace)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"f0": features.f0, "labels": features.labels}
    if features.factors is None:
        tensors["J"] = features.J
    for i, b in enumerate(features.blocks if features.factors is not None else ()):
        fac = features.factors[b.name]
        tensors.update({f"ex.{i}": fac.ex, f"X.{i}": fac.X, f"Delta.{i}": fac.Delta})
    tensors = {n: t.detach().contiguous().cpu() for n, t in tensors.items()}
    manifest = {n: {"shape": list(t.shape), "dtype": str(t.dtype), "sha256": tensor_sha256(t)}
                for n, t in tensors.items()}
    metadata = {
        "lorank_key": json.dumps(dict(key), sort_keys=True, default=str),
        "lorank_meta": json.dumps(features.meta, sort_keys=True, default=str),
        "lorank_blocks": json.dumps([b.__dict__ for b in features.blocks]),
        "lorank_manifest": json.dumps(manifest, sort_keys=True),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class CorruptCacheError(LorankError):
    """A feature file failed verification (unreadable header, shape or checksum mismatch)."""


def load_features(path: str | Path, key: Mapping[str, Any] | None = None) -> Features:
    """Read and fully verify a feature file; CorruptCacheError if anything does not match.

    Checks: the safetensors header parses; the stored key equals ``key`` (when given); every
    tensor's shape, dtype and sha256 equal the manifest.
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            manifest = json.loads(metadata["lorank_manifest"])
            tensors = {n: fh.get_tensor(n) for n in sorted(set(_TENSORS) | set(manifest))}
        stored_key = json.loads(metadata["lorank_key"])
        meta = json.loads(metadata["lorank_meta"])
        blocks = [Block(**b) for b in json.loads(metadata["lorank_blocks"])]
    except Exception as exc:  # any parse failure means the file cannot be trusted
        raise CorruptCacheError(f"feature cache file {path} is unreadable ({type(exc).__name__})"
                                ) from None
    if key is not None and stored_key != json.loads(json.dumps(dict(key), sort_keys=True,
                                                               default=str)):
        raise CorruptCacheError(f"feature cache file {path} holds a different key")
    for name, t in tensors.items():
        want = manifest.get(name, {})
        if (want.get("shape") != list(t.shape) or want.get("dtype") != str(t.dtype)
                or want.get("sha256") != tensor_sha256(t)):
            raise CorruptCacheError(f"feature cache file {path}: tensor {name!r} fails its "
                                    "shape/dtype/checksum check")
    factors = None
    try:
        if "J" not in tensors:
            factors = {b.name: TokenFactors(tensors[f"ex.{i}"], tensors[f"X.{i}"],
                                            tensors[f"Delta.{i}"]) for i, b in enumerate(blocks)}
        features = Features(tensors.get("J"), tensors["f0"], tensors["labels"], blocks, meta,
                            factors)
        if holds_dense(features.N, features.K, features.P, features.f0.element_size()):
            features.J  # noqa: B018 — small enough: rebuilt from the factors, as computed
        return features
    except (LorankError, KeyError, IndexError, RuntimeError) as exc:
        raise CorruptCacheError(f"feature cache file {path} is inconsistent ({exc})") from None


def cached_features(key: Mapping[str, Any], build: Callable[[], Features], *,
                    root: str | Path | None = None, use_cache: bool = True
                    ) -> tuple[Features, Path | None, bool]:
    """Load the features of ``key`` from the cache, or ``build()`` and store them.

    A file that fails verification is logged, deleted and rebuilt. Returns
    (features, path or None when ``use_cache`` is False, hit: whether the cache was used).
    """
    if not use_cache:
        return build(), None, False
    path = cache_path(key, root)
    if path.exists():
        try:
            return load_features(path, key), path, True
        except CorruptCacheError as exc:
            log.warning("%s; rebuilding", exc)
            path.unlink(missing_ok=True)
    features = build()
    save_features(path, features, key)
    return features, path, False
