r"""Real LoRA runs end to end: prepare the splits once, train over an lr × batch grid, select on
dev (LM-BFF), then measure the selected adapter on the test split.

For one classifier, one :class:`FewShotData` and one :class:`AdapterConfig`:

1. :func:`prepare_data` encodes train/dev/test and, when LoRA adapts only layers ≥ s, runs the
   frozen layers [0, s) once per example (:mod:`lorank.finetune.inputs`). Reused by every run
   of a sweep over ranks, seeds and learning rates with the same layer selection.
2. :func:`finetune` trains one adapter per grid point (lr, batch size), each from the same seeded
   initialisation, keeping the best-dev state of each (:func:`lorank.finetune.train.fit`); the
   grid point with the best dev accuracy wins, ties going to fewer steps, then to the smaller
   learning rate (:func:`select`).
3. The selected adapter is measured: train/dev/test accuracy and loss, ΔW spectra and numerical
   ranks (:mod:`lorank.finetune.metrics`), and the real-vs-linearized gap on the test split
   (:mod:`lorank.finetune.gap`). Every run yields a :class:`LoraRunRecord`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from lorank.errors import LorankError
from lorank.finetune.adapter import Adapter, attach_lora
from lorank.finetune.config import LoraTraining
from lorank.finetune.gap import LinearizationGap, linearization_gap
from lorank.finetune.inputs import PreparedSplit, predict, prepare_split
from lorank.finetune.metrics import DeltaStats, delta_stats
from lorank.finetune.train import FitResult, accuracy, fit, loss_fn, task_metric
from lorank.models.lora_shape import AdapterConfig


@dataclass
class PreparedData:
    """train/dev/(test) :class:`PreparedSplit` sharing one ``start`` (None = full forward)."""

    train: PreparedSplit
    dev: PreparedSplit
    test: PreparedSplit | None
    start: int | None


def prepare_data(clf: torch.nn.Module, data: Any, start: int | None, max_length: int = 128
                 ) -> PreparedData:
    """Encode ``data`` (a :class:`lorank.data.FewShotData`) and cache layers [0, start).

    ``start`` is the lowest adapted layer (:attr:`Adapter.start`), or None for no caching.
    """
    train = prepare_split(clf, data.train, start, max_length, "train")
    dev = prepare_split(clf, data.dev, start, max_length, "dev")
    test = None if data.test is None else prepare_split(clf, data.test, start, max_length, "test")
    return PreparedData(train, dev, test, start)


@dataclass
class LoraRunRecord:
    """Everything measured in one real-LoRA run (one grid point), JSON-ready via :meth:`to_dict`.

    ``status`` is ``"ok"`` or ``"diverged"`` (NaN/inf loss at ``diverged_step``; the best state
    seen before it is the one measured). Test fields and ``gap`` are filled for the run selected
    on dev (and left None for the other grid points); ``gap`` is measured at the selected state
    (NaN relative gap when that is step 0, ΔW = 0) and ``final_gap`` at the last step's state
    (when it differs); ``test_accuracy`` is the selected
    (best-dev) state's, ``final_test_accuracy`` the last step's (None if diverged); the
    ``*_metric`` fields hold the selection metric (``train["metric"]``: accuracy or F1).
    """

    lora: dict[str, Any]
    train: dict[str, Any]
    classifier: dict[str, Any]
    status: str
    steps: int
    best_step: int
    diverged_step: int | None
    loss_curve: list[float]
    evals: list[dict[str, float]]
    num_parameters: int
    dev_accuracy: float
    dev_metric: float = math.nan
    train_accuracy: float | None = None
    train_loss: float | None = None
    dev_loss: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    zero_shot_test_accuracy: float | None = None
    final_test_accuracy: float | None = None
    test_metric: float | None = None
    final_test_metric: float | None = None
    zero_shot_test_metric: float | None = None
    delta: list[DeltaStats] = field(default_factory=list)
    norms: dict[str, float] = field(default_factory=dict)
    gap: LinearizationGap | None = None
    final_gap: LinearizationGap | None = None
    fit_s: float = 0.0
    eval_s: float = 0.0
    steps_per_s: float = 0.0
    selected: bool = False

    @property
    def lr(self) -> float:
        return float(self.train["lr"])

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["delta"] = [d.to_dict() for d in self.delta]  # asdict made gap, final_gap dicts
        return out


def select(records: Sequence[LoraRunRecord]) -> int:
    """Index of the run to keep, by :func:`lorank.linearized.selection.select_checkpoint` over the
    runs' kept checkpoints: best dev metric (accuracy or F1), then the lower dev loss, then fewer
    steps, then to the
    earlier grid point (grids list learning rates in ascending order, so: the smaller learning
    rate). Runs whose every dev value is NaN (diverged from the start) are never chosen."""
    from lorank.linearized.selection import select_checkpoint

    if not records:
        raise LorankError("no runs to select from")
    # each run contributes the checkpoint it kept (its best-dev step, or its last with keep="last");
    # its dev loss breaks ties on the metric, as within a run
    curves = {i: ([r.best_step], [r.dev_metric], [_dev_loss_at(r, r.best_step)])
              for i, r in enumerate(records)}
    return int(select_checkpoint(curves, higher_is_better=True).key)


def _dev_loss_at(record: LoraRunRecord, step: int) -> float:
    """The dev loss the run measured at ``step`` (NaN if it did not evaluate there)."""
    for ev in record.evals:
        if ev.get("step") == step and ev.get("dev_loss") is not None:
            return float(ev["dev_loss"])
    return math.nan


def run_record(adapter: Adapter, lora: AdapterConfig, s: LoraTraining, res: FitResult
               ) -> LoraRunRecord:
    """The :class:`LoraRunRecord` of one trained grid point (test fields left for
    :func:`measure`); ``adapter`` gives the parameter count and the classifier."""
    clf = adapter.clf
    return LoraRunRecord(
        lora=lora.to_dict(), train=s.to_dict(),
        classifier=clf.config_dict() if hasattr(clf, "config_dict") else {},
        status="diverged" if res.diverged_step is not None else "ok", steps=res.steps,
        best_step=res.best_step, diverged_step=res.diverged_step, loss_curve=res.losses,
        evals=[asdict(e) for e in res.evals], num_parameters=adapter.num_parameters(),
        dev_accuracy=res.best_dev_accuracy, dev_metric=res.best_dev_metric,
        fit_s=res.wall_s,
        steps_per_s=res.steps / res.wall_s if res.wall_s > 0 else 0.0,
    )


def _split_metrics(clf: torch.nn.Module, data: PreparedSplit, loss: str,
                   metric: str = "accuracy") -> tuple[float, float, float]:
    """(accuracy, loss, metric) of the classifier's current state on a prepared split."""
    logits = predict(clf, data)
    return (accuracy(logits, data.y), float(loss_fn(logits, data.y, loss)),
            task_metric(logits, data.y, metric))


