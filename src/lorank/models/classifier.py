"""The classifier interface shared with the NTK engine and fine-tuning (see docs/models.md).

A :class:`Classifier` maps encoded inputs x to K logits f(x; W) with W the encoder weights and a
frozen head. The encoder runs in one or two *towers* (the same weights; two towers encode the two
texts of a pair separately, so that LoRA acts on both):

    state_0 = embed(x),   state_L = blocks_{L-1} ∘ … ∘ blocks_0 (state_0),   f = head(state_L)

``lower(x, s)`` returns state_s without autograd and ``upper(state_s, s)`` finishes the forward,
so ``upper(lower(x, s), s) == forward(x)`` for every s in 0..L (kernel computations freeze the
first s blocks once). Every tensor in ``inputs`` and ``state`` has the batch dimension first and
the forward uses tensor ops only, so it runs under ``torch.func.vmap`` over single examples.

Input keys per tower prefix p ("" for one tower, "a_"/"b_" for two): ``{p}input_ids``,
``{p}attention_mask``, ``{p}token_type_ids``; state keys: ``{p}hidden`` (B, T, H) and
``{p}attention_mask``. Other keys (the prompt head's ``mask_position``) pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lorank.errors import LorankError
from lorank.models.arch import AdaptedMatrix, adapted_matrices
from lorank.models.backbone import Backbone, mean_pool, normalize
from lorank.models.encoder import Encoder
from lorank.models.lower_cache import cached_lower

TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
Texts = Sequence[str]


def split_texts(data: Any) -> tuple[list[str], list[str] | None]:
    """(text_a, text_b | None) from a Split, a list of strings or a list of (a, b) pairs."""
    if hasattr(data, "text_a"):
        b = getattr(data, "text_b", None)
        return list(data.text_a), (None if b is None else list(b))
    if isinstance(data, str):
        return [data], None
    items = list(data)
    if items and all(isinstance(x, tuple | list) and len(x) == 2 for x in items):
        return [str(x[0]) for x in items], [str(x[1]) for x in items]
    if all(isinstance(x, str) for x in items):
        return items, None
    raise LorankError("inputs must be a Split, a list of texts or a list of (text_a, text_b) pairs")


class Classifier(nn.Module):
    """Base class: encoder towers + a frozen head producing K logits. Subclasses set ``head``,
    ``towers`` and implement :meth:`head_logits`."""

    head: str = ""
    towers: tuple[str, ...] = ("",)

    def __init__(self, enc: Encoder, task: Any) -> None:
        super().__init__()
        self.model = enc.model
        self.backbone = Backbone(enc.model)
        self.tokenizer = enc.tokenizer
        self.spec = enc.spec
        self.hf_config = enc.config
        self.encoder_name = enc.name
        self.task = task
        self.K = int(task.K)
        self.num_layers = self.backbone.num_layers
        self._use_token_types = "token_type_ids" in getattr(
            self.tokenizer, "model_input_names", ()) and self.spec.model_type != "mpnet"

    @property
    def device(self) -> torch.device:
        """Device of the encoder weights (inputs from :meth:`encode` stay on the CPU)."""
        return self.model.embeddings.word_embeddings.weight.device

    def to_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Move every tensor of an input/state dict to the encoder's device."""
        return {k: v.to(self.device) for k, v in inputs.items()}

    # ----- inputs -------------------------------------------------------------------------
    def tower_texts(self, text_a: list[str], text_b: list[str] | None
                    ) -> dict[str, tuple[list[str], list[str] | None]]:
        """Texts each tower tokenizes: prefix -> (first texts, second texts or None). One tower
        encodes a pair jointly (the tokenizer's pair encoding), two towers one text each."""
        if self.towers == ("",):
            return {"": (text_a, text_b)}
        return {"a_": (text_a, None), "b_": (text_b, None)}

    def tokenize(self, first: list[str], second: list[str] | None, max_length: int,
                 prefix: str = "") -> dict[str, torch.Tensor]:
        """Tokenize (pairs jointly when ``second`` is given), pad to the longest row."""
        enc = self.tokenizer(first, second, padding=True, truncation=True,
                             max_length=max_length, return_tensors="pt")
        out = {f"{prefix}input_ids": enc["input_ids"],
               f"{prefix}attention_mask": enc["attention_mask"]}
        if self._use_token_types and "token_type_ids" in enc:
            out[f"{prefix}token_type_ids"] = enc["token_type_ids"]
        return out

    def _split(self, data: Any) -> tuple[list[str], list[str] | None]:
        """(text_a, text_b | None) of ``data`` (:func:`split_texts`): LorankError when it has no
        rows or not the one or two texts per row the task has."""
        text_a, text_b = split_texts(data)
        if not text_a:
            raise LorankError("nothing to encode: the input has no rows")
        if bool(getattr(self.task, "is_pair", False)) != (text_b is not None):
            kind = "two texts per row" if self.task.is_pair else "one text per row"
            raise LorankError(f"task {self.task.name} expects {kind}")
        return text_a, text_b

    def encode(self, data: Any, max_length: int = 128) -> dict[str, torch.Tensor]:
        """Tokenize a Split / list of texts / list of pairs into the input dict (batch first)."""
        if not isinstance(max_length, int) or max_length < 8:
            raise LorankError(f"max_length must be an integer >= 8, got {max_length!r}")
        text_a, text_b = self._split(data)
        out: dict[str, torch.Tensor] = {}
        for prefix, (first, second) in self.tower_texts(text_a, text_b).items():
            out.update(self.tokenize(first, second, max_length, prefix))
        return out

    def lengths(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Real (unpadded) tokens per example, summed over the towers: (N,) int64."""
        return sum(inputs[f"{p}attention_mask"].sum(dim=1).long() for p in self.towers)

    def trim_padding(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``inputs`` with every tower cut to its longest real row.

        :meth:`tokenize` pads a whole split to its longest row; a chunk of similar-length rows
        (callers sort by :meth:`lengths`) needs only its own longest. The cut columns are
        padding in every row (attention mask 0), masked out of attention and pooling, so the
        logits are unchanged; per-token tensors of a single-tower head (the prompt head's mask
        position) are cut with it. Right padding only: otherwise ``inputs`` is returned as is.
        """
        out = dict(inputs)
        text_keys = {q + t for q in self.towers for t in TEXT_KEYS}
        for p in self.towers:
            mask = inputs[f"{p}attention_mask"]
            T = mask.shape[1]
            real = mask.ne(0).any(dim=0).nonzero()
            L = int(real.max()) + 1 if real.numel() else 1
            if L == T or bool(mask[:, :L].eq(0).all(dim=0).any()):
                continue  # nothing to cut, or not right-padded
            for key, value in inputs.items():
                mine = key in {p + t for t in TEXT_KEYS}
                per_token = len(self.towers) == 1 and key not in text_keys
                if (mine or per_token) and isinstance(value, torch.Tensor) \
                        and value.dim() >= 2 and value.shape[1] == T:
                    out[key] = value[:, :L]
        return out

    # ----- forward ------------------------------------------------------------------------
    def embed(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """state_0: token embeddings of every tower; non-tower keys pass through."""
        state = {k: v for k, v in inputs.items()
                 if not any(k == p + t for p in self.towers for t in TEXT_KEYS)}
        for p in self.towers:
            mask = inputs[f"{p}attention_mask"]
            state[f"{p}hidden"] = self.backbone.embed(
                inputs[f"{p}input_ids"], mask, inputs.get(f"{p}token_type_ids"))
            state[f"{p}attention_mask"] = mask
        return state

    def _check_start(self, start: int) -> int:
        if not isinstance(start, int | np.integer) or not 0 <= int(start) <= self.num_layers:
            raise LorankError(f"start layer must be in 0..{self.num_layers}, got {start!r}")
        return int(start)

    def run_layers(self, state: dict[str, torch.Tensor], start: int, stop: int
                   ) -> dict[str, torch.Tensor]:
        """Apply blocks [start, stop) to every tower of a state."""
        out = dict(state)
        for p in self.towers:
            out[f"{p}hidden"] = self.backbone.run(
                state[f"{p}hidden"], state[f"{p}attention_mask"], start, stop)
        return out

    def lower(self, inputs: dict[str, torch.Tensor], start: int) -> dict[str, torch.Tensor]:
        """Embeddings + blocks [0, start), without autograd: the frozen bottom of the network.
        Reused across classifiers of the same encoder inside
        :func:`lorank.models.lower_cache.reuse_lower_states`."""
        start = self._check_start(start)

        def compute() -> dict[str, torch.Tensor]:
            with torch.no_grad():
                return self.run_layers(self.embed(inputs), 0, start)

        return cached_lower(self.backbone.model, tuple(self.towers), inputs, start, compute)

    def upper(self, state: dict[str, torch.Tensor], start: int) -> torch.Tensor:
        """Blocks [start, L) + pooling + head: (B, K) logits."""
        start = self._check_start(start)
        return self.head_logits(self.run_layers(state, start, self.num_layers))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """f(x; W): (B, K) logits."""
        return self.upper(self.embed(inputs), 0)

    def logits_from(self, x: dict[str, torch.Tensor], start: int | None) -> torch.Tensor:
        """(B, K) logits from model inputs (``start`` None) or from a cached state before block
        ``start`` (:meth:`lower`): ``upper(lower(x, s), s) == forward(x)``."""
        return self(x) if start is None else self.upper(x, start)

    def head_logits(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Head on the last hidden states (state_L) -> (B, K)."""
        raise NotImplementedError

    def pooled(self, state: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
        """e(x): attention-masked mean of the last hidden states, L2-normalised: (B, H)."""
        return normalize(mean_pool(state[f"{prefix}hidden"], state[f"{prefix}attention_mask"]))

    # ----- batched evaluation -------------------------------------------------------------
    @torch.no_grad()
    def logits(self, data: Any, batch_size: int = 64, max_length: int = 128) -> np.ndarray:
        """f(x; W) for every row of ``data`` in batches, no autograd: (n, K) float64 array."""
        return self._batched(data, batch_size, max_length, lambda st: self.head_logits(st))

    @torch.no_grad()
    def _batched(self, data: Any, batch_size: int, max_length: int, fn: Any) -> np.ndarray:
        text_a, text_b = split_texts(data)
        out = []
        for i in range(0, len(text_a), batch_size):
            rows = (text_a[i:i + batch_size] if text_b is None
                    else list(zip(text_a[i:i + batch_size], text_b[i:i + batch_size],
                                  strict=True)))
            inputs = self.to_device(self.encode(rows, max_length=max_length))
            state = self.run_layers(self.embed(inputs), 0, self.num_layers)
            out.append(fn(state).double().cpu().numpy())
        return np.concatenate(out, axis=0)

    # ----- adapted weights ----------------------------------------------------------------
    def adapted_matrices(self, targets: Sequence[str] | None = ("query", "value"),
                         layers: str | Sequence[int] | None = "all") -> list[AdaptedMatrix]:
        """The weight matrices LoRA adapts (paths relative to the base model, shapes (m, n))."""
        return adapted_matrices(self.hf_config, targets, layers)

    def param_name(self, matrix: AdaptedMatrix) -> str:
        """Name in ``self.named_parameters()`` of an adapted matrix's weight (peft-aware)."""
        names = dict(self.named_parameters())
        for cand in (f"model.{matrix.path}.weight", f"model.{matrix.path}.base_layer.weight"):
            if cand in names:
                return cand
        raise LorankError(f"no parameter for adapted matrix {matrix.path!r} in this classifier")

    def adapted_parameters(self, targets: Sequence[str] | None = ("query", "value"),
                           layers: str | Sequence[int] | None = "all"
                           ) -> dict[str, nn.Parameter]:
        """{parameter name: weight} of the adapted matrices, names as in named_parameters()."""
        params = dict(self.named_parameters())
        return {self.param_name(m): params[self.param_name(m)]
                for m in self.adapted_matrices(targets, layers)}

    def config_dict(self) -> dict[str, Any]:
        """JSON-able description of the classifier (head, model, task, fitted numbers)."""
        return {"head": self.head, "model": self.encoder_name,
                "model_type": self.spec.model_type, "task": getattr(self.task, "name", None),
                "K": self.K, "num_layers": self.num_layers, "towers": list(self.towers)}

    def freeze_head(self) -> None:
        """Head weights never train: every parameter outside the base model stops grad."""
        for name, p in self.named_parameters():
            if not name.startswith("model."):
                p.requires_grad_(False)
