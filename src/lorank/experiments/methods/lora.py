"""The ``lora`` sweep method: one stored run = real peft LoRA on one (task, model, seed, rank).

Once per features group (model, head, task, data seed, k, targets, layers, dtype, max_length,
test cap) and process, the run loads the split, builds the classifier and caches the frozen
lower layers' hidden states (:func:`lorank.finetune.run.prepare_data`). The method is grouped:
the runners hand it a batch (the runs of the group that differ only in their rank), trained
together: every rank × learning rate in one batched program
(:func:`lorank.finetune.batched.train_cells`; equal to peft one at a time to rounding, tested).
Each run then selects (lr, step) on the k-shot dev
split (LM-BFF), measures test accuracy of the selected and the final state and the
real-vs-linearized gap f(W0+ΔW) vs f(W0) + ⟨G, ΔW⟩ on the test split (:mod:`lorank.finetune.gap`)
through a peft adapter, attached for the measurement and detached again
(:func:`lorank.finetune.batched.measure_cell`).

Stored metrics (what :mod:`lorank.report` reads): ``test_acc``, ``test_acc_final``,
``w0_test_acc`` (f(W0); ``head_fitted`` says whether that head was fitted on train),
``metric`` (the task's), the movement record of :func:`lorank.linearized.experiment.movement`
(``moved``, ``train_loss_init``, ``train_loss_drop``, ``delta_fro``, …), ``dev_acc``,
``train_acc``, ``train_loss``, ``selected_lr``,
``selected_step``, ``ntk_gap`` (relative: ‖f − f_lin‖/‖f − f(W0)‖ on test, selected state),
``ntk_gap_final``, ``ntk_gap_max_abs``, ``argmax_agreement``, ``numerical_rank``,
``steps_per_s``, ``diverged``, ``engine``, ``ranks_trained_together``, ``computed_here``;
curves ``train_loss``, ``dev_steps``, ``dev_metric``, ``singular_values``.

Timing metrics (seconds): ``features_s`` — what *this run* spent loading the encoder, the split
and the classifier and running the frozen prefix over train/dev/test (0 when an earlier run of
the group in this process had done it); ``train_s`` — the training of the lr grid, dev
evaluations included: for the batched engine the whole vectorised call of the
``ranks_trained_together`` (shared by them, spent in this run only when ``computed_here``);
``test_s`` — this run's selection and measurement (final/selected-state metrics on
train/dev/test, the real-vs-linearized gap on test: JVPs). ``steps_per_s`` is the amortised
rate (the call's configuration-steps per second for the batched engine).

Learning rates: with ``lr_unit: eta0`` (the default) the grid ``lrs`` holds multiples c of the
kernel step η0 of the run's train split at W0 (the linearized model's, from the same cached NTK
features the ``linearized`` method uses; :mod:`lorank.linearized.step_size`), so real and
linearized runs of a cell try the same learning rates; ``lr_unit: abs`` takes them as given.
Stored: ``eta0`` and ``lr_mult`` (the selected c) next to ``selected_lr``.

Options: ``scaling`` (none|lora|rslora; default none, as the linearized engine), ``alpha``,
``weight_decay``, ``optimizer`` (gd|sgd|adam|adamw; default gd), ``batch_size``, ``engine``
(``batched``, the default, or ``sequential``: peft one configuration at a time,
:func:`lorank.finetune.run.finetune`, the reference).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from lorank.errors import check_choice
from lorank.experiments.config import RunConfig
from lorank.experiments.registry import RunContext, batch_ranks, per_run, register_method
from lorank.linearized.experiment import movement
from lorank.models.lora_shape import layers_json

_OPTIONS = ("scaling", "alpha", "weight_decay", "optimizer", "batch_size", "engine")
ENGINES = ("batched", "sequential")


def settings(config: RunConfig, metric: str = "accuracy") -> tuple[Any, Any]:
    """(AdapterConfig, LoraTraining) of a stored run; LorankError on a bad option."""
    from lorank.finetune.config import LoraTraining

    options = config.known_options(_OPTIONS)
    engine(config)
    lora = config.adapter()
    optimizer = options.get("optimizer", "gd")
    train = LoraTraining(lr=float(config.lrs[0]), steps=config.steps,
                         batch_size=None if optimizer == "gd" else options.get("batch_size"),
                         optimizer=optimizer, weight_decay=options.get("weight_decay", 0.0),
                         loss=config.loss, eval_every=config.eval_interval, metric=metric,
                         seed=config.init_seed or config.seed)
    return lora, train


def engine(config: RunConfig) -> str:
    """The run's training engine (option ``engine``; default ``batched``)."""
    return check_choice("lora option engine", config.option("engine", "batched"), ENGINES)