def measure(adapter: Adapter, record: LoraRunRecord, prepared: PreparedData, loss: str,
            gap: bool = True, metric: str = "accuracy") -> LoraRunRecord:
    """Fill the train/dev/test metrics, ΔW statistics, norms and (optionally) the real-vs-
    linearized gap of the adapter's current state into ``record``."""
    t0 = time.perf_counter()
    clf = adapter.clf
    record.train_accuracy, record.train_loss, _ = _split_metrics(clf, prepared.train, loss)
    _, record.dev_loss, _ = _split_metrics(clf, prepared.dev, loss)
    if prepared.test is not None:
        record.test_accuracy, record.test_loss, record.test_metric = _split_metrics(
            clf, prepared.test, loss, metric)
    deltas = adapter.delta_weights()
    record.delta = [delta_stats(path, d) for path, d in deltas.items()]
    params = adapter.parameters()
    record.norms = {
        "delta_fro": math.sqrt(sum(d.fro ** 2 for d in record.delta)),
        "delta_nuclear": sum(d.nuclear for d in record.delta),
        **{f"{f}_fro": math.sqrt(sum(float(p.detach().double().pow(2).sum())
                                     for n, p in params.items() if f".lora_{f}." in n))
           for f in "AB"},
    }
    if prepared.test is not None:
        if gap:
            record.gap = linearization_gap(adapter, prepared.test)
        with adapter.disabled():
            record.zero_shot_test_accuracy, _, record.zero_shot_test_metric = _split_metrics(
                clf, prepared.test, loss, metric)
    record.eval_s = time.perf_counter() - t0
    return record


