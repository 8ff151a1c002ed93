"""lorank — which LoRA rank do I need?

Rank-threshold theory you can compute (:mod:`lorank.theory`) and NTK-regime experiments you can
run (:mod:`lorank.ntk`, :mod:`lorank.linearized`, :mod:`lorank.finetune`).
Heavy submodules (torch, transformers, peft) are imported lazily so that ``import lorank`` and
``import lorank.theory`` stay light.

>>> import lorank
>>> config, why = lorank.recommend("minilm", "sst2", layers="last")   # a peft.LoraConfig
"""

from __future__ import annotations

from typing import Any

from lorank.errors import LorankError

__version__ = "0.1.0"
__all__ = ["LorankError", "Recommendation", "__version__", "recommend"]


def __getattr__(name: str) -> Any:
    """Lazy re-exports: ``lorank.recommend`` and ``lorank.Recommendation`` (import peft on use)."""
    if name in ("recommend", "Recommendation"):
        import importlib

        module = importlib.import_module("lorank.recommend")
        # importing the submodule bound ``lorank.recommend`` to the module: rebind the function
        globals().update(recommend=module.recommend, Recommendation=module.Recommendation)
        return globals()[name]
    raise AttributeError(f"module 'lorank' has no attribute {name!r}")