def _validate(config: RunConfig) -> None:
    from lorank.data.tasks import get_task

    if config.data is None:  # an unknown task fails here, before the sweep, not at run time
        get_task(config.task)
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
        memo.update(data=data, metric=selection_metric(data.task), fitted=fitted,
                    clf=build_classifier(enc, data.task, config.head,
                                         train=data.train if fitted else None,
                                         dev=data.dev if fitted else None))
    return memo


def kernel_step(config: RunConfig, ctx: RunContext, memo: dict[str, Any]) -> float | None:
    """η0 of the run's train split (memoised per group), or None for ``lr_unit: abs``."""
    if config.lr_unit != "eta0":
        return None
    if "eta0" not in memo:
        from lorank.linearized.step_size import split_kernel_step

        layers = layers_json(config.layers)
        memo["eta0"] = split_kernel_step(
            memo["clf"], memo["data"].train, targets=config.targets, layers=layers,
            max_length=config.max_length, loss=config.loss,
            weight_decay=float(config.option("weight_decay", 0.0)), k=config.k,
            seed=config.seed, cache_root=str(ctx.cache_dir) if ctx.cache_dir else None)
    return memo["eta0"]


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _prepared(memo: dict[str, Any], config: RunConfig, start: int) -> Any:
    """The group's prepared splits with the frozen prefix [0, start) cached (memoised)."""
    from lorank.finetune.run import prepare_data

    if memo.get("prepared") is None or memo["prepared"].start != start:
        memo["prepared"] = prepare_data(memo["clf"], memo["data"], start, config.max_length)
    return memo["prepared"]


def _sequential(config: RunConfig, memo: dict[str, Any], lora: Any, train: Any,
                lrs: tuple[float, ...]) -> tuple[Any, dict[str, Any]]:
    """peft one configuration at a time (the reference): this run's lr grid."""
    from lorank.finetune.adapter import attach_lora
    from lorank.finetune.run import finetune

    t0 = time.perf_counter()
    clf = memo["clf"]
    adapter = attach_lora(clf, lora, seed=train.seed)
    try:
        prepared = _prepared(memo, config, adapter.start)
        features_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        sel = finetune(clf, memo["data"], lora, train, lrs=list(lrs), prepared=prepared,
                       adapter=adapter, max_length=config.max_length)
        finetune_s = time.perf_counter() - t0
    finally:
        adapter.detach()
    train_s = sum(r.fit_s for r in sel.runs)
    return sel, {"features_s": features_s, "train_s": train_s, "test_s": finetune_s - train_s,
                 "computed_here": True, "ranks_trained_together": [config.rank]}


def _train_batched(runs: Sequence[RunConfig], memo: dict[str, Any], lrs: tuple[float, ...]
                   ) -> tuple[Any, Any, tuple[int, ...], float, float]:
    """Every rank × lr of the batch in one batched call: (problems, training, ranks,
    features_s, train_s)."""

    from lorank.finetune.batched import Cell, Problem, train_cells

    lora, train = settings(runs[0], memo["metric"])
    ranks = batch_ranks(runs)
    t0 = time.perf_counter()
    clf = memo["clf"]
    start = min(m.layer for m in clf.adapted_matrices(lora.targets, lora.layers))
    problems = {0: Problem(clf, _prepared(memo, runs[0], start))}
    features_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cells = [Cell(0, lora.at(r), train, lrs=tuple(lrs), init_seed=train.seed)
             for r in ranks]
    training = train_cells(problems, cells)
    return problems, training, ranks, features_s, time.perf_counter() - t0


