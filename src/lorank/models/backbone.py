"""Run an encoder layer by layer, vmap-safe, for every supported architecture.

Hugging Face's own ``forward`` builds attention masks with data-dependent Python control flow,
which ``torch.func.vmap`` rejects. Here the mask is built from ``attention_mask`` with tensor ops
only and each transformer block is called directly, so that

    h_0 = embed(x),   h_{l+1} = block_l(h_l, mask, extras),   l = 0..L-1

can be split anywhere (``lower``/``upper`` truncation) and differentiated per example with
``vmap(jacrev(...))``. Per family:

* BERT, RoBERTa, XLM-R, ELECTRA: additive mask (B, 1, 1, T) with 0 where attended and the dtype's
  minimum elsewhere; ELECTRA projects embeddings (``embeddings_project``) when
  ``embedding_size != hidden_size``.
* MPNet: the same additive mask plus the relative ``position_bias`` (B, heads, T, T) that
  ``MPNetEncoder.compute_position_bias`` derives from the sequence length.
* DeBERTa-v2/v3: a 0/1 mask (B, 1, T, T) = m_i m_j, relative positions and the shared relative
  embeddings of ``DebertaV2Encoder``, and the optional convolution after block 0.

The result equals the Hugging Face forward to float precision (tested on all five families).
"""

from __future__ import annotations

from typing import Any

import torch

BERT_LIKE = ("bert", "roberta", "xlm-roberta", "electra")
FAMILIES = (*BERT_LIKE, "mpnet", "deberta-v2")


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B, 1, 1, T) additive float mask: 0 attended, finfo(dtype).min else."""
    m = attention_mask.to(dtype)[:, None, None, :]
    return (1.0 - m) * torch.finfo(dtype).min


class Backbone:
    """Layer-by-layer access to a Hugging Face base model (not an ``nn.Module``: it holds a
    reference to the model, whose parameters belong to the classifier)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.model_type = model.config.model_type
        if self.model_type not in FAMILIES:
            from lorank.errors import LorankError

            raise LorankError(f"no layer-by-layer runner for architecture {self.model_type!r}")

    @property
    def num_layers(self) -> int:
        return len(self.model.encoder.layer)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embeddings.word_embeddings.weight.dtype

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings h_0: (B, T) ids -> (B, T, H)."""
        emb = self.model.embeddings
        if self.model_type == "mpnet":
            return emb(input_ids=input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if self.model_type in BERT_LIKE:
            h = emb(input_ids=input_ids, token_type_ids=token_type_ids)
            if hasattr(self.model, "embeddings_project"):
                h = self.model.embeddings_project(h)
            return h
        return emb(input_ids=input_ids, token_type_ids=token_type_ids, mask=attention_mask)

    def context(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        """Everything the blocks need besides h_l (mask, relative positions); tensor ops only."""
        if self.model_type in BERT_LIKE:
            return {"mask": additive_mask(attention_mask, hidden.dtype)}
        if self.model_type == "mpnet":
            return {"mask": additive_mask(attention_mask, hidden.dtype),
                    "position_bias": self.model.encoder.compute_position_bias(hidden)}
        enc = self.model.encoder
        m = attention_mask.to(hidden.dtype)
        return {"mask": m[:, None, None, :] * m[:, None, :, None],
                "input_mask": attention_mask,
                "relative_pos": enc.get_rel_pos(hidden),
                "rel_embeddings": enc.get_rel_embedding()}

    def block(self, i: int, hidden: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        """h_{i+1} = block_i(h_i); (B, T, H) -> (B, T, H)."""
        layer = self.model.encoder.layer[i]
        if self.model_type in BERT_LIKE:
            out = layer(hidden, attention_mask=ctx["mask"])
        elif self.model_type == "mpnet":
            out = layer(hidden, ctx["mask"], ctx["position_bias"])
        else:
            out = layer(hidden, ctx["mask"], relative_pos=ctx["relative_pos"],
                        rel_embeddings=ctx["rel_embeddings"])
        out = out[0] if isinstance(out, tuple) else out
        if i == 0 and self.model_type == "deberta-v2" and self.model.encoder.conv is not None:
            out = self.model.encoder.conv(hidden, out, ctx["input_mask"])  # after block 0
        return out

    def run(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int,
            stop: int) -> torch.Tensor:
        """Blocks [start, stop) applied to h_start."""
        if start >= stop:
            return hidden
        ctx = self.context(hidden, attention_mask)
        for i in range(start, stop):
            hidden = self.block(i, hidden, ctx)
        return hidden


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Attention-masked mean over tokens: (B, T, H), (B, T) -> (B, H)."""
    m = attention_mask.to(hidden.dtype)[..., None]
    return (hidden * m).sum(dim=-2) / m.sum(dim=-2).clamp_min(1.0)


def normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / max(||x||_2, eps) along the last axis (vmap-safe)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
