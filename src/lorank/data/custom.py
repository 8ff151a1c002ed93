"""A user's own CSV, TSV or JSONL data as FewShotData — a custom task needs no code.

Two ways to give the data:

* one file (``train=``, no ``dev=``): a pool. LM-BFF sampling with (k, seed) draws train (k per
  class) and dev (the next k per class) from it, after removing rows that repeat or occur in
  ``test``; without a ``test`` file, the pool rows not drawn are the test split (held out from
  train and dev, so a rank verdict needs only the one file; none when no row is left);
* explicit files (``train=`` and ``dev=``): used as they are (k inferred when train is balanced).

``test=`` is optional in both. Columns are named by ``text_a``, ``text_b`` (pairs) and ``label``
(``columns=`` names the fields of a CSV/TSV file without a header row). ``labels`` declares the
label set and its order (label index = position); without it the set is read from the training
file and ordered by :func:`~lorank.data.tasks.label_order` (numeric order for integer labels).
``label_words`` maps labels to the words the verbaliser and prompt heads use (``"It is 1."``
means nothing to an encoder; ``"It is great."`` does). Rows with an empty text are dropped
(``empty_text="drop"``, the line numbers go to ``meta["empty_text_dropped"]``) or refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lorank.data.dataset import FewShotData, Split
from lorank.data.readers import infer_labels, read_labelled
from lorank.data.sampling import cap_test, remove_overlap, sample_indices
from lorank.data.tasks import (
    METRICS,
    TaskSpec,
    custom_task,
    get_task,
    label_words_for,
    parse_labels,
)
from lorank.errors import LorankError, check_choice

LabelWords = str | Mapping[Any, Any] | Sequence[tuple[str, str]]


def _with_words(spec: TaskSpec, label_words: LabelWords | None, metric: str | None) -> TaskSpec:
    """``spec`` with the user's label words (every label exactly once) and primary metric."""
    changes: dict[str, Any] = {}
    if label_words is not None:
        words = label_words_for(spec.labels, label_words, "the data")
        changes["label_words"] = words
        changes["label_descriptions"] = tuple(f"It is {word}." for word in words)
    if metric is not None:
        if check_choice("--metric", metric, METRICS) == "f1" and spec.K != 2:
            raise LorankError(f"--metric f1 is binary F1 and needs K = 2 labels; this task has "
                              f"K = {spec.K} ({', '.join(spec.labels)})")
        changes["metrics"] = ("accuracy", "f1") if metric == "f1" else ("accuracy",)
    return dataclasses.replace(spec, **changes) if changes else spec


def _spec(
    task: str | TaskSpec | None, labels: str | Sequence[str] | None, text_a: str,
    text_b: str | None, name: str, infer: Any,
) -> tuple[TaskSpec, bool]:
    """The task: a registered one (labels may be omitted), one built from ``labels``, or one
    built from the labels ``infer()`` reads from the training file; and whether it was inferred.
    """
    if task is not None:
        spec = get_task(task)
        if labels is not None and parse_labels(labels) != spec.labels:
            raise LorankError(f"declared labels {list(parse_labels(labels))} differ from task "
                              f"{spec.name}'s labels {list(spec.labels)}")
        if spec.is_pair != (text_b is not None):
            need = "a text_b column (--text-b)" if spec.is_pair else "no text_b column"
            raise LorankError(f"task {spec.name} needs {need} "
                              f"(it has {len(spec.text_fields)} text field(s))")
        return spec, False
    inferred = labels is None
    found = infer() if inferred else parse_labels(labels)
    fields = (text_a,) if text_b is None else (text_a, text_b)
    return custom_task(found, name=name, text_fields=fields), inferred


@dataclasses.dataclass(frozen=True)
class CustomFiles:
    """How to read a user's files: the task (declared, lent or inferred labels, label words,
    metric) and the reading options; :meth:`read` turns one file into a Split."""

    spec: TaskSpec
    labels_inferred: bool
    text_columns: tuple[str, ...]
    label: str
    fmt: str | None
    columns: tuple[str, ...] | None
    empty_text: str

    def read(self, path: str | Path, split: str, dropped: dict[str, list[int]]) -> Split:
        """Rows of ``path`` as split ``split``; lines of dropped empty-text rows go to
        ``dropped[str(path)]``."""
        rows, lines = read_labelled(path, name=split, text_columns=self.text_columns,
                                    label_column=self.label, labels=self.spec.labels,
                                    fmt=self.fmt, columns=self.columns,
                                    empty_text=self.empty_text,
                                    declared=not self.labels_inferred)
        if lines:
            dropped[str(path)] = lines
        return rows


