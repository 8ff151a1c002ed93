"""Prompt-based head (LM-BFF, Gao et al. 2021): MLM logits of the label words at the mask.

x is rendered with the task template, e.g. ``"<s> {sentence} It was <mask> . </s>"``; with h the
last hidden state at the mask position and g the checkpoint's pretrained MLM head,

    logit_k(x) = g(h)[w_k],   k = 1..K,

where w_k is the token id of label word k: the first sub-token of ``" " + word`` (the
leading-space variant BPE / SentencePiece vocabularies use mid-sentence; WordPiece ignores the
space). This is the head of Malladi et al. (2023) and Jang et al. (2024). The MLM head weights
come from the checkpoint and stay frozen; a checkpoint without them (the bundled sentence
encoders) is refused, since a random MLM head would not be in the kernel regime.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lorank.errors import LorankError
from lorank.models.classifier import Classifier
from lorank.models.encoder import Encoder, _from_pretrained


def load_mlm_head(enc: Encoder) -> nn.ModuleDict:
    """The pretrained MLM head modules of ``enc``'s checkpoint (everything outside the base
    model of ``AutoModelForMaskedLM``); LorankError if the checkpoint has no MLM head weights."""
    from transformers import AutoModelForMaskedLM

    mlm, info = _from_pretrained(
        AutoModelForMaskedLM, enc.path, enc.name, "MLM model", use_safetensors=True,
        attn_implementation="eager", dtype=enc.dtype, output_loading_info=True)
    prefix = mlm.base_model_prefix
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(prefix + ".")]
    if missing:
        raise LorankError(
            f"checkpoint {enc.name!r} has no MLM head weights (missing {missing[0]}, ...): the "
            "prompt head needs a masked-LM checkpoint such as roberta-base; use --head verbalizer")
    heads = nn.ModuleDict({name: mod for name, mod in mlm.named_children() if name != prefix})
    device = enc.model.embeddings.word_embeddings.weight.device
    return heads.to(device=device, dtype=enc.dtype).eval()


def label_word_ids(tokenizer: Any, words: tuple[str, ...]) -> list[int]:
    """Token id of each label word: first sub-token of ``" " + word`` (LM-BFF convention)."""
    ids = []
    for word in words:
        toks = tokenizer.encode(" " + word.strip(), add_special_tokens=False)
        if not toks or toks[0] == tokenizer.unk_token_id:
            raise LorankError(f"label word {word!r} is not in the tokenizer's vocabulary")
        ids.append(int(toks[0]))
    if len(set(ids)) != len(ids):
        raise LorankError(f"label words {list(words)} share a first token; choose other words")
    return ids


class PromptClassifier(Classifier):
    """K label-word logits of the pretrained MLM head at the template's mask position."""

    head = "prompt"

    def __init__(self, enc: Encoder, task: Any, label_words: tuple[str, ...] | None = None
                 ) -> None:
        super().__init__(enc, task)
        if self.tokenizer.mask_token_id is None:
            raise LorankError(f"tokenizer of {enc.name!r} has no mask token: use --head verbalizer")
        self.mlm_head = load_mlm_head(enc)
        self.label_words = tuple(label_words or task.label_words)
        if len(self.label_words) != self.K:
            raise LorankError(f"need one label word per class ({self.K})")
        ids = label_word_ids(self.tokenizer, self.label_words)
        self.register_buffer("label_ids", torch.tensor(ids, dtype=torch.long, device=self.device))

    def _render(self, a: str, b: str | None, max_length: int) -> str:
        """Template text; the longer text loses words until the tokenized prompt fits."""
        mask = self.tokenizer.mask_token
        while True:
            text = self.task.prompt(a, b, mask=mask)
            excess = len(self.tokenizer.encode(text)) - max_length
            if excess <= 0:
                return text
            wa, wb = a.split(), (b or "").split()
            longer = wa if len(wa) >= len(wb) else wb
            if len(longer) <= 1:
                raise LorankError(f"max_length {max_length} is too short for the template")
            cut = len(longer) - max(1, min(excess, len(longer) // 2))
            if longer is wa:
                a = " ".join(wa[:cut])
            else:
                b = " ".join(wb[:cut])

    def encode(self, data: Any, max_length: int = 128) -> dict[str, torch.Tensor]:
        text_a, text_b = self._split(data)
        rows = [self._render(a, None if text_b is None else text_b[i], max_length)
                for i, a in enumerate(text_a)]
        out = self.tokenize(rows, None, max_length)
        is_mask = out["input_ids"] == self.tokenizer.mask_token_id
        if not bool((is_mask.sum(-1) == 1).all()):
            raise LorankError("every prompt must hold exactly one mask token after tokenization")
        out["mask_position"] = is_mask.to(self.backbone.dtype)
        return out

    def mlm_scores(self, h: torch.Tensor) -> torch.Tensor:
        """Pretrained MLM head: (B, 1, H) -> (B, 1, V) vocabulary logits."""
        heads, mt = self.mlm_head, self.spec.model_type
        if "cls" in heads:
            return heads["cls"](h)
        if "lm_head" in heads:
            return heads["lm_head"](h)
        if "generator_lm_head" in heads:
            return heads["generator_lm_head"](heads["generator_predictions"](h))
        if "lm_predictions" in heads:
            return heads["lm_predictions"](h, self.model.embeddings.word_embeddings)
        raise LorankError(f"no MLM head layout known for architecture {mt!r}")

    def head_logits(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        w = state["mask_position"].to(state["hidden"].dtype)
        h = (w[..., None] * state["hidden"]).sum(dim=-2, keepdim=True)
        return self.mlm_scores(h)[:, 0, :].index_select(-1, self.label_ids)

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "template": self.task.template,
                "label_words": list(self.label_words), "label_ids": self.label_ids.tolist()}
