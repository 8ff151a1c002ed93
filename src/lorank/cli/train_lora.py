"""``lorank train --mode lora`` and ``--mode both``: real peft LoRA next to the linearized engine.

Runners for :data:`lorank.cli.train.RUNNERS` (mode -> function(:class:`~lorank.cli.train.TrainJob`)
-> result with ``table()``, ``to_dict()``, ``to_json()``), taking the same typed job as
``--mode linearized``:

* ``lora`` — for every data seed (LM-BFF split 16-seed, also the adapter-init seed) and rank:
  real LoRA — by default every seed × rank × learning rate in one vectorised program
  (``--lora-engine batched``, :func:`lorank.finetune.batched.train_cells`, equal to peft one at
  a time), or peft one configuration at a time (``sequential``,
  :func:`lorank.finetune.run.finetune`, the reference) —, the learning rate and the step
  selected on the k-shot dev split, then test metrics, ΔW spectra and the real-vs-linearized gap
  f(W0+ΔW) vs f(W0) + ⟨G, ΔW⟩ on the test split. The settings mirror the linearized engine's:
  scaling ``none``/``lora``/``rslora`` with α, A ~ N(0, 1/n) and B = 0, optimizer gd/sgd/adam
  with the weight decay as an L2 penalty, the same lr grid, steps and evaluation period.
* ``both`` — the linearized sweep and the LoRA sweep on the same options, printed side by side
  with the measured linearization gap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lorank.cli.options_run import pm, wide_console
from lorank.finetune.run import Selection
from lorank.linearized.experiment import json_default, mean_std

if TYPE_CHECKING:
    from lorank.cli.train import TrainJob
    from lorank.finetune.config import LoraTraining
    from lorank.linearized.experiment import SweepConfig
    from lorank.models.lora_shape import AdapterConfig


@dataclass
class LoraCell:
    """One (rank, seed): the grid's runs and the selected one."""

    rank: int
    seed: int
    selection: Selection

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "seed": self.seed, "selected": self.selection.best,
                "runs": [r.to_dict() for r in self.selection.runs]}


