"""Encoders, their LoRA targets and layer structure, and classification heads.

:mod:`lorank.models.arch` (architecture registry, adapted-matrix shapes from a config) and
:mod:`lorank.models.bundled` (bundled encoders, offline-first configs) import no torch;
``load_encoder`` and ``build_classifier`` are imported lazily from here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HEADS", "Classifier", "Encoder", "build_classifier", "load_encoder"]

_LAZY = {"load_encoder": "encoder", "Encoder": "encoder", "build_classifier": "factory",
         "HEADS": "factory", "Classifier": "classifier"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"lorank.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'lorank.models' has no attribute {name!r}")