@dataclass
class Selection:
    """The runs of one grid and the index of the selected one (measured in full)."""

    runs: list[LoraRunRecord]
    best: int

    @property
    def record(self) -> LoraRunRecord:
        return self.runs[self.best]


def grid(train: LoraTraining, lrs: Sequence[float] | None = None,
         batch_sizes: Sequence[int | None] | None = None) -> list[LoraTraining]:
    """The grid points of :func:`finetune`: ``train`` with each (lr, batch size), learning rates
    ascending (empty/None: just ``train.lr`` / ``train.batch_size``)."""
    return [replace(train, lr=lr, batch_size=bs)
            for lr in sorted(lrs or [train.lr]) for bs in (batch_sizes or [train.batch_size])]


def select_and_measure(adapter: Adapter, lora: AdapterConfig, points: Sequence[LoraTraining],
                       results: Sequence[FitResult], prepared: PreparedData,
                       train: LoraTraining, gap: bool = True) -> Selection:
    """Record the runs of one grid (:func:`run_record`), select among them (:func:`select`)
    and measure the selected one.

    ``adapter`` is attached with the grid's :class:`AdapterConfig` ``lora``; run i trained with
    ``points[i]`` and produced ``results[i]`` (best and final states as adapter-state dicts).
    The selected record gets the final state's test metric and gap (loaded first), then the
    selected state's full :func:`measure`; the adapter is left holding the selected state.
    """
    records = [run_record(adapter, lora, s, res) for s, res in zip(points, results, strict=True)]
    best = select(records)
    rec, res = records[best], results[best]
    rec.selected = True
    if res.final_state is not None and prepared.test is not None:
        adapter.load_state(res.final_state)
        rec.final_test_accuracy, _, rec.final_test_metric = _split_metrics(
            adapter.clf, prepared.test, train.loss, train.metric)
        if gap and rec.best_step != rec.steps:
            rec.final_gap = linearization_gap(adapter, prepared.test)
    adapter.load_state(res.best_state)
    measure(adapter, rec, prepared, train.loss, gap=gap, metric=train.metric)
    return Selection(records, best)


def finetune(
    clf: torch.nn.Module,
    data: Any,
    lora: AdapterConfig,
    train: LoraTraining,
    lrs: Sequence[float] | None = None,
    batch_sizes: Sequence[int | None] | None = None,
    init_seed: int | None = None,
    prepared: PreparedData | None = None,
    max_length: int = 128,
    gap: bool = True,
    adapter: Adapter | None = None,
) -> Selection:
    """Train real LoRA on ``data`` over an (lr, batch size) grid, select on dev, measure on test.

    Args:
        clf: a lorank classifier without adapter (one is attached and removed again), unless
            ``adapter`` (already attached with ``lora``) is given.
        data: a :class:`lorank.data.FewShotData` (train / dev / test splits).
        lora: the adapter (rank, α, targets, layers …).
        train: training settings; ``lrs`` / ``batch_sizes`` replace its lr / batch size per grid
            point (default: just ``train.lr`` / ``train.batch_size``).
        init_seed: seed of the adapter init (default ``train.seed``); every grid point starts
            from the same initial A.
        prepared: splits from :func:`prepare_data` with the right ``start`` (built if None).
        gap: measure real-vs-linearized predictions on test for the selected run.

    Returns:
        :class:`Selection`; its selected record has test metrics, ΔW stats and the gap.
    """
    points = grid(train, lrs, batch_sizes)
    seed = train.seed if init_seed is None else init_seed
    # a given adapter stays attached; an own one is detached on leaving the block
    own = attach_lora(clf, lora, seed=seed) if adapter is None else contextlib.nullcontext(adapter)
    with own as adapter:
        start = adapter.start if train.cache_prefix else None
        if prepared is None or prepared.start != start:
            prepared = prepare_data(clf, data, start, max_length)
        results = []
        for s in points:
            adapter.reset(seed)
            results.append(fit(adapter, prepared.train, prepared.dev, s))
        return select_and_measure(adapter, lora, points, results, prepared, train, gap)
