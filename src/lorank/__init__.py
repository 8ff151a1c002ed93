"""lorank — which LoRA rank do I need?

Rank-threshold theory you can compute (:mod:`lorank.theory`) and NTK-regime experiments you can
run (:mod:`lorank.ntk`, :mod:`lorank.linearized`, :mod:`lorank.finetune`).
Heavy submodules (torch, transformers) are imported lazily so that ``import lorank`` and
``import lorank.theory`` stay light.
"""

from __future__ import annotations

from lorank.errors import LorankError

__version__ = "0.1.0"
__all__ = ["LorankError", "__version__"]
