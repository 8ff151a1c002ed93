r"""Train many linearized-LoRA configurations at once (ranks × seeds × learning rates).

Model (see :mod:`lorank.linearized.model`): f_lin(x) = f0(x) + J(x)·vec(ΔW), ΔW_ℓ = s·B_ℓ A_ℓ,
objective per configuration c

    Φ_c(A, B) = L_c(f_lin) + λ/2 · Σ_ℓ (‖A_ℓ‖²_F + ‖B_ℓ‖²_F)

(real weight decay: at the optimum it equals the nuclear-norm penalty λ‖ΔW‖_* when s = 1;
science notes §1, §4 — the reference code's decay step never touched the parameters).

Vectorisation. Configurations sharing a feature set (one data split) are trained together. With
Φ = J flattened to (NK, P) and ΔW of all C configurations stacked as D ∈ R^{C×P}, one step is

    out = f0 + Φ Dᵀ                   one GEMM, NK·P·C multiply-adds
    E   = ∂L/∂out                      (NK, C), closed form (losses.py)
    M   = Eᵀ Φ                          one GEMM, NK·P·C: M_c = ∂L_c/∂ΔW (the full-FT gradient)
    ∂B_ℓ = s M_ℓ A_ℓᵀ,  ∂A_ℓ = s B_ℓᵀ M_ℓ  batched matmuls per rank bucket, 2·m·n·r·C each
    D   = s B_ℓ A_ℓ                    batched matmul, m·n·r·C

Cost per step ≈ (2·NK + 3r)·P·C. The alternative order that pre-contracts G_ℓ Aᵀ (N, K, m, r)
costs NK·P·r for the forward alone plus as much again for ∂A, so forming ΔW first is never
more expensive and is cheaper for every r > 1 (at r = 1 the two tie). Batching turns the
memory-bound matrix-vector products of one configuration (Φ is read twice per step per
configuration) into matrix-matrix products that read Φ twice per step for all C at once.
Configurations are grouped by (feature group, rank) ("buckets"), so no padding to r_max is
needed.

Memory layout (performance). Rows of D and M are ordered by group, then rank, then run order, so
every group's rows and every bucket's rows are one contiguous slice: the per-group GEMMs read
D[g] as a view and write M[g] in place (``out=``), each bucket writes s·B_ℓA_ℓ straight into its
slice of D (``bmm(out=…)``) and reads its M_ℓ as a strided view. D and M are allocated once per
call, not per step (a fresh 35 MB tensor per step costs page faults of the same order as the
GEMMs on a CPU). On a CPU the step is bound by streaming Φ twice (forward and gradient): the
batching gain over one run at a time is at most about the number of configurations sharing a
feature set (see docs/benchmarks.md).

Factored engine. When the features carry per-token factors (the OUTER Jacobian method: G_i =
Σ_t δ_t x_tᵀ), the same step runs on the factors instead of J
(:mod:`lorank.linearized.factored`: four GEMMs per matrix and feature group, cost ∝ Σ r · tokens
instead of N·K·P per configuration; J is never read). ``LinearizedTraining.engine`` = ``auto``
(default: factored when the factors exist and the multiply-add model says it is cheaper, and
always for features that hold only their factors),
``dense`` or ``factored``; both give the same numbers (tested).

Optimisers: full-batch GD (default), SGD on mini-batches (per-configuration sampling from a
generator seeded by (seed, rank): the same batches for every learning rate), Adam (Kingma & Ba).
A configuration whose objective becomes NaN/inf is recorded as diverged at that step and frozen
(its parameters are reset to zero and no longer updated); the others continue unaffected.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from lorank import training
from lorank.errors import LorankError, check_choice, check_positive_ints
from lorank.linearized.factored import (
    DENSE_WEIGHT,
    GroupLayout,
    forward_group,
    grads_group,
    prepare,
    step_costs,
)
from lorank.linearized.losses import loss_and_grad, metric
from lorank.linearized.model import init_factors
from lorank.models.lora_shape import AdapterConfig
from lorank.ntk.features import Block, Features

#: The default adapter of :func:`train_linearized`: s = 1 at every rank (Jang et al.'s setting).
UNIT_SCALE = AdapterConfig()
ENGINES = ("auto", "dense", "factored")


@dataclass(frozen=True)
class RunSpec:
    """One configuration: LoRA rank r, init seed, learning rate, and feature group (data split)."""

    rank: int
    seed: int
    lr: float
    group: int = 0


@dataclass(frozen=True, kw_only=True)
class LinearizedTraining(training.TrainSettings):
    """Settings of a batched linearized-LoRA run: the shared optimisation
    (:class:`lorank.training.TrainSettings`: steps, loss, optimizer ``gd``/``sgd``/``adam``,
    weight decay, batch size for sgd/adam, dev checkpoints, metric) and what only this engine has.

    Attributes:
        steps: number of optimiser steps T (default 1000; checkpoints at 0, eval_every, …, T).
        mse_target: ``"onehot"`` or ``"pm1"`` targets for MSE.
        betas, eps: Adam constants.
        log_every: interval of the recorded loss / ‖∇Φ‖² / PL-ratio curves.
        loss_inf: L_inf in the PL ratio ‖∇Φ‖²/(Φ − L_inf) (0: separable CE / interpolating MSE).
        engine: ``"auto"``, ``"dense"`` (J) or ``"factored"`` (per-token factors; module doc);
            features that hold only their factors (J too big) take ``factored`` under ``auto``
            and refuse ``dense``.
    """

    steps: int = 1000
    mse_target: str = "onehot"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    log_every: int = 10
    loss_inf: float = 0.0
    engine: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._ints("steps", "log_every")
        check_choice("engine", self.engine, ENGINES)


@dataclass
class Trajectory:
    """What happened to one configuration (JSON-able via :func:`dataclasses.asdict`)."""

    rank: int
    seed: int
    lr: float
    group: int
    scale: float
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    grad_norm2: list[float] = field(default_factory=list)
    pl_ratio: list[float] = field(default_factory=list)
    dev_steps: list[int] = field(default_factory=list)
    dev_metric: list[float] = field(default_factory=list)
    dev_loss: list[float] = field(default_factory=list)
    diverged_step: int | None = None
    best_step: int = 0
    best_dev: float = float("nan")
    final_train_metric: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Factors:
    """LoRA factors of one configuration at one checkpoint: A_ℓ (r, n), B_ℓ (m, r), scale s."""

    A: list[Tensor]
    B: list[Tensor]
    s: float
    step: int

    def delta(self) -> Tensor:
        """vec(s·B_ℓ A_ℓ) over blocks: (P,)."""
        return torch.cat([(self.s * (b @ a)).reshape(-1) for a, b in zip(self.A, self.B,
                                                                           strict=True)])


@dataclass
class TrainResult:
    """Trajectories plus the best-dev and final factors of every configuration (in run order)."""

    runs: list[RunSpec]
    trajectories: list[Trajectory]
    best: list[Factors]
    final: list[Factors]
    blocks: list[Block]
    seconds: float
    engine: str = "dense"


class _Bucket:
    """Configurations of one feature group sharing one rank r: batched factors and optimiser.

    Rows ``lo:hi`` of the step buffers D and M (see :class:`_State`) belong to this bucket.
    """

    def __init__(self, idx: list[int], runs: Sequence[RunSpec], blocks: Sequence[Block],
                 settings: LinearizedTraining, adapter: AdapterConfig, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.idx = idx
        self.r = runs[idx[0]].rank
        self.group = runs[idx[0]].group
        self.lo, self.hi = 0, len(idx)
        inits = [init_factors(blocks, self.r, runs[c].seed, dtype, device) for c in idx]
        self.A = [torch.stack([a[0][j] for a in inits]) for j in range(len(blocks))]
        self.B = [torch.stack([a[1][j] for a in inits]) for j in range(len(blocks))]
        self.scale = adapter.s_at(self.r)  # same s for every row
        self.s = torch.tensor([self.scale] * len(idx), dtype=dtype, device=device)[:, None, None]
        self.lr = torch.tensor([runs[c].lr for c in idx], dtype=dtype,
                               device=device)[:, None, None]
        self.best_A = [a.clone() for a in self.A]
        self.best_B = [b.clone() for b in self.B]
        self.adam = None
        if settings.optimizer == "adam":
            zeros = [torch.zeros_like(p) for p in (*self.A, *self.B)]
            self.adam = (zeros, [z.clone() for z in zeros])

    def delta_into(self, out: Tensor, offsets: list[tuple[int, int]]) -> None:
        """Write vec(s·B_ℓ A_ℓ) of every row into ``out`` (C_b, P) in place (no temporaries)."""
        for a, b, (lo, hi) in zip(self.A, self.B, offsets, strict=True):
            view = out[:, lo:hi].view(-1, b.shape[1], a.shape[2])
            torch.bmm(b, a, out=view)
            if self.scale != 1.0:
                view.mul_(self.s)

    def sq_norms(self) -> Tensor:
        """Σ_ℓ ‖A_ℓ‖² + ‖B_ℓ‖² per configuration: (C_b,)."""
        return sum(p.square().flatten(1).sum(1) for p in (*self.A, *self.B))

    def grads(self, M: Tensor, offsets: list[tuple[int, int]], blocks: Sequence[Block],
              wd: float) -> list[Tensor]:
        """∂Φ/∂(A_ℓ…, B_ℓ…) from M = ∂L/∂ΔW rows of this bucket (C_b, P)."""
        gA, gB = [], []
        for a, b, (lo, hi), blk in zip(self.A, self.B, offsets, blocks, strict=True):
            Ml = M[:, lo:hi].reshape(-1, blk.m, blk.n)
            gA.append(self.s * torch.bmm(b.transpose(1, 2), Ml) + wd * a)
            gB.append(self.s * torch.bmm(Ml, a.transpose(1, 2)) + wd * b)
        return gA + gB

    def step(self, grads: list[Tensor], alive: Tensor, settings: LinearizedTraining, t: int,
             all_alive: bool = False) -> None:
        """One optimiser step of the live rows (``all_alive`` skips the masking)."""
        live = alive[:, None, None]
        params = [*self.A, *self.B]
        for j, (p, g) in enumerate(zip(params, grads, strict=True)):
            if not all_alive:
                g = torch.where(live, g, torch.zeros_like(g))
            if self.adam is not None:
                m, v = self.adam[0][j], self.adam[1][j]
                b1, b2 = settings.betas
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                upd = (m / (1 - b1 ** (t + 1))) / ((v / (1 - b2 ** (t + 1))).sqrt() + settings.eps)
            else:
                upd = g
            if all_alive:
                p.addcmul_(self.lr, upd, value=-1.0)
            else:
                change = self.lr * upd
                p.sub_(torch.where(live, change, torch.zeros_like(change)))

    def kill(self, rows: Tensor) -> None:
        """Reset diverged configurations (boolean rows) to zero factors."""
        for p in (*self.A, *self.B):
            p[rows] = 0

    def keep_best(self, rows: Tensor) -> None:
        for src, dst in zip((*self.A, *self.B), (*self.best_A, *self.best_B), strict=True):
            dst[rows] = src[rows]

    def factors(self, which: str, k: int, step: int) -> Factors:
        A = self.A if which == "final" else self.best_A
        B = self.B if which == "final" else self.best_B
        return Factors([a[k].clone() for a in A], [b[k].clone() for b in B],
                       float(self.s[k, 0, 0]), step)


def _check_groups(train: Sequence[Features], dev: Sequence[Features] | None,
                  runs: Sequence[RunSpec]) -> None:
    if not train:
        raise LorankError("no training features")
    if not runs:
        raise LorankError("no configurations to train")
    ref = train[0]
    for f in [*train, *(dev or [])]:
        if f.blocks != ref.blocks or f.K != ref.K:
            raise LorankError("all feature sets must share the adapted matrices and K")
    if dev is not None and len(dev) != len(train):
        raise LorankError(f"{len(dev)} dev feature sets for {len(train)} train groups")
    for run in runs:
        if not 0 <= run.group < len(train):
            raise LorankError(f"run group {run.group} has no feature set")
        check_positive_ints(rank=run.rank)
        if not math.isfinite(run.lr) or run.lr <= 0:
            raise LorankError(f"learning rate must be a positive number, got {run.lr!r}")


def _minibatch_weights(gens: list[torch.Generator], N: int, b: int, like: Tensor) -> Tensor:
    w = like.new_zeros(len(gens), N)
    for c, gen in enumerate(gens):
        w[c, torch.randperm(N, generator=gen)[:b]] = 1.0 / b
    return w


def train_linearized(
    train: Sequence[Features],
    runs: Sequence[RunSpec],
    settings: LinearizedTraining = LinearizedTraining(),
    dev: Sequence[Features] | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    adapter: AdapterConfig = UNIT_SCALE,
) -> TrainResult:
    """Train every configuration of ``runs`` in one vectorised loop (see module doc).

    Args:
        train: one Features per group (data split); run.group indexes this list.
        runs: the configurations (rank, init seed, lr, group).
        settings: shared :class:`LinearizedTraining`.
        dev: dev Features per group for checkpoint selection (None: the best checkpoint is the
            final one).
        progress: called with the number of finished steps.
        adapter: the LoRA adapter (:class:`~lorank.models.lora_shape.AdapterConfig`): its
            scaling rule and α give s at each run's rank (default s = 1); the runs' ranks are
            RunSpec.rank. The linearized engine initialises A ~ N(0, 1/n) and B = 0 (init
            ``fan_in``) and has no dropout.

    Returns:
        :class:`TrainResult`; ``best[c]`` is the earliest checkpoint with the best dev metric of
        run c (ties to fewer steps), ``final[c]`` the factors after T steps.
    """
    _check_groups(train, dev, runs)
    if adapter.init != "fan_in" or adapter.dropout:
        raise LorankError("the linearized engine initialises A ~ N(0, 1/n) (init fan_in) and "
                          f"has no dropout; got init {adapter.init!r}, dropout {adapter.dropout}")
    blocks = list(train[0].blocks)
    dtype, device = train[0].f0.dtype, train[0].f0.device
    T, C = settings.steps, len(runs)
    trajs = [Trajectory(r.rank, r.seed, r.lr, r.group, adapter.s_at(r.rank)) for r in runs]
    state = _State(runs, _buckets(runs, blocks, settings, adapter, dtype, device), train[0],
                   _choose_engine(train, runs, settings, dev), contrast=settings.loss == "ce")
    state.evals = settings.eval_steps()
    t0 = time.perf_counter()
    for t in range(T + 1):
        _step(t, train, dev, state, blocks, settings, trajs)
        if progress is not None and t < T:
            progress(t + 1)
    best, final = [None] * C, [None] * C
    for bucket in state.buckets:
        for k, c in enumerate(bucket.idx):
            end = T if trajs[c].diverged_step is None else trajs[c].diverged_step
            best[c] = bucket.factors("best", k, trajs[c].best_step)
            final[c] = bucket.factors("final", k, end)
    return TrainResult(list(runs), trajs, best, final, blocks, time.perf_counter() - t0,
                       "factored" if state.factored else "dense")


def _choose_engine(train: Sequence[Features], runs: Sequence[RunSpec],
                   settings: LinearizedTraining, dev: Sequence[Features] | None = None) -> bool:
    """True for the factored engine (see ``LinearizedTraining.engine`` and the module doc). Features
    that hold only their token factors (J above ``DENSE_J_MAX_MB``, train or dev) take the
    factored engine under ``auto`` and refuse ``dense``, which would build J."""
    have = all(f.factors is not None for f in train)
    if settings.engine == "factored" and not have:
        raise LorankError("engine 'factored' needs per-token factors: compute the features with "
                          "the outer (or auto) Jacobian method")
    factor_only = any(f.stored_J is None for f in (*train, *(dev or ())))
    if settings.engine == "dense" and factor_only:
        raise LorankError("engine 'dense' needs the Jacobians J, which these features do not "
                          "hold (too big: only per-token factors are kept); use engine auto "
                          "or factored")
    if settings.engine != "auto":
        return settings.engine == "factored"
    if not have:
        return False
    if factor_only:
        return True
    ranks: dict[int, list[int]] = {}
    for run in runs:
        ranks.setdefault(run.group, []).append(run.rank)
    dense, factored = step_costs(train, ranks, contrast=settings.loss == "ce")
    return factored < DENSE_WEIGHT * dense


def _buckets(runs: Sequence[RunSpec], blocks: list[Block], settings: LinearizedTraining,
             adapter: AdapterConfig, dtype: torch.dtype, device: torch.device
             ) -> list[_Bucket]:
    """One bucket per (group, rank), in (group, rank) order; rows in run order within one."""
    keys = sorted({(run.group, run.rank) for run in runs})
    buckets, lo = [], 0
    for g, r in keys:
        b = _Bucket([c for c, run in enumerate(runs) if (run.group, run.rank) == (g, r)], runs,
                    blocks, settings, adapter, dtype, device)
        b.lo, b.hi = lo, lo + len(b.idx)
        lo = b.hi
        buckets.append(b)
    return buckets


class _State:
    """Bookkeeping across steps: row order, per-group row ranges, step buffers D and M, alive
    mask, best dev, RNGs. Row i of D and M is run ``order[i]``; group g owns rows
    ``ranges[g] = (lo, hi)``, bucket b owns rows ``b.lo:b.hi``."""

    def __init__(self, runs: Sequence[RunSpec], buckets: list[_Bucket], ref: Features,
                 factored: bool = False, contrast: bool = False) -> None:
        device = ref.f0.device
        self.buckets = buckets
        self.factored = factored
        self.order = [c for b in buckets for c in b.idx]
        self.ranges: dict[int, tuple[int, int]] = {}
        for i, c in enumerate(self.order):
            lo, _ = self.ranges.get(runs[c].group, (i, i))
            self.ranges[runs[c].group] = (lo, i + 1)
        C = len(self.order)
        self.offsets = ref.offsets()
        self._shape = (C, ref.P)
        self._D: Tensor | None = None
        self.M = None if factored else torch.empty(C, ref.P, dtype=ref.f0.dtype, device=device)
        self.layouts = {g: GroupLayout([b for b in buckets if b.group == g], lo, ref.f0.dtype,
                                       device) for g, (lo, _) in self.ranges.items()
                        } if factored else {}
        self.saved: dict[int, list[tuple[Tensor, Tensor]]] = {}
        self.prepared: dict[tuple[int, int], list] = {}  # (id(features), group) -> Prepared
        self.contrast = contrast  # CE is shift-invariant: K - 1 contrasts (factored.py)
        self.alive = torch.ones(C, dtype=torch.bool, device=device)
        self.evals: frozenset[int] = frozenset()  # dev evaluation steps (LinearizedTraining)
        # best (dev metric, −dev loss) so far: the loss breaks ties on the metric (selection.py)
        self.best_dev: list[tuple[float, float]] = [(-math.inf, -math.inf)] * C
        self.gens = [torch.Generator().manual_seed(runs[c].seed * 1_000_003 + runs[c].rank)
                     for c in self.order]

    @property
    def D(self) -> Tensor:
        """Step buffer of vec(ΔW) rows (allocated on first use: the factored engine needs it
        only to evaluate dev features that have no factors)."""
        if self._D is None:
            self._D = torch.empty(self._shape, dtype=self.buckets[0].A[0].dtype,
                                  device=self.buckets[0].A[0].device)
        return self._D

    def fill_D(self) -> Tensor:
        """D = vec(s·B_ℓ A_ℓ) of every configuration at the current factors."""
        D = self.D
        for b in self.buckets:
            b.delta_into(D[b.lo:b.hi], self.offsets)
        return D

    def split(self, x: Tensor) -> list[Tensor]:
        """Per-bucket slices of a tensor whose first axis is in row order."""
        return [x[b.lo:b.hi] for b in self.buckets]


def _forward(feats: Sequence[Features], D: Tensor, state: _State) -> dict[int, Tensor]:
    """out_g = f0_g + Φ_g D_gᵀ per group: (N, K, C_g) (D_g is a view of D's rows)."""
    return {g: feats[g].f0[:, :, None] + (feats[g].flat() @ D[lo:hi].T).reshape(
        feats[g].N, feats[g].K, -1) for g, (lo, hi) in state.ranges.items()}


def _outputs(feats: Sequence[Features], state: _State, save: bool = False
             ) -> dict[int, Tensor]:
    """f_lin of every configuration per group, by the state's engine (``save`` keeps the
    factored engine's intermediates for this step's gradients)."""
    if not state.factored:  # dev evaluation reuses the D of this step's training forward
        return _forward(feats, state.fill_D() if save else state.D, state)
    if not all(f.factors is not None for f in feats):  # e.g. dev features without factors
        return _forward(feats, state.fill_D(), state)
    outs = {}
    for g, layout in state.layouts.items():
        key = (id(feats[g]), g)
        if key not in state.prepared:
            state.prepared[key] = prepare(feats[g], contrast=state.contrast)
        outs[g], saved = forward_group(state.prepared[key], feats[g].f0, layout)
        if save:
            state.saved[g] = saved
    return outs


def _step(t: int, train: Sequence[Features], dev: Sequence[Features] | None, state: _State,
          blocks: list[Block], settings: LinearizedTraining, trajs: list[Trajectory]) -> None:
    """Evaluate every configuration at θ_t (loss, dev, logs), then update unless t = T."""
    buckets, order = state.buckets, state.order
    C = len(order)
    outs = _outputs(train, state, save=True)
    L = buckets[0].A[0].new_empty(C)
    E = {}
    for g, (lo, hi) in state.ranges.items():
        L[lo:hi], E[g] = loss_and_grad(outs[g], train[g].labels, settings.loss,
                                       mse_target=settings.mse_target)
    obj = L if not settings.weight_decay else L + 0.5 * settings.weight_decay * torch.cat(
        [b.sq_norms() for b in buckets])
    bad = state.alive & ~torch.isfinite(obj)
    if bad.any():
        for b, rows in zip(buckets, state.split(bad), strict=True):
            if rows.any():
                b.kill(rows)
        for i in torch.nonzero(bad).flatten().tolist():
            trajs[order[i]].diverged_step = t
        state.alive &= ~bad
    live = state.alive
    eval_now = t in state.evals
    if dev is not None and eval_now:
        _evaluate_dev(t, dev, state, trajs, settings)
    elif dev is None and t == settings.steps:
        for b, rows in zip(buckets, state.split(live), strict=True):
            b.keep_best(rows)
        for i, c in enumerate(order):
            if bool(live[i]):
                trajs[c].best_step = t
    full_batch = settings.optimizer == "gd" or settings.batch_size is None
    log_now = t % settings.log_every == 0 or t == settings.steps or eval_now
    full_grads = None
    if log_now or full_batch:
        full_grads = _grads(train, E, state, blocks, settings.weight_decay)
    if log_now:
        _log(t, order, L, obj, full_grads, live, settings, trajs)
    if t == settings.steps:
        for g, (lo, hi) in state.ranges.items():
            value = metric(settings.metric, outs[g], train[g].labels)
            for j, i in enumerate(range(lo, hi)):
                trajs[order[i]].final_train_metric = (float(value[j]) if bool(live[i])
                                                      else float("nan"))
        return
    if full_batch:
        grads = full_grads
    else:
        Eb = {}
        for g, (lo, hi) in state.ranges.items():
            N = train[g].N
            w = _minibatch_weights(state.gens[lo:hi], N, min(settings.batch_size, N), outs[g])
            _, Eb[g] = loss_and_grad(outs[g], train[g].labels, settings.loss, w,
                                     settings.mse_target)
        grads = _grads(train, Eb, state, blocks, settings.weight_decay)
    all_alive = bool(live.all())
    for b, g, rows in zip(buckets, grads, state.split(live), strict=True):
        b.step(g, rows, settings, t, all_alive)


def _grads(train: Sequence[Features], E: dict[int, Tensor], state: _State,
           blocks: list[Block], wd: float) -> list[list[Tensor]]:
    """M = ∂L/∂ΔW for every configuration (one GEMM per group, written into the buffer M in
    place), then per-bucket ∂A, ∂B; the factored engine uses this step's saved intermediates."""
    if state.factored:
        per_bucket: dict[int, list[Tensor]] = {}
        for g, layout in state.layouts.items():
            prep = state.prepared[(id(train[g]), g)]
            for b, gr in zip(layout.buckets, grads_group(prep, layout, blocks, state.saved[g],
                                                         E[g], wd), strict=True):
                per_bucket[id(b)] = gr
        return [per_bucket[id(b)] for b in state.buckets]
    M = state.M
    for g, (lo, hi) in state.ranges.items():
        f = train[g]
        torch.mm(E[g].reshape(f.N * f.K, -1).T, f.flat(), out=M[lo:hi])
    return [b.grads(M[b.lo:b.hi], state.offsets, blocks, wd) for b in state.buckets]


def _log(t: int, order: list[int], L: Tensor, obj: Tensor, grads: list[list[Tensor]],
         live: Tensor, settings: LinearizedTraining, trajs: list[Trajectory]) -> None:
    g2 = torch.cat([sum(g.square().flatten(1).sum(1) for g in gs) for gs in grads]).tolist()
    Ls, objs, lives = L.tolist(), obj.tolist(), live.tolist()
    for i, c in enumerate(order):
        tr, ok = trajs[c], lives[i]
        gap = objs[i] - settings.loss_inf
        tr.steps.append(t)
        tr.loss.append(Ls[i] if ok else float("nan"))
        tr.objective.append(objs[i] if ok else float("nan"))
        tr.grad_norm2.append(g2[i] if ok else float("nan"))
        tr.pl_ratio.append(g2[i] / gap if ok and gap > 0 else float("nan"))


def _evaluate_dev(t: int, dev: Sequence[Features], state: _State, trajs: list[Trajectory],
                  settings: LinearizedTraining) -> None:
    order, live = state.order, state.alive.tolist()
    value = [float("nan")] * len(order)
    dloss = [float("nan")] * len(order)
    for g, out in _outputs(dev, state).items():
        v = metric(settings.metric, out, dev[g].labels).tolist()
        dl, _ = loss_and_grad(out, dev[g].labels, settings.loss, mse_target=settings.mse_target)
        dl = dl.tolist()
        lo, hi = state.ranges[g]
        value[lo:hi], dloss[lo:hi] = v, dl
    improved = torch.zeros(len(order), dtype=torch.bool)
    for i, c in enumerate(order):
        ok = live[i]
        v = value[i] if ok else float("nan")
        trajs[c].dev_steps.append(t)
        trajs[c].dev_metric.append(v)
        trajs[c].dev_loss.append(dloss[i] if ok else float("nan"))
        key = (v, -dloss[i] if math.isfinite(dloss[i]) else -math.inf)
        if ok and math.isfinite(v) and key > state.best_dev[i]:
            state.best_dev[i] = key
            trajs[c].best_step, trajs[c].best_dev = t, v
            improved[i] = True
    for b, rows in zip(state.buckets, state.split(improved.to(state.alive.device)),
                       strict=True):
        if rows.any():
            b.keep_best(rows)