@register_method("lora", validate=_validate, grouped=True)
def run_group(runs: Sequence[RunConfig], ctx: RunContext) -> dict[str, Any]:
    """Train a batch of real-LoRA cells (runs that differ only in their rank: every rank × lr
    in one batched call, or peft one at a time), then select and measure each; a run whose
    own part fails fails alone (module doc)."""
    from lorank.finetune.batched import measure_cell

    first = runs[0]
    t0 = time.perf_counter()
    memo = _group(first, ctx)
    eta0 = kernel_step(first, ctx, memo)
    shared_s = time.perf_counter() - t0
    lrs = tuple(c * eta0 for c in first.lrs) if eta0 is not None else tuple(first.lrs)
    kind = engine(first)
    if kind == "sequential":
        def one(run: RunConfig) -> tuple[Any, dict[str, Any]]:
            return _sequential(run, memo, *settings(run, memo["metric"]), lrs)
    else:
        problems, training, ranks, features_s, train_s = _train_batched(runs, memo, lrs)
        shared_s += features_s

        def one(run: RunConfig) -> tuple[Any, dict[str, Any]]:
            t0 = time.perf_counter()
            sel = measure_cell(problems, training, ranks.index(run.rank))
            return sel, {"features_s": 0.0, "train_s": train_s,
                         "test_s": time.perf_counter() - t0, "computed_here": run is first,
                         "ranks_trained_together": list(ranks)}

    def cell(run: RunConfig) -> dict[str, Any]:
        sel, timing = one(run)
        if run is first:
            timing["features_s"] += shared_s
        return _cell(run, memo, sel, timing, eta0, lrs, kind)

    return per_run(runs, cell)


def _cell(config: RunConfig, memo: dict[str, Any], sel: Any, timing: dict[str, Any],
          eta0: float | None, lrs: tuple[float, ...], kind: str) -> dict[str, Any]:
    """One run's stored metrics and curves from its selection."""
    rec = sel.record
    gap, final_gap = rec.gap, rec.final_gap
    metrics = {
        "metric": memo["metric"],
        "test_acc": _num(rec.test_accuracy), "test_acc_final": _num(rec.final_test_accuracy),
        "w0_test_acc": _num(rec.zero_shot_test_accuracy), "head_fitted": memo["fitted"],
        "test_metric": _num(rec.test_metric), "dev_acc": _num(rec.dev_accuracy),
        "train_acc": _num(rec.train_accuracy), "train_loss": _num(rec.train_loss),
        "selected_lr": rec.lr, "selected_step": rec.best_step, "eta0": eta0,
        "lr_mult": (config.lrs[lrs.index(rec.lr)] if eta0 is not None and rec.lr in lrs
                    else None),
        **movement({"steps": list(range(len(rec.loss_curve))), "loss": rec.loss_curve},
                   rec.best_step, rec.norms.get("delta_fro")),
        "ntk_gap": gap.relative if gap else float("nan"),
        "ntk_gap_final": final_gap.relative if final_gap else float("nan"),
        "ntk_gap_max_abs": gap.max_abs if gap else float("nan"),
        "argmax_agreement": gap.agreement if gap else float("nan"),
        "numerical_rank": max((d.numerical_rank for d in rec.delta), default=0),
        "steps_per_s": rec.steps_per_s,
        "diverged": any(r.status == "diverged" for r in sel.runs), "engine": kind,
        **timing,
    }
    curves = {
        "train_loss": [x for x in rec.loss_curve if x is not None and math.isfinite(x)],
        "dev_steps": [e.get("step") for e in rec.evals],
        "dev_metric": [e.get("dev_metric") for e in rec.evals],
        "singular_values": list(rec.delta[0].singular_values) if rec.delta else [],
    }
    return {"metrics": metrics, "curves": curves}