@dataclass
class LoraSweepResult:
    """All cells of a real-LoRA sweep; ``table()`` follows the linearized result's rows."""

    config: dict[str, Any]
    metric: str
    cells: list[LoraCell]

    def table(self) -> list[dict[str, Any]]:
        """Per rank, mean ± std over seeds of the test metric (W0 head, selected, final) and
        of the real-vs-linearized gap; ``kernel`` is not defined for real LoRA (NaN)."""
        from lorank.models.factory import FITTED_HEADS

        rows = []
        for r in sorted({c.rank for c in self.cells}):
            recs = [c.selection.record for c in self.cells if c.rank == r]
            cells = [c for c in self.cells if c.rank == r]
            rows.append({
                "rank": r, "n_seeds": len(recs), "metric": self.metric,
                "head_fitted": self.config.get("head") in FITTED_HEADS,
                "w0": mean_std([x.zero_shot_test_metric for x in recs]),
                "kernel": (float("nan"), float("nan")),
                "selected": mean_std([x.test_metric for x in recs]),
                "final": mean_std([x.final_test_metric for x in recs]),
                "selected_lr": [x.lr for x in recs],
                "selected_step": [x.best_step for x in recs],
                "diverged_runs": sum(run.status == "diverged" for c in cells
                                     for run in c.selection.runs),
                "gap_relative": mean_std([x.gap.relative if x.gap else None for x in recs]),
                "final_gap_relative": mean_std([x.final_gap.relative if x.final_gap else None
                                             for x in recs]),
                "gap_max_abs": mean_std([x.gap.max_abs if x.gap else None for x in recs]),
                "agreement": mean_std([x.gap.agreement if x.gap else None for x in recs]),
                "lin_of_real": mean_std([x.gap.accuracy_lin if x.gap else None for x in recs]),
                "numerical_rank": [max((d.numerical_rank for d in x.delta), default=0)
                                   for x in recs],
                "steps_per_s": mean_std([x.steps_per_s for x in recs]),
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        from lorank.provenance import provenance

        return {"mode": "lora", "config": self.config, "metric": self.metric,
                "table": self.table(), "cells": [c.to_dict() for c in self.cells],
                "provenance": provenance()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=json_default)


def _settings(cfg: SweepConfig, rank: int, seed: int, metric: str
              ) -> tuple[AdapterConfig, LoraTraining]:
    """The real engine's adapter and training settings of one (rank, seed) of the sweep."""
    from lorank.finetune.config import LoraTraining

    t = cfg.train
    lora = cfg.adapter.at(rank)
    batch = None if t.optimizer == "gd" else t.batch_size
    train = LoraTraining(lr=1.0, steps=t.steps, batch_size=batch, optimizer=t.optimizer,
                         weight_decay=t.weight_decay, loss=t.loss, eval_every=t.eval_every,
                         metric=metric, seed=seed)
    return lora, train


def run_lora(job: TrainJob) -> LoraSweepResult:
    """The ``lora`` mode (see module doc) on the job's sweep configuration."""
    import torch

    from lorank.finetune.adapter import attach_lora
    from lorank.finetune.batched import Cell, Problem, measure_cell, train_cells
    from lorank.finetune.run import finetune, prepare_data
    from lorank.linearized.experiment import DTYPES, selection_metric
    from lorank.linearized.step_size import split_kernel_step
    from lorank.models import build_classifier, load_encoder
    from lorank.models.factory import FITTED_HEADS

    cfg = job.sweep
    torch.manual_seed(0)
    enc = load_encoder(cfg.model, dtype=DTYPES[cfg.dtype], device=cfg.device)
    grid = sorted(cfg.lrs)
    cells, shared, metric = [], None, "accuracy"
    batched = job.lora_engine == "batched"
    problems: dict[int, Any] = {}
    plan: list[tuple[int, int, Any]] = []
    eta0s: dict[int, float] = {}
    for seed in cfg.seeds:
        data = job.data(seed)
        metric = selection_metric(data.task)
        if cfg.head in FITTED_HEADS:
            clf = build_classifier(enc, data.task, cfg.head, train=data.train, dev=data.dev)
        else:
            shared = shared or build_classifier(enc, data.task, cfg.head)
            clf = shared
        prepared = None
        lrs = grid
        if cfg.lr_unit == "eta0":
            eta0s[seed] = split_kernel_step(
                clf, data.train, targets=list(cfg.adapter.targets or ()),
                layers=cfg.adapter.layers,
                max_length=cfg.max_length, loss=cfg.train.loss,
                weight_decay=cfg.train.weight_decay,
                k=cfg.k, seed=seed, use_cache=cfg.use_cache)
            lrs = [c * eta0s[seed] for c in grid]
        if batched:
            lora, _ = _settings(cfg, cfg.adapter.ranks[0], seed, metric)
            start = min(m.layer for m in clf.adapted_matrices(lora.targets, lora.layers))
            problems[seed] = Problem(clf, prepare_data(clf, data, start, cfg.max_length))
            plan += [(seed, rank, Cell(seed, *_settings(cfg, rank, seed, metric),
                                       lrs=tuple(lrs), init_seed=seed))
                     for rank in cfg.adapter.ranks]
            continue
        for rank in cfg.adapter.ranks:
            lora, train = _settings(cfg, rank, seed, metric)
            adapter = attach_lora(clf, lora, seed=seed)
            try:
                if prepared is None:
                    prepared = prepare_data(clf, data, adapter.start, cfg.max_length)
                sel = finetune(clf, data, lora, train, lrs=lrs, prepared=prepared,
                               adapter=adapter, max_length=cfg.max_length)
            finally:
                adapter.detach()
            cells.append(LoraCell(rank, seed, sel))
    if batched:  # every seed × rank × lr in one vectorised program, then per-cell selection
        training = train_cells(problems, [cell for _, _, cell in plan])
        cells = [LoraCell(rank, seed, measure_cell(problems, training, i))
                 for i, (seed, rank, _) in enumerate(plan)]
    config = {**cfg.to_dict(), "lora_engine": job.lora_engine, "lrs": grid, "eta0": eta0s}
    return LoraSweepResult(config, metric, cells)


@dataclass
class BothResult:
    """A linearized sweep and a real-LoRA sweep on the same options."""

    linearized: Any
    lora: LoraSweepResult

    def table(self) -> list[dict[str, Any]]:
        """The linearized rows, each with the LoRA row's numbers under ``lora_*`` keys."""
        lora_rows = {row["rank"]: row for row in self.lora.table()}
        out = []
        for row in self.linearized.table():
            lr = lora_rows.get(row["rank"], {})
            out.append({**row, **{f"lora_{k}": v for k, v in lr.items()
                                  if k not in ("rank", "metric")}})
        return out

    def render(self, title: str) -> None:
        """Print the side-by-side table (rich)."""
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        rows = self.table()
        w0 = ("head at W0 (fitted on train)" if any(r.get("head_fitted") for r in rows)
              else "zero-shot")
        for col in ("rank", w0, "linearized sel.", "LoRA sel.", "linearized final",
                    "LoRA final", "kernel", "gap ‖f−f_lin‖/‖f−f0‖", "argmax agree",
                    "lr lin / LoRA"):
            table.add_column(col, justify="right")
        for row in rows:
            lrs = "/".join(",".join("-" if x is None else f"{x:g}" for x in row[k])
                           for k in ("selected_lr", "lora_selected_lr"))
            table.add_row(str(row["rank"]), pm(row["w0"]), pm(row["selected"]),
                          pm(row["lora_selected"]), pm(row["final"]), pm(row["lora_final"]),
                          pm(row["kernel"]), pm(row["lora_gap_relative"]),
                          pm(row["lora_agreement"]), lrs)
        wide_console(160).print(table)

    def to_dict(self) -> dict[str, Any]:
        from lorank.provenance import provenance

        return {"mode": "both", "table": self.table(), "linearized": self.linearized.to_dict(),
                "lora": self.lora.to_dict(), "provenance": provenance()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=json_default)


def run_both(job: TrainJob) -> BothResult:
    """The ``both`` mode: ``linearized`` then ``lora`` on the same job."""
    from lorank.cli.train import run_linearized

    return BothResult(run_linearized(job), run_lora(job))


#: what lorank.cli.train should add to its RUNNERS.
RUNNERS: dict[str, Callable[[TrainJob], Any]] = {"lora": run_lora, "both": run_both}