def custom_files(
    train: str | Path,
    *,
    text_a: str,
    label: str,
    labels: str | Sequence[str] | None = None,
    text_b: str | None = None,
    task: str | TaskSpec | None = None,
    name: str = "custom",
    fmt: str | None = None,
    columns: Sequence[str] | None = None,
    label_words: LabelWords | None = None,
    metric: str | None = None,
    empty_text: str = "drop",
) -> CustomFiles:
    """The task and reader of a user's files (labels read from ``train`` when not declared);
    arguments as in :func:`load_custom`."""
    cols = tuple(columns) if columns is not None else None
    spec, inferred = _spec(task, labels, text_a, text_b, name,
                           lambda: infer_labels(train, label=label, fmt=fmt, columns=cols))
    spec = _with_words(spec, label_words, metric)
    text_columns = (text_a,) if text_b is None else (text_a, text_b)
    return CustomFiles(spec, inferred, text_columns, label, fmt, cols, empty_text)


def load_custom(
    train: str | Path,
    dev: str | Path | None = None,
    test: str | Path | None = None,
    *,
    text_a: str,
    label: str,
    labels: str | Sequence[str] | None = None,
    text_b: str | None = None,
    k: int | None = None,
    seed: int = 42,
    task: str | TaskSpec | None = None,
    name: str = "custom",
    fmt: str | None = None,
    test_max: int | None = None,
    columns: Sequence[str] | None = None,
    label_words: LabelWords | None = None,
    metric: str | None = None,
    empty_text: str = "drop",
) -> FewShotData:
    """Load a user's labelled file(s).

    Args:
        train: the training file, or the single file (pool) to sample train/dev from
            (``dev`` None).
        dev: explicit dev file; when given, train/dev are used unsampled.
        test: optional test file (None: the rest of the pool in single-file mode — no test
            split if nothing is left —, no test split with explicit files).
        text_a, text_b, label: column names (``text_b`` only for sentence pairs).
        labels: declared label set (``"neg,pos"`` or a list); None: read from ``train``.
        k: examples per class to sample (single-file mode, default 16); with explicit files, a
            k that train must match (None: inferred when train is balanced).
        seed: LM-BFF sampling seed (single-file mode).
        task: use a registered task's labels, template and verbaliser for this file.
        name: name of the custom task.
        fmt: ``"tsv"``, ``"csv"`` or ``"jsonl"`` (default: from each file's suffix).
        test_max: cap the test split MeZO-style (seed-42 shuffle, first ``test_max`` rows).
        columns: field names of CSV/TSV files without a header row, in order.
        label_words: label -> word (``"0=terrible,1=great"``) for the verbaliser and prompt heads.
        metric: ``"accuracy"`` or ``"f1"`` (binary F1 of label index 1): the primary metric,
            used for dev selection (None: the task's own; accuracy for a new task).
        empty_text: ``"drop"`` rows with an empty text (counted in ``meta``) or ``"error"``.
    """
    files = custom_files(train, text_a=text_a, label=label, labels=labels, text_b=text_b,
                         task=task, name=name, fmt=fmt, columns=columns,
                         label_words=label_words, metric=metric, empty_text=empty_text)
    spec = files.spec
    dropped: dict[str, list[int]] = {}
    test_split = files.read(test, "test", dropped) if test is not None else None
    if dev is None:
        k = 16 if k is None else k
        pool, stats = remove_overlap(files.read(train, "pool", dropped), test_split, dedup=True)
        train_idx, dev_idx = sample_indices(pool, spec.K, k, seed, label_names=spec.labels)
        train_split, dev_split = pool.subset(train_idx, "train"), pool.subset(dev_idx, "dev")
        used_seed: int | None = seed
        meta: dict[str, Any] = {**stats, "mode": "sampled"}
        if test_split is None:
            taken = np.zeros(len(pool), dtype=bool)
            taken[train_idx] = taken[dev_idx] = True
            rest = np.flatnonzero(~taken)
            test_split = pool.subset(rest, "test") if len(rest) else None
            meta["test"] = "rest of the pool" if len(rest) else None
    else:
        train_split = files.read(train, "train", dropped)
        dev_split = files.read(dev, "dev", dropped)
        counts = train_split.counts(spec.K)
        missing = [lab for lab, c in zip(spec.labels, counts, strict=True) if c == 0]
        if missing:
            raise LorankError(f"{train}: no training examples of label(s) {', '.join(missing)}")
        inferred_k = int(counts[0]) if len(set(counts.tolist())) == 1 else None  # balanced
        if k is not None and inferred_k != k:
            raise LorankError(f"{train}: not {k} examples per class (counts "
                              f"{dict(zip(spec.labels, counts.tolist(), strict=True))})")
        k, used_seed, meta = inferred_k, None, {"mode": "explicit"}
    meta.update(test_max=test_max, labels_inferred=files.labels_inferred,
                empty_text_dropped=dropped)
    source = f"custom:{Path(train)}"
    test_split = cap_test(test_split, test_max) if test_split is not None else None
    return FewShotData(task=spec, train=train_split, dev=dev_split, test=test_split, k=k,
                       seed=used_seed, source=source, meta=meta)
