r"""Real LoRA for a whole group of configurations in one program (issue #21).

C configurations — ranks, initialisations, learning rates, weight decays, and training splits of
one task (seeds) — adapt the same matrices W_ℓ of one frozen encoder. One at a time, each is a
peft run (:func:`lorank.finetune.train.fit`). Here all of them train together:

1. **Frozen prefix once per split.** Below the lowest adapted layer s nothing depends on the
   adapter: the splits arrive as :class:`~lorank.finetune.inputs.PreparedSplit` holding
   h_s(x) (:func:`lorank.finetune.run.prepare_data`), shared by every configuration of the split.
2. **Cohorts.** Configurations whose steps see the same rows (same split; same batch order, i.e.
   full batch, or the same batch size and seed) form a cohort. Per step and cohort the upper
   layers run once for all its configurations under :func:`torch.func.vmap`
   (:func:`lorank.finetune.stacked.stacked_logits`), zero-padded to the largest rank; the
   adapter-independent work of the first adapted block (W_k h, W_q h, W_v h) is shared.
3. **Length buckets** (:mod:`lorank.finetune.buckets`). The rows of a step run as ≤ 8 groups of
   similar length, each cut to its longest row: the padding positions that every block above
   the prefix would otherwise process (58 % of the SST-2 train tokens on MiniLM) are skipped;
   logits are unchanged (masked positions never reach a kept one).
4. **Per-configuration optimisation.** The losses of the C configurations are summed and
   differentiated once; configuration c's parameters receive exactly ∂L_c/∂θ_c (nothing couples
   two configurations). :class:`~lorank.finetune.stacked.StackedOptimizer` applies torch's SGD,
   Adam or AdamW with c's own learning rate, schedule, weight decay and step count.
5. **The one-at-a-time protocol per configuration**: dev evaluation at step 0, every
   ``eval_every`` steps (and the early steps of ``LoraTraining.is_eval_step``) and at its last
   step; the best-dev state kept (ties to the lower dev loss, then the earlier step;
   ``keep="last"``: the last finite state); a non-finite training loss stops that configuration
   at that step (``diverged_step``) — its rows are never updated again, so no NaN reaches the
   others.

Equal to peft: for the same init (drawn by peft itself, :func:`initial_factors`), data and steps,
every configuration's losses, dev curve, selected step and adapter weights match
:func:`~lorank.finetune.train.fit` run alone (tested in float64 to 1e-8 and float32 to 1e-4 on
every supported architecture). The states come back as peft adapter states, so
:meth:`lorank.finetune.adapter.Adapter.load_state` and :func:`save_adapter` export them in peft's
format.

Cost (FLOP accounting, docs/benchmarks.md): batching does not remove arithmetic — each
configuration's activations above the adapted layer differ — so on a CPU, where the
one-at-a-time step already runs its GEMMs near peak, the gain comes from the skipped padding and
the shared frozen projections; on an accelerator the batched GEMMs also replace C small launches.

:func:`finetune_batched` is the entry point for sweeps and the CLI: cells (rank, seed) × their
(lr, batch size) grids trained in one call, then each cell selected on dev and measured on test
exactly as :func:`lorank.finetune.run.finetune`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lorank.errors import LorankError, check_positive_ints
from lorank.finetune.adapter import ADAPTER, attach_lora, base_model_of, factor_names
from lorank.finetune.buckets import cut_rows, plan_buckets, row_lengths
from lorank.finetune.config import LoraTraining
from lorank.finetune.inputs import PreparedSplit
from lorank.finetune.run import PreparedData, Selection, grid, select_and_measure
from lorank.finetune.stacked import (
    LoraStack,
    StackedOptimizer,
    lora_hooks,
    stack_factors,
    stacked_logits,
)
from lorank.finetune.train import (
    FitResult,
    Track,
    batch_indices,
    deterministic,
    evaluation,
    loss_fn,
    lr_factor,
)
from lorank.models.lora_shape import AdapterConfig

#: fields every configuration of one call must share (the rest may differ per configuration)
SHARED_LORA = ("targets", "layers", "dropout")
SHARED_TRAIN = ("optimizer", "loss", "eval_every", "eval_early", "keep", "metric",
                "train_head")


@dataclass(frozen=True)
class Problem:
    """What configurations train on: a classifier (no adapter attached) and its prepared splits.

    Problems of one call share the encoder (``clf.model``); their heads may differ (a pair head
    fitted per data seed). ``data.start`` is the cached prefix (None = full forward).
    """

    clf: torch.nn.Module
    data: PreparedData


@dataclass(frozen=True)
class Configuration:
    """One real-LoRA training run.

    Attributes:
        problem: key of its :class:`Problem`.
        lora: the adapter (r, α, scaling, init may differ per configuration; targets, layers
            and dropout must be shared, dropout 0).
        train: the optimisation (lr, weight decay, schedule, steps/epochs, batch size and seed
            may differ; optimiser, loss, eval period, keep rule and metric must be shared).
        init_seed: seed of the adapter init (default ``train.seed``), drawn by peft.
    """

    problem: Hashable
    lora: AdapterConfig
    train: LoraTraining
    init_seed: int | None = None

    @property
    def adapter_seed(self) -> int:
        """The seed peft draws the init from: ``init_seed``, else ``train.seed``."""
        return self.train.seed if self.init_seed is None else int(self.init_seed)


@dataclass(frozen=True)
class BatchedSettings:
    """How the batched trainer lays out the work (the results do not depend on it beyond
    floating-point summation order).

    Attributes:
        max_buckets: length groups per step (1 = the padded batch, as peft runs it). Measured
            on MiniLM SST-2 (32 rows): 8 groups leave ~5 % padding (1 group: 100–150 %) and
            were the fastest of 1/4/8/12/16/32.
        max_rows: configurations × padded tokens per vmapped call; larger cohorts are chunked
            (bounds the activation memory; on a CPU, tensors beyond the allocator's mmap
            threshold, 32 MiB, pay page faults on every allocation). 2,048–32,768 measured
            within noise of each other.
    """

    max_buckets: int = 8
    max_rows: int = 8192

    def __post_init__(self) -> None:
        check_positive_ints(max_buckets=self.max_buckets, max_rows=self.max_rows)


@dataclass
class BatchedFit:
    """Result of :func:`train_batched`: one :class:`FitResult` per configuration (input order).

    ``wall_s``/``cpu_s``: the whole call; ``init_s``: drawing the inits (peft) and stacking;
    ``eval_s``/``eval_cpu_s``: the dev evaluations (``evals`` of them, each of every due
    configuration);
    ``steps``: optimiser steps run. Each FitResult's ``wall_s`` is the call's training wall
    time divided by C (amortised).
    """

    configurations: list[Configuration]
    fits: list[FitResult]
    wall_s: float = 0.0
    cpu_s: float = 0.0
    init_s: float = 0.0
    eval_s: float = 0.0
    eval_cpu_s: float = 0.0
    evals: int = 0
    steps: int = 0
    cohorts: int = 0


def _check(problems: Mapping[Hashable, Problem], configs: Sequence[Configuration]) -> None:
    if not configs:
        raise LorankError("no configurations to train")
    missing = [c.problem for c in configs if c.problem not in problems]
    if missing:
        raise LorankError(f"configuration refers to unknown problem {missing[0]!r}")
    first = configs[0]
    for c in configs[1:]:
        for part, names in (("lora", SHARED_LORA), ("train", SHARED_TRAIN)):
            for name in names:
                a, b = getattr(getattr(first, part), name), getattr(getattr(c, part), name)
                if a != b:
                    raise LorankError(f"batched configurations must share {part}.{name} "
                                      f"({a!r} vs {b!r})")
    if first.lora.dropout != 0:
        raise LorankError("the batched trainer runs LoRA without dropout (dropout draws differ "
                          "from peft's); use the one-at-a-time trainer for dropout > 0")
    if first.train.train_head:
        raise LorankError("the batched trainer keeps the head frozen; train_head needs the "
                          "one-at-a-time trainer")
    used = {c.problem for c in configs}
    models = {id(problems[k].clf.model) for k in used}
    if len(models) != 1:
        raise LorankError("the problems of one batched call must share one encoder")
    for k in used:
        d = problems[k].data
        if d.train.start != d.dev.start:
            raise LorankError(f"problem {k!r}: train and dev must share the cached prefix")
        _check_prefix(problems[k].clf, d.train, first.lora, f"problem {k!r}")


def _check_prefix(clf: torch.nn.Module, split: PreparedSplit, lora: AdapterConfig,
                  where: str) -> None:
    """The cached prefix [0, start) must lie below every adapted layer."""
    lowest = min(m.layer for m in clf.adapted_matrices(lora.targets, lora.layers))
    if split.start is not None and split.start > lowest:
        raise LorankError(f"{where}: the split caches layers [0, {split.start}) but LoRA adapts "
                          f"layer {lowest}; prepare it with start <= {lowest}")


def initial_factors(clf: torch.nn.Module, lora: AdapterConfig, seeds: Sequence[int]
                    ) -> tuple[dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]], float]:
    """The initial (A, B) of every adapted matrix, drawn by peft exactly as
    :func:`lorank.finetune.adapter.attach_lora` + :meth:`Adapter.reset` draw them.

    Returns ({seed: {path: (A (r, n), B (m, r))}}, peft's scaling s); the classifier is left
    without adapter.
    """
    with attach_lora(clf, lora, seed=seeds[0]) as adapter:
        scaling = float(adapter.module(adapter.matrices[0]).scaling[ADAPTER])
        out = {}
        for seed in dict.fromkeys(seeds):
            adapter.reset(seed)
            state = adapter.state()  # peft-named copies of every A and B
            out[seed] = {m.path: tuple(state[n] for n in factor_names(adapter.prefix, m.path))
                         for m in adapter.matrices}
        return out, scaling


def save_adapter(clf: torch.nn.Module, lora: AdapterConfig, state: Mapping[str, torch.Tensor],
                 folder: str | os.PathLike) -> Path:
    """Export a trained state (e.g. ``fit.best_state``) in peft's format: attach a peft adapter
    with ``lora``, load the state, :meth:`Adapter.save`, detach. Loads with
    ``PeftModel.from_pretrained(AutoModel.from_pretrained(base), folder)``."""
    with attach_lora(clf, lora) as adapter:
        adapter.load_state(dict(state))
        return adapter.save(folder)


@dataclass(frozen=True)
class Bucket:
    """Rows run together: their positions in the step's batch, their row ids in the split, and
    the kept length per tower (:mod:`lorank.finetune.buckets`)."""

    positions: np.ndarray
    ids: np.ndarray
    keep: tuple[int, ...]


def plan_rows(lengths: np.ndarray, ids: np.ndarray, max_buckets: int) -> list[Bucket]:
    """Length buckets for the rows ``ids`` of a split whose row lengths are ``lengths``."""
    groups = plan_buckets(lengths[ids], max_buckets)
    return [Bucket(g, ids[g], tuple(int(v) for v in lengths[ids[g]].max(axis=0)))
            for g in groups]


def chunked(members: list[int], plan: Sequence[Bucket], max_rows: int) -> list[list[int]]:
    """Configurations in chunks of ≤ max_rows // (padded tokens of the plan) (at least 1)."""
    size = max(1, max_rows // max(1, sum(len(b.ids) * sum(b.keep) for b in plan)))
    return [members[i:i + size] for i in range(0, len(members), size)]


def bucketed_logits(clf: torch.nn.Module, split: PreparedSplit, plan: Sequence[Bucket],
                    A: Mapping[str, torch.Tensor], B: Mapping[str, torch.Tensor],
                    s: torch.Tensor, slot: dict) -> torch.Tensor:
    """(C, b, K) logits of C stacked configurations on the planned rows, in batch order."""
    parts, positions = [], []
    for bucket in plan:
        x = cut_rows(split.x, bucket.ids, clf.towers, bucket.keep)
        parts.append(stacked_logits(clf, x, split.start, slot, A, B, s))
        positions.append(bucket.positions)
    out = torch.cat(parts, dim=1)
    inverse = torch.as_tensor(np.argsort(np.concatenate(positions), kind="stable"))
    return out.index_select(1, inverse)


@torch.no_grad()
def predict_states(clf: torch.nn.Module, split: PreparedSplit, loras: Sequence[AdapterConfig],
                   states: Sequence[Mapping[str, torch.Tensor]],
                   settings: BatchedSettings | None = None) -> torch.Tensor:
    """Logits (C, n, K) of C trained adapters (peft-named states, e.g. ``fit.best_state``,
    with their :class:`AdapterConfig` for r and s) on a prepared split, all in one batched
    forward; the classifier must hold no adapter."""
    settings = settings or BatchedSettings()
    _check_prefix(clf, split, loras[0], f"split {split.name!r}")
    base, prefix = base_model_of(clf)
    paths = [m.path for m in clf.adapted_matrices(loras[0].targets, loras[0].layers)]
    stack = stack_factors([{p: tuple(st[n] for n in factor_names(prefix, p)) for p in paths}
                           for st in states], [lora.s for lora in loras])
    plan = plan_rows(row_lengths(split.x, clf.towers), np.arange(len(split)),
                     settings.max_buckets)
    with lora_hooks(base, paths) as slot:
        return torch.cat([bucketed_logits(clf, split, plan, *stack.select(chunk), slot)
                          for chunk in chunked(list(range(len(states))), plan,
                                               settings.max_rows)])


@dataclass
class _Cohort:
    """Configurations [lo, hi) of the internal order that see the same rows at every step."""

    problem: Problem
    lo: int
    hi: int
    total: int
    batches: Any


class _Engine:
    """The training loop of :func:`train_batched` (internal order = configurations sorted by
    cohort, so a cohort's factors are contiguous rows of the stacks)."""

    def __init__(self, problems: Mapping[Hashable, Problem], configs: list[Configuration],
                 stack: LoraStack, settings: BatchedSettings) -> None:
        self.problems = problems
        self.configs = configs
        self.stack = stack
        self.settings = settings
        # the fields every configuration shares (SHARED_TRAIN): loss, metric, keep rule and
        # the checkpoint schedule (LoraTraining.is_eval_step)
        self.shared = configs[0].train
        self.totals = [c.train.total_steps(len(problems[c.problem].data.train))
                       for c in configs]
        self.tracks = [Track() for _ in configs]
        self.active = torch.ones(len(configs), dtype=torch.bool)
        self.base, self.prefix = base_model_of(problems[configs[0].problem].clf)
        self.lengths: dict[tuple[int, str], np.ndarray] = {}
        self.plans: dict[tuple[int, str], list[Bucket]] = {}

    def _plan(self, problem: Problem, split: PreparedSplit, index: torch.Tensor | slice
              ) -> list[Bucket]:
        """Length buckets of the rows ``index`` of ``split`` (a slice: every row, planned once
        per split; the row lengths are computed once per split)."""
        key = (id(split), split.name)  # the splits outlive the engine
        if key not in self.lengths:
            self.lengths[key] = row_lengths(split.x, problem.clf.towers)
        if not isinstance(index, slice):
            return plan_rows(self.lengths[key], index.numpy(), self.settings.max_buckets)
        if key not in self.plans:
            self.plans[key] = plan_rows(self.lengths[key], np.arange(len(split)),
                                        self.settings.max_buckets)
        return self.plans[key]

    @torch.no_grad()
    def evaluate(self, members: list[int], step: int, slot: dict) -> None:
        """Dev evaluation of ``members`` at ``step`` and the keep-best rule of fit()."""
        by_problem: dict[Hashable, list[int]] = {}
        for c in members:
            by_problem.setdefault(self.configs[c].problem, []).append(c)
        for key, rows in by_problem.items():
            problem = self.problems[key]
            dev = problem.data.dev
            plan = self._plan(problem, dev, slice(None))
            for chunk in chunked(rows, plan, self.settings.max_rows):
                logits = bucketed_logits(problem.clf, dev, plan, *self.stack.select(chunk), slot)
                for j, c in enumerate(chunk):
                    ev = evaluation(logits[j], dev.y, self.shared.loss, step, self.shared.metric)
                    state = partial(self.stack.state, c, self.prefix)
                    self.tracks[c].checkpoint(ev, self.shared.keep, state)

    def step(self, cohort: _Cohort, step: int, running: torch.Tensor, slot: dict,
             grads: list[torch.Tensor]) -> None:
        """Forward/backward of the cohort's running configurations on this step's rows; a
        configuration whose loss is not finite is marked diverged and inactive."""
        if step > cohort.total:
            return
        index = next(cohort.batches)  # once per step, whoever still runs: fit()'s batch order
        members = [c for c in range(cohort.lo, cohort.hi) if bool(running[c])]
        if not members:
            return
        problem, split = cohort.problem, cohort.problem.data.train
        plan, y = self._plan(problem, split, index), split.y[index]
        for chunk in chunked(members, plan, self.settings.max_rows):
            A, B, s = self.stack.select(chunk, grad=True)
            logits = bucketed_logits(problem.clf, split, plan, A, B, s, slot)
            losses = torch.stack([loss_fn(logits[j], y, self.shared.loss)
                                  for j in range(len(chunk))])
            idx = torch.as_tensor(chunk, dtype=torch.long)
            for j, c in enumerate(chunk):  # every member is active until now
                self.active[c] = self.tracks[c].train_loss(step, losses[j])
            finite = self.active[idx]
            if not bool(finite.any()):
                continue
            leaves = [t for p in self.stack.paths for t in (A[p], B[p])]
            gs = torch.autograd.grad(losses[finite].sum(), leaves)
            for buf, g in zip(grads, gs, strict=True):
                buf.index_copy_(0, idx, g)

    def factors(self, step: int) -> torch.Tensor:
        """(C,) schedule factors of the update at ``step`` (LambdaLR after step − 1 calls)."""
        return torch.tensor([lr_factor(c.train, step - 1, total)
                             for c, total in zip(self.configs, self.totals, strict=True)],
                            dtype=torch.float64)


class _Clock:
    """Accumulates wall and CPU time over ``with`` blocks, and counts them."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.count = 0

    def __enter__(self) -> _Clock:
        self._t = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._t[0]
        self.cpu += time.process_time() - self._t[1]
        self.count += 1


def _cohort_key(config: Configuration, n: int) -> tuple:
    batch = config.train.batch_size
    full = batch is None or batch >= n
    return (config.problem, None if full else (batch, config.train.seed))


def train_batched(problems: Mapping[Hashable, Problem], configurations: Sequence[Configuration],
                  settings: BatchedSettings | None = None) -> BatchedFit:
    """Train C real-LoRA configurations in one program (see the module doc).

    Args:
        problems: key -> :class:`Problem` (classifier + prepared train/dev splits).
        configurations: what to train; see :class:`Configuration` for what may differ.
        settings: work layout (length buckets, chunking); defaults are tuned on MiniLM.

    Returns:
        :class:`BatchedFit` with one :class:`FitResult` per configuration, as
        :func:`lorank.finetune.train.fit` returns for that configuration alone: loss curve,
        dev evaluations, best step and state, final state (None if diverged), steps taken,
        ``diverged_step``. States are keyed by peft parameter names.

    Raises:
        LorankError: configurations that cannot share one program (see :class:`Configuration`),
            dropout > 0, ``train_head``, unknown problem keys, problems on different encoders.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    settings = settings or BatchedSettings()
    configs = list(configurations)
    _check(problems, configs)
    clfs = {id(problems[c.problem].clf): problems[c.problem].clf for c in configs}
    flags = {id(p): (p, p.requires_grad) for clf in clfs.values() for p in clf.parameters()}
    clf0 = problems[configs[0].problem].clf
    try:
        # peft draws every init (one attach per distinct AdapterConfig)
        init: dict[AdapterConfig, tuple[dict, float]] = {}
        for lora in dict.fromkeys(c.lora for c in configs):
            seeds = [c.adapter_seed for c in configs if c.lora == lora]
            init[lora] = initial_factors(clf0, lora, seeds)
        for p, _ in flags.values():
            p.requires_grad_(False)
        n_train = {k: len(p.data.train) for k, p in problems.items()}
        keys = [_cohort_key(c, n_train[c.problem]) for c in configs]
        cohort_order = list(dict.fromkeys(keys))
        order = sorted(range(len(configs)), key=lambda i: cohort_order.index(keys[i]))
        internal = [configs[i] for i in order]
        stack = stack_factors([init[c.lora][0][c.adapter_seed] for c in internal],
                              [init[c.lora][1] for c in internal])
        init_s = time.perf_counter() - t0
        engine = _Engine(problems, internal, stack, settings)
        cohorts = []
        for key in cohort_order:
            rows = [pos for pos, i in enumerate(order) if keys[i] == key]
            first = internal[rows[0]]
            problem = problems[first.problem]
            total = max(engine.totals[i] for i in rows)
            gen = torch.Generator().manual_seed(first.train.seed)
            cohorts.append(_Cohort(problem, rows[0], rows[-1] + 1, total, batch_indices(
                len(problem.data.train), first.train.batch_size, total, gen)))
        tensors = stack.tensors()
        opt = StackedOptimizer(internal[0].train.optimizer, tensors, stack.masks(),
                               torch.tensor([c.train.lr for c in internal], dtype=torch.float64),
                               torch.tensor([c.train.weight_decay for c in internal],
                                            dtype=torch.float64))
        totals = torch.tensor(engine.totals)
        t_train = time.perf_counter()
        clock = _Clock()
        steps = 0
        with deterministic(), lora_hooks(engine.base, stack.paths) as slot:
            with clock:
                engine.evaluate(list(range(len(internal))), 0, slot)
            for step in range(1, int(totals.max()) + 1):
                running = engine.active & (totals >= step)
                if not bool(running.any()):
                    break
                grads = [torch.zeros_like(t) for t in tensors]
                for cohort in cohorts:
                    engine.step(cohort, step, running, slot, grads)
                updated = running & engine.active
                opt.step(grads, engine.factors(step), updated)
                steps = step
                due = [c for c in range(len(internal)) if bool(updated[c]) and (
                    engine.shared.is_eval_step(step, engine.totals[c]))]
                for c in torch.nonzero(updated).flatten().tolist():
                    engine.tracks[c].result.steps = step
                if due:
                    with clock:
                        engine.evaluate(due, step, slot)
        train_wall = time.perf_counter() - t_train
    finally:
        for p, flag in flags.values():
            p.requires_grad_(flag)
    fits: list[FitResult] = [FitResult()] * len(configs)
    for pos, i in enumerate(order):
        fits[i] = res = engine.tracks[pos].result
        if res.diverged_step is None:
            res.final_state = stack.state(pos, engine.prefix)
        res.wall_s = train_wall / len(configs)
    return BatchedFit(configurations=configs, fits=fits, wall_s=time.perf_counter() - t0,
                      cpu_s=time.process_time() - c0, init_s=init_s, eval_s=clock.wall,
                      eval_cpu_s=clock.cpu, evals=clock.count, steps=steps, cohorts=len(cohorts))


# ----- cells: grids, selection and measurement (the entry point for sweeps and the CLI) ------


@dataclass(frozen=True)
class Cell:
    """One (rank, seed) cell: an adapter trained from one seeded init at every point of an
    (lr × batch size) grid, the grid point and step then selected on dev, as
    :func:`lorank.finetune.run.finetune` does for one cell. Not itself a
    :class:`Configuration`: :meth:`configurations` are what :func:`train_batched` trains.

    Attributes:
        problem, lora, train, init_seed: as in :class:`Configuration`.
        lrs, batch_sizes: replace ``train.lr`` / ``train.batch_size`` per grid point
            (:func:`lorank.finetune.run.grid`; empty: just those).
    """

    problem: Hashable
    lora: AdapterConfig
    train: LoraTraining
    init_seed: int | None = None
    lrs: tuple[float, ...] = ()
    batch_sizes: tuple[int | None, ...] = ()

    def configurations(self) -> list[Configuration]:
        """One :class:`Configuration` per grid point, in grid order."""
        return [Configuration(self.problem, self.lora, s, self.init_seed)
                for s in grid(self.train, self.lrs, self.batch_sizes)]

    @property
    def adapter_seed(self) -> int:
        """The seed peft draws the cell's init from (:attr:`Configuration.adapter_seed`)."""
        return Configuration(self.problem, self.lora, self.train, self.init_seed).adapter_seed


@dataclass
class CellsTraining:
    """The trained grids of :func:`train_cells`: ``spans[i]`` indexes cell i's configurations
    in ``fit`` (grid order)."""

    cells: list[Cell]
    fit: BatchedFit
    spans: list[range]


def train_cells(problems: Mapping[Hashable, Problem], cells: Sequence[Cell],
                settings: BatchedSettings | None = None) -> CellsTraining:
    """Train every grid point of every cell in one :func:`train_batched` call."""
    configs, spans = [], []
    for cell in cells:
        lo = len(configs)
        configs += cell.configurations()
        spans.append(range(lo, len(configs)))
    return CellsTraining(list(cells), train_batched(problems, configs, settings), spans)


def measure_cell(problems: Mapping[Hashable, Problem], training: CellsTraining, i: int,
                 gap: bool = True) -> Selection:
    """Select cell i's grid point and step on dev and measure it on test, exactly as
    :func:`~lorank.finetune.run.finetune` (a peft adapter is attached for the measurement and
    detached again)."""
    cell = training.cells[i]
    problem = problems[cell.problem]
    span = training.spans[i]
    with attach_lora(problem.clf, cell.lora, seed=cell.adapter_seed) as adapter:
        return select_and_measure(adapter, cell.lora,
                                  [training.fit.configurations[j].train for j in span],
                                  [training.fit.fits[j] for j in span], problem.data, cell.train,
                                  gap)


def finetune_batched(problems: Mapping[Hashable, Problem], cells: Sequence[Cell],
                     settings: BatchedSettings | None = None, gap: bool = True
                     ) -> list[Selection]:
    """Real LoRA for many cells at once: every (cell, lr, batch size) trained in one program
    (:func:`train_batched`), then each cell selected on dev and measured on test
    (:func:`measure_cell`). One :class:`~lorank.finetune.run.Selection` per cell, as
    :func:`~lorank.finetune.run.finetune` returns it.

    Example (five data seeds × six ranks × three learning rates = 90 configurations)::

        problems = {seed: Problem(clf, prepare_data(clf, load_task("sst2", 16, seed), 5, 64))
                    for seed in (13, 21, 42, 87, 100)}
        cells = [Cell(seed, AdapterConfig(ranks=(r,), layers="last", init="fan_in", scaling="none"),
                      LoraTraining(steps=300, optimizer="gd", eval_every=25, seed=seed),
                      lrs=(0.01, 0.03, 0.1))
                 for seed in problems for r in (1, 2, 4, 8, 12, 16)]
        selections = finetune_batched(problems, cells)
    """
    training = train_cells(problems, cells, settings)
    return [measure_cell(problems, training, i, gap) for i in range(len(cells))]
