"""The positive controls as sweep methods: ``planted`` and ``capacity`` (docs/experiments.md).

Both work on one fixed sample of the task's pool (``options.n_pool + n_dev + n_test`` rows in
LM-BFF's shuffled order for ``options.sample_seed``, :func:`lorank.data.lmbff.pool_sample`),
laid out as [train pool | dev | test]: its NTK features are computed once (on-disk cache, and
kept in memory for the next runs of the same sample), so the two controls cost one feature
computation. The runs of one setting that differ only in their rank train together in one
vectorised call.

``planted`` — one stored run = one student rank r for one (teacher rank s, N, seed) setting
(:mod:`lorank.linearized.planted`): the sample relabelled by a teacher of rank s (seed = the run's
seed), students trained at c·η0 of the teacher-labelled train split (cross-entropy, GD) and
selected on the teacher-labelled dev split exactly as the ``linearized`` method selects (dev
metric, then dev loss, then fewer steps). Options: ``teacher_rank`` (s, default 8), ``flip``
(φ, 0.25), ``n_train`` (N, 1024), ``subspace`` (q, 16; 0 = uniform factors).
Metrics: ``test_acc`` (selected student vs the teacher), ``w0_test_acc`` (the W0 head vs the
teacher: 1 − φ up to sampling), ``train_acc``, ``dev_acc``, ``teacher_rank``, ``n_train``,
``flip``, ``kappa``, ``teacher_fro``, ``selected_step``, ``selected_lr``, ``lr_mult``, ``eta0``
and the movement record.

``capacity`` — one stored run = one rank r for one (loss, seed) setting, with the sample's own
labels: train = a seeded subset of ``n_train`` rows of [train pool | dev] (N = 1,024 by default,
KN = 2,048 squared-loss targets against d(1) = 1,534 and d(2) = 3,064 for last-layer q,v of
MiniLM), test = the sample's test rows. It measures what each rank can reach on the training set:
``train_loss_gd`` (the lowest final train loss of GD over the c·η0 grid after ``steps``, the
budget the rank experiments use) and, for squared loss, ``als_floor`` — the converged floor by
alternating least squares (:mod:`lorank.linearized.als`; GD at this conditioning approaches it
far too slowly), with ``test_acc`` (GD) and ``als_test_acc``. Ranks are nested, so once a rank
interpolates (floor ≤ 1e-12) the higher ranks reuse its solution (``als_rank_solved`` says which
rank was solved). Options: ``n_train`` (1024),
``als_iters`` (15).

Shared options: ``n_pool`` (1024), ``n_dev`` (256), ``n_test`` (500), ``sample_seed`` (0),
``control`` (a report label).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from lorank.errors import LorankError, check_positive_ints
from lorank.experiments.config import RunConfig
from lorank.experiments.registry import RunContext, batch_ranks, register_method
from lorank.linearized.als import als_floor
from lorank.linearized.experiment import DTYPES, movement
from lorank.linearized.planted import PlantedData, PlantedSpec, planted_splits
from lorank.linearized.selection import select_checkpoint
from lorank.linearized.step_size import full_kernel_step
from lorank.linearized.train import LinearizedTraining, RunSpec, train_linearized
from lorank.models.lora_shape import layers_json
from lorank.ntk.features import Features

SAMPLE = {"n_pool": 1024, "n_dev": 256, "n_test": 500, "sample_seed": 0}
PLANTED = {**SAMPLE, "teacher_rank": 8, "flip": 0.25, "n_train": 1024, "subspace": 16,
           "control": "planted"}
CAPACITY = {**SAMPLE, "n_train": 1024, "als_iters": 15, "control": "capacity"}
_SAMPLES: OrderedDict[str, Features] = OrderedDict()  # one sample's features per process


def _options(config: RunConfig, defaults: dict[str, Any], *ints: str) -> dict[str, Any]:
    """The run's options over ``defaults``; LorankError on an unknown one, or unless
    n_pool, n_dev, n_test, n_train and ``ints`` are positive integers."""
    out = {**defaults, **config.known_options(tuple(defaults))}
    check_positive_ints(**{f"options.{name}": out[name]
                           for name in ("n_pool", "n_dev", "n_test", "n_train", *ints)})
    return out


def options(config: RunConfig) -> dict[str, Any]:
    """A ``planted`` run's options with defaults filled in (LorankError on a bad one)."""
    out = _options(config, PLANTED, "teacher_rank")
    if out["n_train"] > out["n_pool"]:
        raise LorankError(f"options.n_train ({out['n_train']}) exceeds options.n_pool "
                          f"({out['n_pool']})")
    PlantedSpec(out["teacher_rank"], float(out["flip"]), out["n_train"], config.seed,
                out["subspace"])
    return out


def capacity_options(config: RunConfig) -> dict[str, Any]:
    """A ``capacity`` run's options with defaults filled in (LorankError on a bad one)."""
    out = _options(config, CAPACITY, "als_iters")
    if out["n_train"] > out["n_pool"] + out["n_dev"]:
        raise LorankError(f"options.n_train ({out['n_train']}) exceeds options.n_pool + n_dev "
                          f"({out['n_pool'] + out['n_dev']})")
    return out


