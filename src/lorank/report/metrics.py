"""Report columns from stored run metrics, for old and new stores alike.

:func:`prepare` adds, per finished run (one row of :func:`lorank.report.build.runs_frame`):

* ``K`` and ``metric``: the task's number of classes and primary metric
  (:attr:`lorank.data.TaskSpec.primary_metric`: "f1" for MRPC, else "accuracy"), decided per
  task × model × method so that one row of a table never mixes metrics (a group whose runs lack
  the primary metric falls back to accuracy, and says so);
* ``value`` / ``value_final``: that metric at the selected / final checkpoint
  (``test_acc``/``test_f1``, ``*_final``);
* ``w0`` and ``kernel``: the metric of f(W0) (``w0_test_*``; old stores: ``zero_shot_test_*``) and
  of kernel regression; ``acc``, ``w0_acc``, ``kernel_acc``: the same in accuracy (every task);
* ``head_fitted``: the head was fitted on the training split (stored ``head_fitted``; old stores:
  the pair and probe heads are fitted, verbaliser and prompt heads are not);
* ``moved``: training moved this cell (stored ``moved``; old stores: ``selected_step > 0``; no
  information: True). A cell that did not move is "did not train" in every verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

#: primary metric -> (selected, final, W0, W0 in old stores, kernel) metric columns.
COLUMNS = {
    "accuracy": ("test_acc", "test_acc_final", "w0_test_acc", "zero_shot_test_acc",
                 "kernel_test_acc"),
    "f1": ("test_f1", "test_f1_final", "w0_test_f1", "zero_shot_test_f1", "kernel_test_f1"),
}
LABELS = {"accuracy": "accuracy", "f1": "F1"}
FITTED_HEADS = ("pair", "probe")
GROUP = ["task", "model", "method"]


@dataclass(frozen=True)
class TaskInfo:
    """K classes and the primary metric of a task (registered, or read from the runs)."""

    K: int
    metric: str


def task_info(task: str, runs: pd.DataFrame | None = None) -> TaskInfo:
    """K and primary metric of a registered task; for a user's own data, K from its pinned label
    set (stored with the run as ``data.labels``; else the stored ``K`` metric, else 2) and the
    metric it asked for (``data.metric``; default accuracy)."""
    import json

    from lorank.data import get_task
    from lorank.data.tasks import REGISTRY
    from lorank.errors import LorankError

    def first(column: str):
        if runs is None or column not in runs:
            return None
        values = runs.loc[runs["task"] == task, column].dropna() if "task" in runs \
            else runs[column].dropna()
        return values.iloc[0] if not values.empty else None

    own = first("data.labels")
    if task not in REGISTRY or own is not None:
        if own is not None:
            labels = json.loads(own) if isinstance(own, str) else own
            metric = first("data.metric")
            return TaskInfo(len(labels), metric if metric in COLUMNS else "accuracy")
        K = first("K")
        if K is not None:
            return TaskInfo(int(K), "accuracy")
    try:
        spec = get_task(task)
        return TaskInfo(spec.K, spec.primary_metric)
    except LorankError:
        return TaskInfo(2, "accuracy")


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _first(row: pd.Series, *names: str) -> float:
    for name in names:
        if name in row.index:
            value = _num(row[name])
            if math.isfinite(value):
                return value
    return math.nan


def _moved(row: pd.Series) -> bool:
    value = row.get("moved")
    if value is not None and not (isinstance(value, float) and math.isnan(value)):
        return bool(value)
    step = _num(row.get("selected_step"))
    if math.isfinite(step):
        return step > 0
    return True


def _head_fitted(row: pd.Series) -> bool | None:
    value = row.get("head_fitted")
    if value is not None and not (isinstance(value, float) and math.isnan(value)):
        return bool(value)
    head = row.get("head")
    return head in FITTED_HEADS if isinstance(head, str) else None


def label_shots(df: pd.DataFrame, usual: int = 16) -> pd.DataFrame:
    """Runs of one task at several k (shots per class) become separate rows of every table:
    ``task`` of a run with k ≠ ``usual`` reads ``"<task> (<k>-shot)"`` whenever the task also
    ran at another k (the task's K then comes from the stored ``K`` metric)."""
    if df.empty or "k" not in df.columns:
        return df
    out = df.copy()
    ks = out.groupby("task")["k"].nunique()
    mixed = out["task"].isin(ks[ks > 1].index) & (out["k"] != usual)
    out.loc[mixed, "task"] = [f"{t} ({int(k)}-shot)" for t, k in
                              zip(out.loc[mixed, "task"], out.loc[mixed, "k"], strict=True)]
    return out


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of the engine runs with the report columns of the module doc added."""
    out = df.copy()
    if out.empty:
        for col in ("K", "metric", "value", "value_final", "w0", "kernel", "acc", "w0_acc",
                    "kernel_acc", "moved", "head_fitted"):
            out[col] = pd.Series(dtype=object)
        return out
    parts = []
    for _, sub in out.groupby(GROUP, sort=False):
        sub = sub.copy()
        info = task_info(sub["task"].iloc[0], sub)
        metric = info.metric
        if COLUMNS[metric][0] not in sub or sub[COLUMNS[metric][0]].isna().any():
            metric = "accuracy"
        sel, fin, w0, w0_old, ker = COLUMNS[metric]
        sub["K"] = info.K
        sub["metric"] = metric
        rows = [r for _, r in sub.iterrows()]
        for col, names in {"value": (sel,), "value_final": (fin,), "w0": (w0, w0_old),
                           "kernel": (ker,), "acc": ("test_acc",),
                           "w0_acc": ("w0_test_acc", "zero_shot_test_acc"),
                           "kernel_acc": ("kernel_test_acc",)}.items():
            sub[col] = [_first(r, *names) for r in rows]
        sub["moved"] = [_moved(r) for r in rows]
        sub["head_fitted"] = [_head_fitted(r) for r in rows]
        parts.append(sub)
    return pd.concat(parts).sort_index()


def prepared(df: pd.DataFrame) -> pd.DataFrame:
    """The runs with the report columns of :func:`prepare` (``df`` itself if it has them)."""
    return df if "value" in df.columns else prepare(df)
