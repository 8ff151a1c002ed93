"""Load a pretrained encoder offline-first: bundled short name, local folder, then the hub.

:func:`load_encoder` returns an :class:`Encoder`: the Hugging Face *base* model (``BertModel``,
``MPNetModel``, ...) in eval mode with dropout off and eager attention (the only attention that
``torch.func.vmap``/``jvp`` handle on CPU), its tokenizer, config and :class:`ArchSpec`.
Safety: ``trust_remote_code`` is never enabled and weights are read from safetensors only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lorank.errors import LorankError
from lorank.models.arch import ArchSpec, arch_spec
from lorank.models.bundled import BUNDLED, hub_unreachable, load_config, resolve_model_path


@dataclass
class Encoder:
    """A loaded encoder: ``model`` (HF base model, eval, eager attention), ``tokenizer``,
    ``config``, ``spec`` (layer structure and LoRA targets), ``name`` (as given) and ``path``
    (the folder or hub id it was loaded from)."""

    model: Any
    tokenizer: Any
    config: Any
    spec: ArchSpec
    name: str
    path: str

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks L."""
        return int(self.config.num_hidden_layers)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _from_pretrained(loader: Any, path: str, name: str, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` offline first, then from the hub (unless offline / local)."""
    try:
        return loader.from_pretrained(path, local_files_only=True, trust_remote_code=False,
                                      **kwargs)
    except (OSError, ValueError) as exc:
        local_exc = exc
    if Path(path).exists() or name in BUNDLED or hub_unreachable() is not None:
        raise LorankError(
            f"{what} of {name!r} could not be loaded offline ({_first_line(local_exc)}); pass a "
            "local folder holding config.json, safetensors weights and tokenizer files, a bundled "
            "name (minilm, mpnet), or allow hub access (HF_HUB_OFFLINE=0)")
    try:
        return loader.from_pretrained(path, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as exc:
        raise LorankError(
            f"{what} of {name!r} could not be loaded ({_first_line(exc)}); pass a local folder "
            "or a bundled name (minilm, mpnet)") from None


def load_encoder(name_or_path: str, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> Encoder:
    """Load an encoder by bundled short name (``minilm``, ``mpnet``), local folder or hub id.

    The base model is loaded with ``AutoModel`` (``use_safetensors=True``,
    ``attn_implementation="eager"``, ``trust_remote_code=False``), cast to ``dtype``, moved to
    ``device`` and put in eval mode (dropout off: f(x; W0) is deterministic). Architectures:
    those of :data:`lorank.models.arch.ARCHITECTURES` (BERT, RoBERTa, DeBERTa-v2, ELECTRA, MPNet).

    Raises LorankError (one line) for unknown models (offline: saying how to provide one) and
    unsupported architectures.
    """
    from transformers import AutoModel, AutoTokenizer

    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise LorankError(f"dtype must be a floating torch dtype, got {dtype!r}")
    config = load_config(name_or_path)
    spec = arch_spec(getattr(config, "model_type", None))
    path = resolve_model_path(name_or_path)
    model = _from_pretrained(AutoModel, path, name_or_path, "weights", config=config,
                             use_safetensors=True, attn_implementation="eager", dtype=dtype)
    model = model.to(device=device, dtype=dtype).eval()
    tokenizer = _from_pretrained(AutoTokenizer, path, name_or_path, "tokenizer")  # a fast one
    return Encoder(model=model, tokenizer=tokenizer, config=config, spec=spec,
                   name=name_or_path, path=path)