def _validate(config: RunConfig) -> None:
    options(config)
    if config.loss != "ce":
        raise LorankError("the planted control trains with cross-entropy (loss: ce)")


def _sample_features(config: RunConfig, opts: dict[str, Any], ctx: RunContext) -> Features:
    """Features of the controls' text sample (cached on disk and, per process, in memory)."""
    from lorank.data.lmbff import pool_sample
    from lorank.data.tasks import get_task
    from lorank.models import build_classifier, load_encoder
    from lorank.ntk.pipeline import split_features

    key = json.dumps([config.model, config.head, config.task, list(config.targets),
                      layers_json(config.layers),
                      config.max_length, config.dtype, *(opts[k] for k in SAMPLE)])
    if key in _SAMPLES:
        _SAMPLES.move_to_end(key)
        return _SAMPLES[key]
    if ctx.data_dir is None:
        raise LorankError(f"the {config.method} control samples texts from the task's pool: "
                          "pass --data-dir or set LORANK_DATA_DIR")
    n = opts["n_pool"] + opts["n_dev"] + opts["n_test"]
    sample = pool_sample(config.task, n, opts["sample_seed"], ctx.data_dir)
    enc = load_encoder(config.model, dtype=DTYPES[config.dtype], device=ctx.device)
    clf = build_classifier(enc, get_task(config.task), config.head)
    layers = layers_json(config.layers)
    feats, _, _ = split_features(clf, sample, targets=config.targets, layers=layers,
                                 max_length=config.max_length, seed=opts["sample_seed"],
                                 cache_root=str(ctx.cache_dir) if ctx.cache_dir else None)
    _SAMPLES.clear()  # one sample at a time: its J is large
    _SAMPLES[key] = feats
    return feats


def _lrs(train: Features, config: RunConfig) -> tuple[float | None, list[float], list[float]]:
    """(η0 or None, the c grid, the absolute learning rates) of a control's training."""
    eta0 = full_kernel_step(train, config.loss) if config.lr_unit == "eta0" else None
    grid = sorted(config.lrs)
    return eta0, grid, [c * eta0 for c in grid] if eta0 is not None else list(grid)


def _accuracy(f: Features, delta: torch.Tensor) -> float:
    return float(((f.f0 + f.apply(delta.to(f.f0.dtype))).argmax(1) == f.labels).double().mean())


def train_students(data: PlantedData, ranks: tuple[int, ...], config: RunConfig
                   ) -> dict[int, dict[str, Any]]:
    """Train every student rank × learning rate on the teacher-labelled train split, select on
    dev, and measure train/dev/test accuracy of the selected checkpoint per rank."""
    eta0, grid, lrs = _lrs(data.train, config)
    runs = [RunSpec(r, config.seed, float(lr), 0) for r in ranks for lr in lrs]
    settings = LinearizedTraining(steps=config.steps, loss="ce", eval_every=config.eval_interval,
                                  log_every=max(1, min(config.eval_interval, 10)))
    res = train_linearized([data.train], runs, settings, [data.dev])
    out = {}
    for r in ranks:
        idx = {run.lr: c for c, run in enumerate(res.runs) if run.rank == r}
        curves = {lr: (res.trajectories[c].dev_steps, res.trajectories[c].dev_metric,
                       res.trajectories[c].dev_loss) for lr, c in sorted(idx.items())}
        c = idx[select_checkpoint(curves).key]
        tr = res.trajectories[c]
        D = res.best[c].delta()
        out[r] = {"test_acc": _accuracy(data.test, D), "train_acc": _accuracy(data.train, D),
                  "dev_acc": _accuracy(data.dev, D), "selected_lr": tr.lr,
                  "selected_step": tr.best_step, "eta0": eta0,
                  "lr_mult": grid[lrs.index(tr.lr)] if eta0 is not None else None,
                  "diverged": any(res.trajectories[i].diverged_step is not None
                                  for i in idx.values()),
                  **movement(tr.to_dict(), tr.best_step, float(D.double().norm()))}
    return out


def _finite(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in metrics.items()}


@register_method("planted", validate=_validate, grouped=True)
def run(runs: Sequence[RunConfig], ctx: RunContext) -> dict[str, dict[str, Any]]:
    """The student ranks of one planted-teacher setting, trained together (module doc)."""
    config = runs[0]
    opts = options(config)
    spec = PlantedSpec(opts["teacher_rank"], float(opts["flip"]), opts["n_train"], config.seed,
                       opts["subspace"])
    data = planted_splits(_sample_features(config, opts, ctx), spec, opts["n_pool"],
                          opts["n_dev"])
    students = train_students(data, batch_ranks(runs), config)
    shared = {"w0_test_acc": data.w0_test_acc, "head_fitted": False,
              "teacher_rank": opts["teacher_rank"], "n_train": opts["n_train"],
              "flip": float(opts["flip"]), "flip_sample": data.flip_sample,
              "kappa": data.kappa, "teacher_fro": data.teacher_fro,
              "subspace": opts["subspace"], "n_test": data.test.N, "control": opts["control"]}
    return {run.run_id: {"metrics": _finite({**students[run.rank], **shared}), "curves": {}}
            for run in runs}


