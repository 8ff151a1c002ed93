"""The ``lora`` sweep method: one stored run = real peft LoRA on one (task, model, seed, rank).

Once per features group (model, head, task, data seed, k, targets, layers, dtype, max_length,
test cap) and process, the run loads the split, builds the classifier and caches the frozen
lower layers' hidden states (:func:`lorank.finetune.run.prepare_data`); then it attaches a rank-r
adapter, trains it for every learning rate of the grid, selects (lr, step) on the k-shot dev
split (LM-BFF), measures test accuracy of the selected and the final state and the
real-vs-linearized gap f(W0+ΔW) vs f(W0) + ⟨G, ΔW⟩ on the test split
(:mod:`lorank.finetune.gap`), and detaches the adapter.

Stored metrics (what :mod:`lorank.report` reads): ``test_acc``, ``test_acc_final``,
``zero_shot_test_acc``, ``dev_acc``, ``train_acc``, ``train_loss``, ``selected_lr``,
``selected_step``, ``ntk_gap`` (relative: ‖f − f_lin‖/‖f − f(W0)‖ on test, selected state),
``ntk_gap_final``, ``ntk_gap_max_abs``, ``argmax_agreement``, ``numerical_rank``,
``steps_per_s``, ``diverged``; curves ``train_loss``, ``dev_steps``, ``dev_metric``,
``singular_values``.

Timing metrics (seconds, this run only): ``features_s`` — loading the encoder, split and
classifier and running the frozen prefix over train/dev/test (0 when memoised in this process),
plus attaching the adapter; ``train_s`` — the GD fits over the lr grid (dev evaluations every
``eval_interval`` steps included); ``test_s`` — the rest of :func:`~lorank.finetune.run.finetune`:
final/selected-state metrics on train/dev/test and the real-vs-linearized gap on test (JVPs).

Learning rates: with ``lr_unit: eta0`` (the default) the grid ``lrs`` holds multiples c of the
kernel step η0 of the run's train split at W0 (the linearized model's, from the same cached NTK
features the ``linearized`` method uses; :mod:`lorank.linearized.step_size`), so real and
linearized runs of a cell try the same learning rates; ``lr_unit: abs`` takes them as given.
Stored: ``eta0`` and ``lr_mult`` (the selected c) next to ``selected_lr``.

Options: ``scaling`` (none|lora|rslora; default none, as the linearized engine), ``alpha``,
``weight_decay``, ``optimizer`` (gd|sgd|adam|adamw; default gd), ``batch_size``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from lorank.errors import LorankError
from lorank.experiments.config import RunConfig
from lorank.experiments.registry import RunContext, register_method

_OPTIONS = ("scaling", "alpha", "weight_decay", "optimizer", "batch_size")


def settings(config: RunConfig, metric: str = "accuracy") -> tuple[Any, Any]:
    """(LoraSettings, TrainSettings) of a stored run; LorankError on a bad option."""
    from lorank.finetune.config import LoraSettings, TrainSettings

    options = config.options.to_json()
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise LorankError(f"unknown lora option {unknown[0]!r}; known: {', '.join(_OPTIONS)}")
    layers = config.layers if isinstance(config.layers, str) else tuple(config.layers)
    lora = LoraSettings(r=config.rank, alpha=options.get("alpha", 1.0),
                        scaling=options.get("scaling", "none"), targets=tuple(config.targets),
                        layers=layers, init="fan_in")
    optimizer = options.get("optimizer", "gd")
    train = TrainSettings(lr=float(config.lrs[0]), steps=config.steps,
                          batch_size=None if optimizer == "gd" else options.get("batch_size"),
                          optimizer=optimizer, weight_decay=options.get("weight_decay", 0.0),
                          loss=config.loss, eval_every=config.eval_interval, metric=metric,
                          seed=config.init_seed or config.seed)
    return lora, train


def _validate(config: RunConfig) -> None:
    settings(config)


def _group(config: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """Data and classifier of the run's features group (memoised per process)."""
    import torch

    from lorank.data.load import load_task
    from lorank.data.source import load_source
    from lorank.linearized.experiment import DTYPES, selection_metric
    from lorank.models import build_classifier, load_encoder
    from lorank.models.factory import FITTED_HEADS

    memo = ctx.cache.get_or_build("lora", config.features_key, dict)
    if "clf" not in memo:
        torch.manual_seed(0)
        enc = load_encoder(config.model, dtype=DTYPES[config.dtype], device=ctx.device)
        if config.data is not None:  # a user's own files
            data = load_source(config.data, k=config.k if config.data.sampled else None,
                               seed=config.seed, test_max=config.test_cap)
        else:
            data = load_task(config.task, k=config.k, seed=config.seed,
                             data_dir=str(ctx.data_dir) if ctx.data_dir else None,
                             test_max=config.test_cap)
        fitted = config.head in FITTED_HEADS
        memo.update(data=data, metric=selection_metric(data.task), clf=build_classifier(
            enc, data.task, config.head, train=data.train if fitted else None,
            dev=data.dev if fitted else None))
    return memo


