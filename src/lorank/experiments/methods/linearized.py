"""The ``linearized`` sweep method: one stored run = one (task, model, seed, rank) cell.

Once per features group (model, head, task, data seed, k, targets, layers, dtype, max_length,
test cap) and process, the run loads the split, builds the classifier and computes — or reads
from the on-disk cache — the NTK features of train and dev. All runs of the group that differ
only in their rank (one batch) are trained together, every rank × learning rate in one
vectorised call (the features are read once per step for all of them): the method is grouped
(:func:`lorank.experiments.registry.register_method`), the runners hand it the batch. Each run
selects (lr, step) on the k-shot dev split and evaluates zero-shot f(W0), the kernel-regression
baseline, the selected and the final checkpoint on the test split (streamed Jacobians or
forward-mode products, whichever is cheaper). It is
:func:`lorank.linearized.experiment.run_linearized_sweep` with the group's ranks.

Stored metrics (what :mod:`lorank.report` reads): ``test_acc`` (selected checkpoint, the headline),
``test_acc_final``, ``w0_test_acc`` (f(W0): the head before adapter training; ``head_fitted``
says whether that head was fitted on the train split, i.e. whether it is zero-shot),
``kernel_test_acc``, ``dev_acc``, ``train_acc``, ``train_loss``, ``test_f1*`` when the task
reports F1 (``metric`` names the task's primary metric), ``selected_lr``, ``selected_step``,
``lr_mult`` (the selected learning rate in units of ``eta0``, the kernel step; null for an
absolute grid), ``train_loss_best_lr`` (the lowest final train loss over the lr grid: what
the optimiser can reach, for the capacity control), the movement record ``train_loss_init``,
``train_loss_selected``, ``train_loss_drop``, ``delta_fro`` (‖ΔW‖_F of the selected
checkpoint) and ``moved`` (:func:`lorank.linearized.experiment.movement`), ``pl_min``,
``numerical_rank``, ``nuclear_norm``, ``diverged``; curves ``train_loss``, ``pl_ratio``,
``grad_norm2``, ``dev_metric``, ``singular_values``.

Timing metrics (seconds): ``features_s`` — what *this run* spent loading the encoder, the split,
the classifier and the train/dev NTK features (Jacobians, or the on-disk cache), 0 when an
earlier run of the group in this process had loaded them; ``train_s`` (vectorised GD over every
rank × lr of the call, dev evaluations included), ``kernel_s`` (kernel-regression baseline) and
``test_s`` (zero-shot, kernel, selected and final checkpoints on the test split: streamed
Jacobians/JVPs) of the vectorised call that produced this run's record — shared by the
``ranks_trained_together``, and spent in this run only when ``computed_here`` is true.

Options (``options:`` in a sweep spec): ``scaling`` (none|lora|rslora, default none as in Jang et
al.'s code), ``alpha``, ``weight_decay``, ``optimizer`` (gd|sgd|adam), ``batch_size``,
``memory_budget_mb``, ``mse_target``, ``engine``, ``control`` (a label the report uses to find
a positive control's runs; no effect on training). The learning-rate grid ``lrs`` is in units of
the kernel step η0 when ``lr_unit`` is ``eta0`` (the default), absolute when it is ``abs``. The
LoRA init seed is ``init_seed`` when non-zero, else the data seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from lorank.errors import LorankError
from lorank.experiments.config import RunConfig
from lorank.experiments.registry import RunContext, batch_ranks, per_run, register_method
from lorank.linearized.experiment import SweepConfig, load_seeds, run_linearized_sweep
from lorank.linearized.train import LinearizedTraining

_OPTIONS = ("scaling", "alpha", "weight_decay", "optimizer", "batch_size", "memory_budget_mb",
            "mse_target", "engine")
#: the options that are training settings (scaling and α belong to the adapter; the rest
#: configure the features).
_TRAIN_OPTIONS = ("weight_decay", "optimizer", "batch_size", "mse_target", "engine")
_ADAPTER_OPTIONS = ("scaling", "alpha")
#: Options that label runs for the report and do not reach the engine.
_LABELS = ("control",)


def sweep_config(config: RunConfig, ctx: RunContext | None = None) -> SweepConfig:
    """The one-cell :class:`SweepConfig` of a stored run (LorankError on a bad option)."""
    options = config.known_options(_OPTIONS + _LABELS)
    seed = config.seed
    train = LinearizedTraining(steps=config.steps, eval_every=config.eval_interval,
                               loss=config.loss,
                               **{k: options[k] for k in _TRAIN_OPTIONS if k in options})
    return SweepConfig(
        task=config.task, model=config.model, head=config.head, adapter=config.adapter(),
        seeds=(seed,), lrs=tuple(config.lrs),
        lr_unit=config.lr_unit, k=config.k, train=train,
        test_max=config.test_cap, max_length=config.max_length, dtype=config.dtype,
        device=ctx.device if ctx is not None else "cpu",
        data_dir=str(ctx.data_dir) if ctx is not None and ctx.data_dir else None,
        cache_root=str(ctx.cache_dir) if ctx is not None and ctx.cache_dir else None,
        data=config.data, **{k: options[k] for k in _OPTIONS if k in options
                             and k not in _TRAIN_OPTIONS + _ADAPTER_OPTIONS})


def _validate(config: RunConfig) -> None:
    from lorank.data.tasks import get_task

    if config.data is None:  # an unknown task fails here, before the sweep, not at run time
        get_task(config.task)
    sweep_config(config)
    if config.init_seed not in (0, config.seed):
        raise LorankError("linearized runs initialise LoRA with the data seed; leave init_seed "
                          "at 0")


def _metric(split: dict, name: str) -> float:
    value = split.get(name)
    return float("nan") if value is None else float(value)


@register_method("linearized", validate=_validate, grouped=True)
def run_group(runs: Sequence[RunConfig], ctx: RunContext) -> dict[str, Any]:
    """Train every rank of a batch (runs that differ only in their rank) in one vectorised
    call, then select and evaluate each (task, model, seed, rank) cell; see the module doc."""
    first = runs[0]
    cfg = sweep_config(first, ctx)
    # one memo per features group and process: the data, classifier and train/dev features
    memo = ctx.cache.get_or_build("linearized", first.features_key, dict)
    t0 = time.perf_counter()
    if "seeds" not in memo:
        memo["seeds"] = load_seeds(cfg)
    features_s = time.perf_counter() - t0
    adapter = replace(cfg.adapter, ranks=tuple(batch_ranks(runs)))
    result = run_linearized_sweep(replace(cfg, adapter=adapter), seeds=memo["seeds"])
    return per_run(runs, lambda run: _cell(run, result, features_s if run is first else 0.0,
                                           computed_here=run is first))


def _cell(config: RunConfig, result: Any, features_s: float, computed_here: bool
          ) -> dict[str, Any]:
    """One run's stored metrics and curves from the batch's sweep result."""
    (rec,) = [r for r in result.records if r.rank == config.rank]
    sel, fin = rec.selected, rec.final
    traj = next((t for t in rec.trajectories if t["lr"] == rec.selected_lr),
                rec.trajectories[0])
    spectrum = sel.get("spectrum") or []
    pl = [v for v in traj["pl_ratio"] if v is not None and math.isfinite(v)]
    metrics = {
        "metric": result.metric,
        "test_acc": _metric(sel["test"], "accuracy"),
        "test_acc_final": _metric(fin["test"], "accuracy"),
        "w0_test_acc": _metric(rec.w0["test"], "accuracy"),
        "head_fitted": rec.head_fitted,
        "kernel_test_acc": _metric(rec.kernel["test"], "accuracy"),
        "dev_acc": _metric(sel["dev"], "accuracy"),
        "train_acc": _metric(sel["train"], "accuracy"),
        "train_loss": traj["loss"][-1] if traj["loss"] else float("nan"),
        "selected_lr": rec.selected_lr, "selected_step": rec.selected_step,
        "lr_mult": rec.selected_lr_mult, "eta0": rec.eta0, **rec.movement,
        "train_loss_best_lr": min((t["loss"][-1] for t in rec.trajectories
                                   if t["diverged_step"] is None and t["loss"]),
                                  default=float("nan")),
        "control": config.option("control"),
        "selected_dev": rec.selected_dev, "kernel_lam": rec.kernel.get("lam"),
        "pl_min": min(pl) if pl else float("nan"),
        "numerical_rank": max((b["rank"] or 0) for b in spectrum) if spectrum else None,
        "nuclear_norm": sum(b["nuclear"] for b in spectrum) if spectrum else None,
        "diverged": any(t["diverged_step"] is not None for t in rec.trajectories),
        "scale": rec.scale, "N": result.features[0]["train"]["N"],
        "K": result.features[0]["train"]["K"], "P": result.features[0]["train"]["P"],
        "train_s": result.timings["train_s"], "test_s": result.timings["test_s"],
        "kernel_s": result.timings["kernel_s"], "features_s": features_s,
        "computed_here": computed_here, "engine": result.timings["engine"],
        "ranks_trained_together": list(result.config["adapter"]["ranks"]),
    }
    if "f1" in result.metric or "f1" in sel["test"]:
        for name, part in (("test_f1", sel), ("test_f1_final", fin),
                           ("w0_test_f1", rec.w0), ("kernel_test_f1", rec.kernel)):
            metrics[name] = _metric(part["test"], "f1")
    curves = {
        "steps": traj["steps"], "train_loss": traj["loss"], "pl_ratio": traj["pl_ratio"],
        "grad_norm2": traj["grad_norm2"], "dev_steps": traj["dev_steps"],
        "dev_metric": traj["dev_metric"],
        "singular_values": spectrum[0]["singular_values"] if spectrum else [],
        "trajectories": [{k: t[k] for k in ("lr", "diverged_step", "best_step", "best_dev")}
                         for t in rec.trajectories],
    }
    return {"metrics": metrics, "curves": curves}


__all__ = ["run_group", "sweep_config"]