def capacity_splits(sample: Features, opts: dict[str, Any], seed: int
                    ) -> tuple[Features, Features]:
    """(train, test) of the capacity control: a seeded subset of ``n_train`` rows of
    [train pool | dev] with the sample's own labels, and the sample's test rows."""
    head = opts["n_pool"] + opts["n_dev"]
    gen = torch.Generator().manual_seed(int(seed))
    train_idx = torch.sort(torch.randperm(head, generator=gen)[:opts["n_train"]]).values
    return sample.subset(train_idx), sample.subset(torch.arange(head, sample.N))


def capacity_cell(train: Features, test: Features, ranks: tuple[int, ...], config: RunConfig,
                  als_iters: int) -> dict[int, dict[str, Any]]:
    """Per rank: GD over the c·η0 grid (the experiments' optimiser and budget) and, for
    squared loss, the ALS floor; train loss reached and test accuracy of each."""
    eta0, grid, lrs = _lrs(train, config)
    runs = [RunSpec(r, config.seed, float(lr), 0) for r in ranks for lr in lrs]
    als = _als_by_rank(train, ranks, config.seed, als_iters) if config.loss == "mse" else {}
    settings = LinearizedTraining(steps=config.steps, loss=config.loss, eval_every=config.steps,
                                  log_every=max(1, config.steps // 10), eval_early=False)
    res = train_linearized([train], runs, settings, None)
    out = {}
    for r in ranks:
        idx = [c for c, run in enumerate(res.runs) if run.rank == r]
        ok = [c for c in idx if res.trajectories[c].diverged_step is None]
        best = min(ok, key=lambda c: res.trajectories[c].loss[-1]) if ok else idx[0]
        tr = res.trajectories[best]
        D = res.final[best].delta()
        cell = {"train_loss_gd": tr.loss[-1] if ok else math.nan,
                "train_loss_init": tr.loss[0], "test_acc": _accuracy(test, D) if ok else math.nan,
                "train_acc": _accuracy(train, D) if ok else math.nan, "eta0": eta0,
                "selected_lr": tr.lr, "lr_mult": grid[lrs.index(tr.lr)] if eta0 else None,
                "selected_step": config.steps, "diverged": len(ok) < len(idx)}
        if r in als:
            fit, delta, source = als[r]
            cell.update(als_floor=fit.floor, als_iters=len(fit.losses) if source == r else 0,
                        als_rank_solved=source, als_test_acc=_accuracy(test, delta),
                        als_train_acc=_accuracy(train, delta))
        out[r] = cell
    return out


#: An ALS floor at or below this interpolates the targets (float64 least squares).
INTERPOLATED = 1e-12


def _als_by_rank(train: Features, ranks: tuple[int, ...], seed: int, iters: int
                 ) -> dict[int, tuple[Any, torch.Tensor, int]]:
    """Per rank: (ALS fit, its vec(ΔW), the rank actually solved). Ranks are nested (a rank-r
    update is a rank-r' update for r' ≥ r, so L*(r') ≤ L*(r)): once a rank interpolates
    (floor ≤ INTERPOLATED), every higher rank reuses its solution instead of a larger solve."""
    out: dict[int, tuple[Any, torch.Tensor, int]] = {}
    done = None
    for r in sorted(ranks):
        if done is None:
            fit = als_floor(train, r, seed=seed, iters=iters)
            delta = torch.cat([(b @ a).reshape(-1) for a, b in zip(fit.A, fit.B, strict=True)])
            out[r] = (fit, delta, r)
            if fit.floor <= INTERPOLATED:
                done = out[r]
        else:
            out[r] = done
    return out


@register_method("capacity", validate=capacity_options, grouped=True)
def run_capacity(runs: Sequence[RunConfig], ctx: RunContext) -> dict[str, dict[str, Any]]:
    """The ranks of one (loss, seed) capacity setting, fitted together (module doc)."""
    from lorank.theory import manifold_dim

    config = runs[0]
    opts = capacity_options(config)
    train, test = capacity_splits(_sample_features(config, opts, ctx), opts, config.seed)
    cells = capacity_cell(train, test, batch_ranks(runs), config, opts["als_iters"])

    def dim(q: int) -> int:
        return sum(manifold_dim(min(q, b.m, b.n), b.m, b.n) for b in train.blocks)

    return {run.run_id: {"metrics": _finite({
        **cells[run.rank], "K": train.K, "N": train.N, "KN": train.K * train.N,
        "d_rank": dim(run.rank), "d1": dim(1), "d2": dim(2), "control": opts["control"]}),
        "curves": {}} for run in runs}


__all__ = ["capacity_cell", "capacity_options", "capacity_splits", "options", "run",
           "run_capacity", "train_students"]
