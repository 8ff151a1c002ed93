"""The ``planted`` sweep method: the planted-rank positive control (:mod:`.planted`) as runs.

One stored run = one student rank r for one (teacher rank s, N, seed) setting. The texts are a
fixed sample of the task's pool (``options.n_pool + n_dev + n_test`` rows in LM-BFF's shuffled
order for ``options.sample_seed``, :func:`lorank.data.lmbff.pool_sample`): their NTK features are
computed once (on-disk cache, and kept in memory for the next settings of the same sample),
relabelled by a teacher of rank s (seed = the run's seed) and split into a train pool, dev and
test. The student ranks of one setting train together in one vectorised call, at c·η0 of the
teacher-labelled train features, and are selected on the teacher-labelled dev split exactly as
the ``linearized`` method selects (dev metric, then dev loss, then fewer steps).

Options: ``teacher_rank`` (s, default 8), ``flip`` (φ, 0.25), ``n_train`` (N, 1024),
``n_pool`` (1024), ``n_dev`` (256), ``n_test`` (500), ``sample_seed`` (0), ``control``
(a report label). Stored metrics: ``test_acc`` (selected student vs the teacher's labels),
``w0_test_acc`` (the W0 head vs the teacher's labels: 1 − φ up to sampling), ``train_acc``,
``dev_acc``, ``teacher_rank``, ``n_train``, ``flip``, ``kappa``, ``teacher_fro``,
``selected_step``, ``selected_lr``, ``lr_mult``, ``eta0`` and the movement record of
:func:`lorank.linearized.experiment.movement`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from typing import Any

from lorank.errors import LorankError
from lorank.experiments.config import RunConfig
from lorank.experiments.registry import RunContext, register_method
from lorank.linearized.experiment import DTYPES, movement
from lorank.linearized.planted import PlantedData, PlantedSpec, planted_splits
from lorank.linearized.selection import select_checkpoint
from lorank.linearized.step_size import full_kernel_step
from lorank.linearized.train import RunSpec, TrainSettings, train_linearized

DEFAULTS: dict[str, Any] = {"teacher_rank": 8, "flip": 0.25, "n_train": 1024, "n_pool": 1024,
                            "n_dev": 256, "n_test": 500, "sample_seed": 0, "control": "planted"}
_SAMPLES: OrderedDict[str, Any] = OrderedDict()  # one sample's features per process


def options(config: RunConfig) -> dict[str, Any]:
    """The run's options with defaults filled in (LorankError on an unknown or bad one)."""
    given = config.options.to_json()
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise LorankError(f"unknown planted option {unknown[0]!r}; known: "
                          + ", ".join(DEFAULTS))
    out = {**DEFAULTS, **given}
    for name in ("teacher_rank", "n_train", "n_pool", "n_dev", "n_test"):
        v = out[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise LorankError(f"options.{name} must be a positive integer, got {v!r}")
    if out["n_train"] > out["n_pool"]:
        raise LorankError(f"options.n_train ({out['n_train']}) exceeds options.n_pool "
                          f"({out['n_pool']})")
    PlantedSpec(out["teacher_rank"], float(out["flip"]), out["n_train"], config.seed)
    return out


def _validate(config: RunConfig) -> None:
    options(config)
    if config.loss != "ce":
        raise LorankError("the planted control trains with cross-entropy (loss: ce)")


def _sample_features(config: RunConfig, opts: dict[str, Any], ctx: RunContext):
    """Features of the control's text sample (cached on disk and, per process, in memory)."""
    from lorank.data.lmbff import pool_sample
    from lorank.data.tasks import get_task
    from lorank.models import build_classifier, load_encoder
    from lorank.ntk.pipeline import split_features

    key = json.dumps([config.model, config.head, config.task, list(config.targets),
                      config.layers if isinstance(config.layers, str) else list(config.layers),
                      config.max_length, config.dtype, opts["n_pool"], opts["n_dev"],
                      opts["n_test"], opts["sample_seed"]])
    if key in _SAMPLES:
        _SAMPLES.move_to_end(key)
        return _SAMPLES[key]
    if ctx.data_dir is None:
        raise LorankError("the planted control samples texts from the task's pool: pass "
                          "--data-dir or set LORANK_DATA_DIR")
    n = opts["n_pool"] + opts["n_dev"] + opts["n_test"]
    sample = pool_sample(config.task, n, opts["sample_seed"], ctx.data_dir)
    enc = load_encoder(config.model, dtype=DTYPES[config.dtype], device=ctx.device)
    clf = build_classifier(enc, get_task(config.task), config.head)
    layers = config.layers if isinstance(config.layers, str) else list(config.layers)
    feats, _, _ = split_features(clf, sample, targets=config.targets, layers=layers,
                                 max_length=config.max_length, seed=opts["sample_seed"],
                                 cache_root=str(ctx.cache_dir) if ctx.cache_dir else None)
    _SAMPLES.clear()  # one sample at a time: its J is large
    _SAMPLES[key] = feats
    return feats


def _digest(config: RunConfig) -> str:
    identity = {k: v for k, v in config.identity().items() if k != "rank"}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


def train_students(data: PlantedData, ranks: tuple[int, ...], config: RunConfig
                   ) -> dict[int, dict[str, Any]]:
    """Train every student rank × learning rate on the teacher-labelled train split, select on
    dev, and measure train/dev/test accuracy of the selected checkpoint per rank."""
    eta0 = full_kernel_step(data.train, "ce") if config.lr_unit == "eta0" else None
    grid = sorted(config.lrs)
    lrs = [c * eta0 for c in grid] if eta0 is not None else list(grid)
    runs = [RunSpec(r, config.seed, float(lr), 0) for r in ranks for lr in lrs]
    settings = TrainSettings(steps=config.steps, loss="ce", eval_every=config.eval_interval,
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
        acc = {name: float(((f.f0 + f.J @ D.to(f.J.dtype)).argmax(1) == f.labels)
                           .double().mean())
               for name, f in (("train", data.train), ("dev", data.dev), ("test", data.test))}
        fro = float(D.double().norm())
        out[r] = {"test_acc": acc["test"], "train_acc": acc["train"], "dev_acc": acc["dev"],
                  "selected_lr": tr.lr, "selected_step": tr.best_step, "eta0": eta0,
                  "lr_mult": grid[lrs.index(tr.lr)] if eta0 is not None else None,
                  "diverged": any(res.trajectories[i].diverged_step is not None
                                  for i in idx.values()),
                  **movement(tr.to_dict(), tr.best_step, fro)}
    return out


@register_method("planted", validate=_validate)
def run(config: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """One student rank of a planted-teacher setting (see the module doc)."""
    opts = options(config)
    memo = ctx.cache.get_or_build("planted", config.features_key, dict)
    slot = _digest(config)
    if slot not in memo:
        ranks = tuple(sorted({c.rank for c in ctx.group if c.method == "planted"
                              and _digest(c) == slot} | {config.rank}))
        sample = _sample_features(config, opts, ctx)
        spec = PlantedSpec(opts["teacher_rank"], float(opts["flip"]), opts["n_train"],
                           config.seed)
        data = planted_splits(sample, spec, opts["n_pool"], opts["n_dev"])
        memo[slot] = (data, train_students(data, ranks, config))
    data, students = memo[slot]
    if config.rank not in students:
        raise LorankError(f"rank {config.rank} was not trained with its group")
    cell = students[config.rank]
    metrics = {**cell, "w0_test_acc": data.w0_test_acc, "head_fitted": False,
               "teacher_rank": opts["teacher_rank"], "n_train": opts["n_train"],
               "flip": float(opts["flip"]), "flip_sample": data.flip_sample,
               "kappa": data.kappa, "teacher_fro": data.teacher_fro,
               "n_test": data.test.N, "control": opts["control"]}
    return {"metrics": {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                        for k, v in metrics.items()}, "curves": {}}


__all__ = ["options", "run", "train_students"]
