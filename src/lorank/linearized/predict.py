r"""Rademacher rank predictor: train linearized LoRA at each candidate rank, bound each solution,
predict the argmin (issue #5, part 3; science notes §2.4; docs/theory.md).

Per data seed (train/dev NTK features J (N, K, P), f0 (N, K)) and candidate rank r:

1. train linearized LoRA by full-batch GD for every lr of a grid
   (:func:`lorank.linearized.train.train_linearized`) and select (lr, step) on dev
   (:func:`lorank.linearized.selection.select_checkpoint`, as ``lorank train`` does); the
   solution ΔW_r is the selected checkpoint (or the final one at the selected lr);
2. evaluate the margin bound of :func:`lorank.theory.rademacher.rademacher_bound` on it:
   bias = empirical ρ-margin (ramp) loss of f0 + J·ΔW_r on **train**; variance
   = (4K/ρ)·√(L·r)·‖ΔW_r‖_F·Γ·√K/√N (``norm="nuclear"``; L adapted matrices, each of rank ≤ r,
   so the block-diagonal update has rank ≤ L·r) or (4K/ρ)·‖ΔW_r‖_F·Γ·√K/√N (``"frobenius"``),
   Γ = max_{i,k} ‖J[i, k]‖ on train; confidence = √(log(|ρ grid|/δ)/(2N));
3. ρ: a fixed value, or (default) the best ρ of a geometric grid ρ_j = m_dev·2^j,
   j = −6..6, anchored at m_dev = the median |zero-shot margin| on the **dev** split. The
   anchor does not depend on the training sample, so a union bound over the 13 grid values
   (δ/13 each) keeps the bound valid for the minimising ρ; the union-bound cost is the same for
   every r and does not move the argmin.

The predicted rank is the argmin over r of the bound averaged over seeds (ties: smaller r);
per-seed argmins are reported too. With ``validate``, the same selected solutions are evaluated
on the test split (streamed Jacobians, :func:`lorank.ntk.stream.predict_linearized`) and the
rank with the best mean test accuracy is reported next to the prediction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from lorank.errors import LorankError, check_choice, check_number, check_positive_ints
from lorank.linearized.experiment import (
    StrictJson,
    select_runs,
    selection_metric,
    stream_test_metrics,
)
from lorank.linearized.pl_real import TrainedGrid, kernel_step
from lorank.linearized.train import (
    Factors,
    LinearizedTraining,
    RunSpec,
    TrainResult,
    train_linearized,
)
from lorank.ntk.features import Features
from lorank.provenance import provenance
from lorank.theory.rademacher import NORMS, margins_from_logits, rademacher_bound

RHO_HALF_WIDTH = 6
CHECKPOINTS = ("selected", "final")


def rho_grid(anchor: float, half_width: int = RHO_HALF_WIDTH) -> tuple[float, ...]:
    """ρ_j = anchor·2^j for j = −half_width..half_width."""
    check_number("rho anchor", anchor, low=0)
    return tuple(anchor * 2.0 ** j for j in range(-half_width, half_width + 1))


def dev_margin_anchor(dev: Features) -> float:
    """Median |μ_i| of the zero-shot margins f0 on the dev split (max |μ_i| if the median is 0)."""
    mu = np.abs(margins_from_logits(dev.f0.double().cpu().numpy(), dev.labels.cpu().numpy()))
    anchor = float(np.median(mu)) or float(mu.max())
    if anchor <= 0:
        raise LorankError("zero-shot dev margins are all zero: give --rho explicitly")
    return anchor


def max_feature_norm(features: Features) -> float:
    """Γ = max over examples i and logits k of ‖J[i, k]‖ (equals
    :func:`lorank.theory.rademacher.feature_norm` of J, without a float64 copy of J)."""
    gamma = float(features.J.norm(dim=2).max())
    if not math.isfinite(gamma) or gamma <= 0:
        raise LorankError("features are zero or not finite: the bound needs Γ > 0")
    return gamma


@dataclass(frozen=True)
class RankBound:
    """The bound of one rank-r solution on one seed, at its best ρ."""

    rank: int
    seed: int
    r_class: int
    rho: float
    bias: float
    variance: float
    confidence: float
    bound: float
    frob_norm: float
    feature_norm: float
    train_accuracy: float
    lr: float | None = None
    step: int | None = None


def solution_bound(train: Features, delta: torch.Tensor, r: int, rhos: Sequence[float],
                   norm: str = "nuclear", delta_conf: float = 0.05, seed: int = 0,
                   gamma: float | None = None) -> RankBound:
    """Bound of the solution ΔW (P,) at rank r, minimised over the ρ grid (union bound δ/|grid|).

    The class rank passed to :func:`rademacher_bound` is L·r (L = number of adapted matrices).
    """
    if not rhos:
        raise LorankError("the rho grid is empty")
    check_choice("norm", norm, NORMS)
    d = delta.to(torch.float64)
    logits = (train.f0.double() + train.J.double() @ d).cpu().numpy()
    labels = train.labels.cpu().numpy()
    margins = margins_from_logits(logits, labels)
    gamma = max_feature_norm(train) if gamma is None else gamma
    r_class = len(train.blocks) * r
    R_F = float(d.norm())
    best = min((rademacher_bound(margins, frob_norm=R_F, r=r_class, feature_norm=gamma,
                                 rho=rho, delta=delta_conf / len(rhos), K=train.K, norm=norm)
                for rho in rhos), key=lambda b: (b.bound, -b.rho))
    return RankBound(r, seed, r_class, best.rho, best.bias, best.variance, best.confidence,
                     best.bound, R_F, gamma, float(np.mean(margins > 0)))


def argmin_rank(values: Mapping[int, float], rtol: float = 1e-12) -> int:
    """The rank with the smallest value; values within rtol·|min| of the minimum tie and the
    smallest such rank wins. Non-finite values never win unless all are non-finite."""
    if not values:
        raise LorankError("no ranks to choose from")
    finite = {r: v for r, v in values.items() if math.isfinite(v)}
    if not finite:
        raise LorankError("every per-rank bound is non-finite")
    low = min(finite.values())
    return min(r for r, v in finite.items() if v <= low + rtol * abs(low))


@dataclass(frozen=True)
class PredictConfig(TrainedGrid):
    """A rank-prediction experiment on one task (JSON-able)."""

    steps: int = 400
    eval_every: int = 50
    norm: str = "nuclear"
    rho: float | None = None
    delta: float = 0.05
    checkpoint: str = "selected"
    validate: bool = False
    test_max: int | None = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_ints(steps=self.steps, eval_every=self.eval_every)
        check_choice("norm", self.norm, NORMS)
        if self.rho is not None:
            check_number("rho", self.rho, low=0)
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise LorankError(f"delta must be in (0, 1), got {self.delta!r}")
        check_choice("checkpoint", self.checkpoint, CHECKPOINTS)


@dataclass
class PredictResult(StrictJson):
    """Per (rank, seed) bounds (and test metrics when validated), the prediction, and timings."""

    config: dict[str, Any]
    bounds: list[RankBound]
    test: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)
    metric: str = "accuracy"
    seconds: dict[str, float] = field(default_factory=dict)

    def _mean(self, r: int, key: str) -> tuple[float, float]:
        vals = [getattr(b, key) for b in self.bounds if b.rank == r]
        return float(np.mean(vals)), float(np.std(vals))

    def ranks(self) -> list[int]:
        return sorted({b.rank for b in self.bounds})

    @property
    def predicted_rank(self) -> int:
        """argmin over r of the bound averaged over seeds (ties: smaller r)."""
        return argmin_rank({r: self._mean(r, "bound")[0] for r in self.ranks()})

    def per_seed_predictions(self) -> dict[int, int]:
        seeds = sorted({b.seed for b in self.bounds})
        return {s: argmin_rank({b.rank: b.bound for b in self.bounds if b.seed == s})
                for s in seeds}

    def test_mean(self, r: int, metric: str) -> tuple[float, float]:
        vals = [v[metric] for (rank, _), v in self.test.items()
                if rank == r and metric in v and math.isfinite(v[metric])]
        return (float(np.mean(vals)), float(np.std(vals))) if vals else (math.nan, math.nan)

    @property
    def measured_best_rank(self) -> int | None:
        """Rank with the best mean test accuracy (ties: smaller r); None without validation."""
        if not self.test:
            return None
        return argmin_rank({r: -self.test_mean(r, "accuracy")[0] for r in self.ranks()})

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for r in self.ranks():
            row = {"rank": r, "r_class": next(b.r_class for b in self.bounds if b.rank == r)}
            for key in ("bias", "variance", "confidence", "bound", "rho", "frob_norm",
                        "train_accuracy"):
                row[key] = self._mean(r, key)
            if self.test:
                row["test_accuracy"] = self.test_mean(r, "accuracy")
                if self.metric != "accuracy":
                    row[f"test_{self.metric}"] = self.test_mean(r, self.metric)
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "predicted_rank": self.predicted_rank,
                "per_seed_predictions": self.per_seed_predictions(),
                "measured_best_rank": self.measured_best_rank, "metric": self.metric,
                "table": self.table(), "bounds": [asdict(b) for b in self.bounds],
                "test": [{"rank": r, "seed": s, **v} for (r, s), v in sorted(self.test.items())],
                "seconds": self.seconds, "provenance": provenance()}


def train_and_select(train: Sequence[Features], dev: Sequence[Features], seeds: Sequence[int],
                     cfg: PredictConfig, metric: str = "accuracy"
                     ) -> tuple[TrainResult, dict[tuple[int, int], tuple[Factors, float] | None]]:
    """Train every (rank, seed, lr) and pick, per (seed, rank), the dev-selected checkpoint
    (``cfg.checkpoint == "selected"``) or the final factors at the selected lr (``"final"``;
    if that run diverged later, its selected checkpoint is used instead).

    Returns the engine result and {(rank, seed): (factors, lr), or None if every lr diverged
    before its first dev evaluation}.
    """
    runs = []
    for g, (f, seed) in enumerate(zip(train, seeds, strict=True)):
        lrs = cfg.lrs if cfg.lrs is not None else tuple(m * kernel_step(f)
                                                        for m in cfg.lr_mults)
        runs += [RunSpec(r, seed, float(lr), g) for r in cfg.adapter.ranks for lr in sorted(lrs)]
    settings = LinearizedTraining(steps=cfg.steps, loss=cfg.loss, eval_every=cfg.eval_every,
                                  log_every=cfg.eval_every, metric=metric, eval_early=False)
    res = train_linearized(list(train), runs, settings, list(dev), adapter=cfg.adapter)
    chosen: dict[tuple[int, int], tuple[Factors, float] | None] = {}
    for (g, r), c in select_runs(res, len(seeds), cfg.adapter.ranks, ties=False).items():
        if c < 0:
            chosen[(r, seeds[g])] = None
            continue
        final_ok = res.trajectories[c].diverged_step is None
        fac = res.final[c] if cfg.checkpoint == "final" and final_ok else res.best[c]
        chosen[(r, seeds[g])] = (fac, res.runs[c].lr)
    return res, chosen


def predict_on_features(train: Sequence[Features], dev: Sequence[Features],
                        seeds: Sequence[int], cfg: PredictConfig, metric: str = "accuracy"
                        ) -> tuple[PredictResult, dict[tuple[int, int], Factors]]:
    """Steps 1–3 of the module doc on given features; returns the result and the solutions."""
    if not (len(train) == len(dev) == len(seeds)):
        raise LorankError(f"{len(train)} train / {len(dev)} dev feature sets for "
                          f"{len(seeds)} seeds")
    t0 = time.perf_counter()
    _, chosen = train_and_select(train, dev, seeds, cfg, metric)
    t_train = time.perf_counter() - t0
    bounds, solutions = [], {}
    for g, seed in enumerate(seeds):
        rhos = (cfg.rho,) if cfg.rho is not None else rho_grid(dev_margin_anchor(dev[g]))
        gamma = max_feature_norm(train[g])
        for r in cfg.adapter.ranks:
            if chosen[(r, seed)] is None:
                continue
            fac, lr = chosen[(r, seed)]
            b = solution_bound(train[g], fac.delta(), r, rhos, cfg.norm, cfg.delta, seed, gamma)
            bounds.append(RankBound(**{**asdict(b), "lr": lr, "step": fac.step}))
            solutions[(r, seed)] = fac
    if not bounds:
        raise LorankError("every configuration diverged: no solution to bound")
    return (PredictResult(asdict(cfg), bounds, metric=metric,
                          seconds={"train_s": t_train, "bound_s": time.perf_counter() - t0
                                   - t_train}), solutions)


def run_predict(cfg: PredictConfig) -> PredictResult:
    """Load features (cache) for every seed, predict, and optionally validate on test."""
    t0 = time.perf_counter()
    seeds = cfg.load_seeds(test_max=cfg.test_max)
    t_feat = time.perf_counter() - t0
    task = seeds[0].data.task
    metric = selection_metric(task)
    result, solutions = predict_on_features([s.train for s in seeds], [s.dev for s in seeds],
                                            [s.seed for s in seeds], cfg, metric)
    result.seconds["features_s"] = t_feat
    if cfg.validate:
        t0 = time.perf_counter()
        if any(s.data.test is None for s in seeds):
            raise LorankError(f"task {cfg.task} has no test split to validate on")
        index = {s.seed: g for g, s in enumerate(seeds)}
        result.test = stream_test_metrics(
            seeds, {k: fac.delta() for k, fac in solutions.items()}, lambda k: index[k[1]],
            sorted(set(task.metrics) | {"accuracy"}), cfg.max_length)[1]
        result.seconds["test_s"] = time.perf_counter() - t0
    return result
