"""The one in-memory data type every loader returns: :class:`Split` and :class:`FewShotData`.

A split holds n examples: texts ``text_a[i]`` (and ``text_b[i]`` for pair tasks) and label indices
``labels[i] ∈ {0, …, K−1}`` into :attr:`TaskSpec.labels`. A few-shot data set (LM-BFF protocol,
Gao et al. 2021) is a train split of N = k·K examples, a dev split of k·K examples for model
selection, and a test split (the original GLUE dev set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from lorank.data.tasks import TaskSpec
from lorank.errors import LorankError


@dataclass(frozen=True, eq=False)
class Split:
    """n labelled examples.

    Attributes:
        name: ``"train"``, ``"dev"`` or ``"test"``.
        text_a: n first texts.
        text_b: n second texts (sentence-pair tasks) or None.
        labels: int64 array of shape (n,), label indices into ``TaskSpec.labels`` (read-only).
        source: the file (or hub id) the rows came from, or None.
    """

    name: str
    text_a: tuple[str, ...]
    text_b: tuple[str, ...] | None
    labels: np.ndarray
    source: str | None = None

    def __post_init__(self) -> None:
        text_a = tuple(self.text_a)
        text_b = None if self.text_b is None else tuple(self.text_b)
        labels = np.array(self.labels, dtype=np.int64).reshape(-1)
        if len(labels) != len(text_a) or (text_b is not None and len(text_b) != len(text_a)):
            raise LorankError(
                f"split {self.name!r}: text_a, text_b and labels must have the same length "
                f"({len(text_a)}, {None if text_b is None else len(text_b)}, {len(labels)})"
            )
        if labels.size and labels.min() < 0:
            raise LorankError(f"split {self.name!r}: label indices must be >= 0")
        labels.flags.writeable = False
        object.__setattr__(self, "text_a", text_a)
        object.__setattr__(self, "text_b", text_b)
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.text_a)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return (self.name == other.name and self.text_a == other.text_a
                and self.text_b == other.text_b and np.array_equal(self.labels, other.labels))

    __hash__ = None  # type: ignore[assignment]

    def counts(self, K: int) -> np.ndarray:
        """Examples per class: int array of shape (K,), ``counts[y] = #{i : labels[i] = y}``."""
        if self.labels.size and self.labels.max() >= K:
            raise LorankError(f"split {self.name!r} has label index {self.labels.max()} >= K={K}")
        return np.bincount(self.labels, minlength=K)

    def keys(self) -> list[tuple[str, str | None]]:
        """Per-row text key ``(text_a, text_b)`` used for de-duplication."""
        b = self.text_b if self.text_b is not None else (None,) * len(self)
        return list(zip(self.text_a, b, strict=True))

    def subset(self, index: Sequence[int] | np.ndarray, name: str | None = None) -> Split:
        """Rows ``index`` (in that order) as a new split."""
        idx = [int(i) for i in index]
        return Split(
            name=name or self.name,
            text_a=tuple(self.text_a[i] for i in idx),
            text_b=None if self.text_b is None else tuple(self.text_b[i] for i in idx),
            labels=self.labels[idx] if idx else np.zeros(0, dtype=np.int64),
            source=self.source,
        )


def majority_rate(split: Split) -> float:
    """Accuracy of always predicting the most frequent class: max_y #{labels = y} / n."""
    if len(split) == 0:
        raise LorankError(f"split {split.name!r} is empty: no majority rate")
    return float(np.bincount(split.labels).max() / len(split))


@dataclass(frozen=True, eq=False)
class FewShotData:
    """A few-shot data set for one task: train (N = k·K rows), dev, optional test.

    Attributes:
        task: the task spec (labels, K, template, verbaliser).
        train, dev: the k-shot training and selection splits.
        test: the evaluation split, or None when a custom data set declares no test file.
        k: examples per class in train (None when explicit files are not class-balanced).
        seed: sampling seed (None when the splits were given, not sampled).
        source: how the data was obtained, e.g. ``"lmbff:/data/k-shot/SST-2/16-42"``.
        meta: extra provenance (pool size, removed duplicates, test cap), read-only.
    """

    task: TaskSpec
    train: Split
    dev: Split
    test: Split | None
    k: int | None
    seed: int | None
    source: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        for split in self.splits():
            split.counts(self.task.K)  # raises on out-of-range label indices
            if (split.text_b is not None) != self.task.is_pair:
                raise LorankError(f"split {split.name!r} does not match task {self.task.name}: "
                                  f"{'two' if self.task.is_pair else 'one'} text field(s) expected")

    @property
    def N(self) -> int:
        """Number of training examples (the N of the rank thresholds; dev is not counted)."""
        return len(self.train)

    @property
    def K(self) -> int:
        """Number of classes / logits of the task."""
        return self.task.K

    def splits(self) -> list[Split]:
        """The present splits in order train, dev, test."""
        return [s for s in (self.train, self.dev, self.test) if s is not None]

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: counts per class and majority rate of every split."""
        out: dict[str, Any] = {
            "task": self.task.name, "labels": list(self.task.labels), "K": self.K, "N": self.N,
            "k": self.k, "seed": self.seed, "source": self.source, "meta": dict(self.meta),
            "splits": {},
        }
        for split in self.splits():
            counts = split.counts(self.K)
            out["splits"][split.name] = {
                "rows": len(split),
                "per_label": {lab: int(c) for lab, c in zip(self.task.labels, counts,
                                                             strict=True)},
                "majority_rate": majority_rate(split) if len(split) else None,
                "file": split.source,
            }
        return out
