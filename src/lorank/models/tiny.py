"""Tiny random-init encoders built offline, for tests, demos and benchmarks.

``build_tiny_model("roberta", folder)`` writes a complete Hugging Face model folder (config,
safetensors weights with an MLM head, fast tokenizer) that every lorank entry point accepts like
a hub id. Sizes are deliberately distinct (hidden 32, intermediate 37) so that a swapped (m, n)
shows up in tests. ``build_large_config`` gives a roberta-large-sized config for speed benchmarks
(random init: no weights are downloaded).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lorank.atomic import atomic_dir
from lorank.errors import check_choice

TINY_ARCHS = ("bert", "roberta", "deberta-v2", "electra", "mpnet")

_WORDS = (  # noqa: SIM905 - a word list reads better as one string
    "the a an it was is great terrible good bad movie film yes no maybe not and or but of to "
    "in on at this that i you he she we they very really quite so too fun boring love hate "
    "story actor plot ? , . ! man woman dog cat sat ran runs is are be been question answer "
    "sentence entails same different"
).split()
SPECIAL = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def tiny_tokenizer() -> Any:
    """A word-level fast tokenizer over a small English vocabulary (built in code, offline)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*SPECIAL.values(), *dict.fromkeys(_WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    cls, sep = SPECIAL["cls"], SPECIAL["sep"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=SPECIAL["pad"], unk_token=SPECIAL["unk"],
        cls_token=cls, sep_token=sep, mask_token=SPECIAL["mask"], model_max_length=128,
    )


def tiny_config(model_type: str, vocab_size: int, **overrides: Any) -> Any:
    """A 2-layer, hidden-32 config of ``model_type`` (one of :data:`TINY_ARCHS`)."""
    from transformers import AutoConfig

    check_choice("model_type", model_type, TINY_ARCHS)
    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=130, pad_token_id=0,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    if model_type == "electra":
        kwargs["embedding_size"] = 16
    if model_type == "deberta-v2":
        kwargs.update(relative_attention=True, pos_att_type=["p2c", "c2p"],
                      max_relative_positions=-1, position_buckets=16)
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def build_tiny_model(model_type: str, folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random-init ``...ForMaskedLM`` model + tokenizer folder; return its path.

    The folder loads with ``AutoModel``/``AutoModelForMaskedLM``/``AutoTokenizer`` like any
    checkpoint. Written atomically (temporary folder, then rename).
    """
    import torch
    from transformers import AutoModelForMaskedLM

    tokenizer = tiny_tokenizer()
    config = tiny_config(model_type, vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    model = AutoModelForMaskedLM.from_config(config, attn_implementation="eager")
    with atomic_dir(folder, kind="model") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(folder)


def build_large_config(model_type: str = "roberta") -> Any:
    """A roberta-large-sized config (24 layers, hidden 1024, 16 heads) for speed benchmarks."""
    from transformers import AutoConfig

    return AutoConfig.for_model(
        model_type, vocab_size=50265, hidden_size=1024, num_hidden_layers=24,
        num_attention_heads=16, intermediate_size=4096, max_position_embeddings=514,
        pad_token_id=1, type_vocab_size=1,
    )
