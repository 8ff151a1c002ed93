"""A user's own CSV, TSV or JSONL data as FewShotData — a custom task needs no code.

Two ways to give the data:

* one file (``train=``, no ``dev=``): LM-BFF sampling with (k, seed) draws train (k per class)
  and dev (the next k per class) from it, after removing rows that repeat or occur in ``test``;
* explicit files (``train=`` and ``dev=``): used as they are (k inferred when train is balanced).

``test=`` is optional in both. Columns are named by ``text_a``, ``text_b`` (pairs) and ``label``;
``labels`` declares the label set and its order (label index = position).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lorank.data.dataset import FewShotData, Split
from lorank.data.readers import read_split
from lorank.data.sampling import cap_test, remove_overlap, sample_splits
from lorank.data.tasks import TaskSpec, custom_task, get_task, parse_labels
from lorank.errors import LorankError


def _spec(
    task: str | TaskSpec | None, labels: str | Sequence[str] | None, text_a: str,
    text_b: str | None, name: str,
) -> TaskSpec:
    """The task: a registered one (labels may be omitted) or one built from ``labels``."""
    if task is not None:
        spec = get_task(task)
        if labels is not None and parse_labels(labels) != spec.labels:
            raise LorankError(f"declared labels {list(parse_labels(labels))} differ from task "
                              f"{spec.name}'s labels {list(spec.labels)}")
        if spec.is_pair != (text_b is not None):
            need = "a text_b column" if spec.is_pair else "no text_b column"
            raise LorankError(f"task {spec.name} needs {need} "
                              f"(it has {len(spec.text_fields)} text field(s))")
        return spec
    if labels is None:
        raise LorankError("declare the label set of your data (e.g. --labels neg,pos)")
    fields = (text_a,) if text_b is None else (text_a, text_b)
    return custom_task(parse_labels(labels), name=name, text_fields=fields)


def _balanced_k(split: Split, K: int) -> int | None:
    counts = split.counts(K)
    return int(counts[0]) if len(set(counts.tolist())) == 1 else None


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
) -> FewShotData:
    """Load a user's labelled file(s).

    Args:
        train: the training file, or the single file to sample train/dev from (``dev`` None).
        dev: explicit dev file; when given, train/dev are used unsampled.
        test: optional test file (None: ``FewShotData.test`` is None).
        text_a, text_b, label: column names (``text_b`` only for sentence pairs).
        labels: declared label set (``"neg,pos"`` or a list); optional with ``task``.
        k: examples per class to sample (single-file mode, default 16); with explicit files, a
            k that train must match (None: inferred when train is balanced).
        seed: LM-BFF sampling seed (single-file mode).
        task: use a registered task's labels, template and verbaliser for this file.
        name: name of the custom task.
        fmt: ``"tsv"``, ``"csv"`` or ``"jsonl"`` (default: from each file's suffix).
        test_max: cap the test split MeZO-style (seed-42 shuffle, first ``test_max`` rows).
    """
    spec = _spec(task, labels, text_a, text_b, name)
    columns = (text_a,) if text_b is None else (text_a, text_b)

    def read(path: str | Path, split: str) -> Split:
        return read_split(path, name=split, text_columns=columns, label_column=label,
                          labels=spec.labels, fmt=fmt)

    test_split = read(test, "test") if test is not None else None
    if dev is None:
        k = 16 if k is None else k
        pool, stats = remove_overlap(read(train, "pool"), test_split, dedup=True)
        train_split, dev_split = sample_splits(pool, spec.K, k, seed, label_names=spec.labels)
        used_seed: int | None = seed
        meta: dict[str, object] = {**stats, "mode": "sampled"}
    else:
        train_split, dev_split = read(train, "train"), read(dev, "dev")
        counts = train_split.counts(spec.K)
        missing = [lab for lab, c in zip(spec.labels, counts, strict=True) if c == 0]
        if missing:
            raise LorankError(f"{train}: no training examples of label(s) {', '.join(missing)}")
        inferred = _balanced_k(train_split, spec.K)
        if k is not None and inferred != k:
            raise LorankError(f"{train}: not {k} examples per class (counts "
                              f"{dict(zip(spec.labels, counts.tolist(), strict=True))})")
        k, used_seed, meta = inferred, None, {"mode": "explicit"}
    meta["test_max"] = test_max
    source = f"custom:{Path(train)}"
    test_split = cap_test(test_split, test_max) if test_split is not None else None
    return FewShotData(task=spec, train=train_split, dev=dev_split, test=test_split, k=k,
                       seed=used_seed, source=source, meta=meta)