def kernel_step(config: RunConfig, ctx: RunContext, memo: dict[str, Any]) -> float | None:
    """η0 of the run's train split (memoised per group), or None for ``lr_unit: abs``."""
    if config.lr_unit != "eta0":
        return None
    if "eta0" not in memo:
        from lorank.linearized.step_size import split_kernel_step

        layers = config.layers if isinstance(config.layers, str) else list(config.layers)
        memo["eta0"] = split_kernel_step(
            memo["clf"], memo["data"].train, targets=config.targets, layers=layers,
            max_length=config.max_length, loss=config.loss,
            weight_decay=float(config.option("weight_decay", 0.0)), k=config.k,
            seed=config.seed, cache_root=str(ctx.cache_dir) if ctx.cache_dir else None)
    return memo["eta0"]


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


@register_method("lora", validate=_validate)
def run(config: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """Train, select and measure one real-LoRA cell; see the module doc."""
    from lorank.finetune.adapter import attach_lora
    from lorank.finetune.run import finetune, prepare_data

    t0 = time.perf_counter()
    memo = _group(config, ctx)
    clf, data = memo["clf"], memo["data"]
    lora, train = settings(config, memo["metric"])
    eta0 = kernel_step(config, ctx, memo)
    lrs = [c * eta0 for c in config.lrs] if eta0 is not None else list(config.lrs)
    adapter = attach_lora(clf, lora, seed=train.seed)
    try:
        if memo.get("prepared") is None or memo["prepared"].start != adapter.start:
            memo["prepared"] = prepare_data(clf, data, adapter.start, config.max_length)
        features_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        sel = finetune(clf, data, lora, train, lrs=lrs, prepared=memo["prepared"],
                       adapter=adapter, max_length=config.max_length)
        finetune_s = time.perf_counter() - t0
    finally:
        adapter.detach()
    rec = sel.record
    train_s = sum(r.fit_s for r in sel.runs)
    gap, final_gap = rec.gap, rec.final_gap
    metrics = {
        "test_acc": _num(rec.test_accuracy), "test_acc_final": _num(rec.final_test_accuracy),
        "zero_shot_test_acc": _num(rec.zero_shot_test_accuracy),
        "test_metric": _num(rec.test_metric), "dev_acc": _num(rec.dev_accuracy),
        "train_acc": _num(rec.train_accuracy), "train_loss": _num(rec.train_loss),
        "selected_lr": rec.lr, "selected_step": rec.best_step, "eta0": eta0,
        "lr_mult": (config.lrs[lrs.index(rec.lr)] if eta0 is not None and rec.lr in lrs
                    else None),
        "ntk_gap": gap.relative if gap else float("nan"),
        "ntk_gap_final": final_gap.relative if final_gap else float("nan"),
        "ntk_gap_max_abs": gap.max_abs if gap else float("nan"),
        "argmax_agreement": gap.agreement if gap else float("nan"),
        "numerical_rank": max((d.numerical_rank for d in rec.delta), default=0),
        "steps_per_s": rec.steps_per_s,
        "diverged": any(r.status == "diverged" for r in sel.runs),
        "features_s": features_s, "train_s": train_s, "test_s": finetune_s - train_s,
    }
    curves = {
        "train_loss": [x for x in rec.loss_curve if x is not None and math.isfinite(x)],
        "dev_steps": [e.get("step") for e in rec.evals],
        "dev_metric": [e.get("dev_metric") for e in rec.evals],
        "singular_values": list(rec.delta[0].singular_values) if rec.delta else [],
    }
    return {"metrics": metrics, "curves": curves}
