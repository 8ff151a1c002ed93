r"""Model inputs of one split, optionally with the frozen lower layers run once (cached prefix).

When LoRA adapts only layers ℓ ≥ s (for example the last one), the hidden states after the first
s blocks do not depend on the adapter:

    h_s(x) = block_{s-1} ∘ … ∘ block_0 ∘ embed(x)     (frozen, no grad)

so :func:`prepare_split` computes ``state = clf.lower(inputs, s)`` once per example and every
training step, evaluation and linearization check runs only ``clf.upper(state, s)`` — layers
[s, L) + pooling + head. The logits are the same as the full forward (the classifier's tested
invariant ``clf.upper(clf.lower(x, s), s) == clf(x)``); the cost of a step drops from L blocks
to L − s blocks (forward and backward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: examples per chunk when running the frozen prefix or evaluating (bounds peak memory).
CHUNK = 64


@dataclass
class PreparedSplit:
    """One split ready for the classifier.

    Attributes:
        name: split name (train/dev/test).
        x: ``clf.encode`` inputs (``start is None``) or the cached ``clf.lower`` state; every
            tensor has the example axis first.
        y: int64 labels, shape (n,).
        start: ``None`` for the full forward, else the first layer run by ``clf.upper``.
    """

    name: str
    x: dict[str, Any]
    y: torch.Tensor
    start: int | None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def rows(self, index: torch.Tensor | slice) -> dict[str, Any]:
        """The inputs of examples ``index`` (tensors indexed on their first axis)."""
        return {k: (v[index] if torch.is_tensor(v) else v) for k, v in self.x.items()}

    def logits(self, clf: torch.nn.Module, index: torch.Tensor | slice | None = None
               ) -> torch.Tensor:
        """f(x_i) for the selected examples: (B, K), with gradient if enabled."""
        x = self.x if index is None else self.rows(index)
        return clf.logits_from(x, self.start)


def prepare_split(clf: torch.nn.Module, split: Any, start: int | None, max_length: int = 128,
                  name: str | None = None) -> PreparedSplit:
    """Encode a :class:`lorank.data.Split` and, if ``start`` is given, run layers [0, start).

    Args:
        clf: the classifier (an adapter, if any, must only touch layers ≥ ``start``).
        split: a lorank ``Split`` (texts + labels).
        start: ``None`` → full forward at every step; an int s → cache ``clf.lower(x, s)``.
        max_length: tokenizer truncation length.
    """
    out = PreparedSplit(name=name or getattr(split, "name", "split"),
                        x=clf.encode(split, max_length=max_length),
                        y=torch.tensor(np.asarray(split.labels), dtype=torch.long), start=start)
    if start is not None and len(out):
        with torch.no_grad():
            parts = [clf.lower(out.rows(slice(i, i + CHUNK)), start)
                     for i in range(0, len(out), CHUNK)]
        out.x = {k: torch.cat([p[k] for p in parts]) if torch.is_tensor(v) else v
                 for k, v in parts[0].items()}  # the chunks' states, concatenated
    return out


def predict(clf: torch.nn.Module, data: PreparedSplit, chunk: int = CHUNK) -> torch.Tensor:
    """All logits (n, K) of a prepared split, without gradient, in chunks."""
    with torch.no_grad():
        parts = [data.logits(clf, slice(i, i + chunk)) for i in range(0, len(data), chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, getattr(clf, "K", 1))
