"""Accuracy of a head at W0 on a task's test split, over the LM-BFF seeds (``lorank zeroshot``).

For a zero-shot head (verbalizer, prompt) f(x; W0) does not depend on the seed, and the test file
is the same for every seed (LM-BFF), so the test logits are computed once. For a fitted head
(probe, pair) the encoder features φ(x; W0) of the test split are computed once and each seed's
head (W_s, b_s), fitted on that seed's train split with C chosen on its dev split, is applied to
them: logits_s = φ(x; W0) W_s^T + b_s. Accuracy = mean over test rows of [argmax_k logit_k = y].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lorank.errors import LorankError
from lorank.models.encoder import Encoder
from lorank.models.factory import FITTED_HEADS, build_classifier

LMBFF_SEEDS = (13, 21, 42, 87, 100)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean of [argmax_k logits[i, k] == labels[i]]."""
    return float((np.asarray(logits).argmax(axis=1) == np.asarray(labels)).mean())


def _same_rows(a: Any, b: Any) -> bool:
    return a.text_a == b.text_a and a.text_b == b.text_b and np.array_equal(a.labels, b.labels)


def evaluate_head(enc: Encoder, task: Any, head: str, seeds: Sequence[int] = LMBFF_SEEDS,
                  data_dir: str | None = None, test_max: int | None = None, k: int = 16,
                  batch_size: int = 64, max_length: int = 128,
                  load_data: Callable[[int], Any] | None = None, **head_kw: Any
                  ) -> dict[str, Any]:
    """Test accuracy of ``head`` per seed, its mean ± std (population std over seeds), and the
    majority-class rate of the test split. Returns a JSON-ready dict.

    ``load_data(seed) -> FewShotData`` replaces the registered task's loader (a user's own
    files, :func:`lorank.data.source.load_source`)."""
    from lorank.data.dataset import majority_rate
    from lorank.data.load import load_task

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise LorankError("give at least one seed")
    per_seed: list[dict[str, Any]] = []
    test = X_test = zs_logits = None
    clf = None
    for seed in seeds:
        data = (load_data(seed) if load_data is not None else
                load_task(task, k=k, seed=seed, data_dir=data_dir, test_max=test_max))
        if data.test is None:
            raise LorankError(f"task {data.task.name} has no test split (give one with "
                              "--test-data FILE)")
        if test is None or not _same_rows(test, data.test):
            test, X_test, zs_logits = data.test, None, None
        if head in FITTED_HEADS:
            if clf is None:
                clf = build_classifier(enc, data.task, head, train=data.train, dev=data.dev,
                                       **head_kw)
            else:
                clf.fit(data.train, data.dev, max_length=max_length,
                        **{k: v for k, v in head_kw.items() if k == "C_grid"})
            if X_test is None:
                X_test = clf.feature_matrix(test, batch_size, max_length)
            W, b = clf.head_weight.double().cpu().numpy(), clf.head_bias.double().cpu().numpy()
            logits = X_test @ W.T + b
            extra = {"C": clf.fit_result.C, "dev_accuracy": clf.fit_result.dev_accuracy,
                     "train_accuracy": clf.fit_result.train_accuracy}
        else:
            if clf is None:
                clf = build_classifier(enc, data.task, head, **head_kw)
            if zs_logits is None:
                zs_logits = clf.logits(test, batch_size, max_length)
            logits, extra = zs_logits, {}
        row = {"seed": seed, "accuracy": accuracy(logits, test.labels), **extra}
        if data.task.primary_metric == "f1":
            row["f1"] = f1_positive(logits, test.labels)
        per_seed.append(row)
    accs = np.array([r["accuracy"] for r in per_seed])
    fitted = head in FITTED_HEADS
    out = {"model": enc.name, "task": clf.task.name, "head": head, "k": data.k,
           "fitted": fitted,
           "what": "head at W0 (fitted on train)" if fitted else "zero-shot",
           "test_rows": len(test), "test_max": test_max,
           "majority_rate": majority_rate(test), "mean": float(accs.mean()),
           "std": float(accs.std()), "per_seed": per_seed, "classifier": clf.config_dict()}
    if data.task.primary_metric == "f1":
        f1s = np.array([r["f1"] for r in per_seed])
        out.update(metric="f1", f1_mean=float(f1s.mean()), f1_std=float(f1s.std()),
                   f1_always_positive=f1_positive(np.tile([0.0, 1.0], (len(test), 1)),
                                                  test.labels))
    return out


def f1_positive(logits: np.ndarray, labels: Sequence[int]) -> float:
    """F1 of label index 1 (the positive class of MRPC/QQP in GLUE and LM-BFF) of the argmax
    predictions: 2·TP / (2·TP + FP + FN) (0 when there are no positives at all)."""
    pred = np.asarray(logits).argmax(axis=1) == 1
    true = np.asarray(labels) == 1
    tp, fp, fn = int((pred & true).sum()), int((pred & ~true).sum()), int((~pred & true).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
