r"""PL measurements on real NTK features: linearized LoRA trajectories per rank (issue #5, part 2).

For one task, every data seed gives train features J ∈ R^{N×K×P}, f0 ∈ R^{N×K}
(:class:`lorank.ntk.Features`); :func:`lorank.linearized.train.train_linearized` runs full-batch
GD on Φ(A, B) = L(f0 + J·vec(s·BA)) (no weight decay) for every (rank, seed, lr) at once and
logs L_t and ‖∇Φ(θ_t)‖² at every step. Per trajectory this module reports

* μ_t = ‖∇L_t‖² / (L_t − L_inf) and κ_t = ‖∇L_t‖ / (L_t − L_inf)
  (:func:`lorank.capacity.pl.pl_ratios`; the PL claim of arXiv 2605.03724, science notes §2.3),
* the final training loss and the first step with L_t − L_inf < threshold.

L_inf, the infimum of the linearized loss over ΔW (full linearized fine-tuning):

* squared loss, L = (1/N) Σ_i ½‖f0_i + J_i·ΔW − Y_i‖²: the least-squares residual
  L_inf = (1/2N) ‖(I − Π)(Y − f0)‖², Π the projector onto the range of Φ = J as (NK, P)
  (:func:`squared_loss_inf`); it is 0 iff Y − f0 lies in that range, e.g. when Φ has full row
  rank NK (the generic case when KN ≪ P).
* cross-entropy: L_inf = 0 iff the data are separable by the linearized model. A sufficient test
  (:func:`ce_separable`): the margin features D_{i,k} = J_{i,y_i} − J_{i,k} (k ≠ y_i) have full
  row rank N(K − 1), so any positive margins are reachable. CE has no minimiser then (L → 0 only
  as ‖ΔW‖ → ∞), which is why μ_t → 0 with L_t while κ_t stays bounded (docs/capacity.md).

These are infima over all ΔW; the rank-r factorised problem has the same infimum once its
manifold dimension r(m+n) − r² exceeds KN (science notes §2.2), which holds at r = 1 for every
real few-shot setting here (d = 767 for one 384×384 matrix against KN = 64).

The learning rate is a grid, either absolute or relative to the kernel step
η0 = N / λ_max(ΦΦᵀ) (:func:`kernel_step`: the stable GD step of full linearized fine-tuning
with squared loss is 2η0), and per (rank, seed) the run with the smallest final training
objective among the non-diverged ones is reported (an optimisation claim: "some step size of the
grid reaches the threshold").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from lorank.capacity.pl import pl_ratios
from lorank.errors import LorankError, check_number, check_positive_ints
from lorank.linalg import require_finite
from lorank.linearized.experiment import (
    StrictJson,
    SweepConfig,
    TaskGrid,
    check_lr_grid,
    load_seeds,
    mean_std,
)
from lorank.linearized.losses import check_loss, targets
from lorank.linearized.train import LinearizedTraining, RunSpec, Trajectory, train_linearized
from lorank.models.lora_shape import AdapterConfig
from lorank.ntk.features import Features
from lorank.provenance import provenance

#: Default relative learning-rate grid (multiples of the kernel step η0).
AUTO_LR_MULTS: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)


def _gram(features: Features) -> torch.Tensor:
    """Θ = ΦΦᵀ in float64: (NK, NK)."""
    phi = require_finite(features.flat().to(torch.float64), "the features")
    return phi @ phi.T


def kernel_step(features: Features) -> float:
    """η0 = N / λ_max(ΦΦᵀ): the inverse top curvature of the mean squared loss over ΔW.

    With L(ΔW) = (1/N) Σ_i ½‖J_iΔW − …‖² the Hessian is ΦᵀΦ/N, whose top eigenvalue equals
    λ_max(ΦΦᵀ)/N; GD on ΔW is stable for η < 2η0.
    """
    lam = float(torch.linalg.eigvalsh(_gram(features))[-1])
    if not math.isfinite(lam) or lam <= 0:
        raise LorankError("features are zero or not finite: no kernel step")
    return features.N / lam


@dataclass(frozen=True)
class LeastSquares:
    """Infimum of the linearized squared loss over ΔW.

    Attributes:
        L_inf: (1/2N)‖(I − Π)(Y − f0)‖² (0 up to round-off when Y − f0 ∈ range Φ).
        row_rank: numerical rank of Φ (NK rows).
        rows: NK.
        L0: the loss at ΔW = 0, (1/2N)‖Y − f0‖².
    """

    L_inf: float
    row_rank: int
    rows: int
    L0: float


def numerical_rank(evals: torch.Tensor) -> int:
    """Eigenvalues above n·eps·max·10 (float64 round-off of a Gram matrix's spectrum)."""
    top = float(evals.max()) if evals.numel() else 0.0
    tol = evals.numel() * torch.finfo(torch.float64).eps * max(top, 0.0) * 10
    return int((evals > tol).sum()) if top > 0 else 0


def squared_loss_inf(features: Features, mse_target: str = "onehot") -> LeastSquares:
    """min over ΔW of (1/N) Σ_i ½‖f0_i + J_iΔW − Y_i‖² by least squares (see module doc).

    Computed from the eigendecomposition of Θ = ΦΦᵀ (NK × NK, float64): with Θ = UΛUᵀ the
    range of Φ is spanned by the columns of U with λ > tol (NumPy's matrix-rank tolerance on
    the squared singular values), so Π(Y − f0) = U_+U_+ᵀ(Y − f0).
    """
    N, K = features.N, features.K
    Y = targets(features.labels, K, mse_target, torch.float64)
    res = (Y - features.f0.to(torch.float64)).reshape(N * K)
    evals, U = torch.linalg.eigh(_gram(features))
    rank = numerical_rank(evals)
    Up = U[:, evals.numel() - rank:] if rank else U[:, :0]
    resid = res - Up @ (Up.T @ res)
    return LeastSquares(float(resid.square().sum()) / (2 * N), rank, N * K,
                        float(res.square().sum()) / (2 * N))


def margin_rank(features: Features) -> tuple[int, int]:
    """(numerical rank, number of rows N(K − 1)) of the margin features D_{i,k} = J_{i,y_i} −
    J_{i,k} (k ≠ y_i), in float64, the rank from the eigenvalues of DDᵀ
    (:func:`numerical_rank`, NumPy's tolerance); LorankError if they are not finite."""
    N, K = features.N, features.K
    J = features.J.to(torch.float64)
    labels = [int(y) for y in features.labels]
    rows = [J[i, labels[i]] - J[i, k] for i in range(N) for k in range(K) if k != labels[i]]
    if not rows:
        return 0, 0
    D = require_finite(torch.stack(rows), "the margin features")
    return numerical_rank(torch.linalg.eigvalsh(D @ D.T)), D.shape[0]


def ce_separable(features: Features) -> bool:
    """True when the margin features (:func:`margin_rank`) have full row rank N(K − 1): then any
    positive margins are reachable, the data are separable and inf CE = 0."""
    rank, rows = margin_rank(features)
    return rank == rows


def loss_inf(features: Features, loss: str, mse_target: str = "onehot") -> tuple[float, str]:
    """(L_inf, how it was obtained) for ``loss`` on these features (see module doc)."""
    check_loss(loss)
    if loss == "mse":
        ls = squared_loss_inf(features, mse_target)
        return ls.L_inf, f"least squares (rank Φ = {ls.row_rank} of {ls.rows} rows)"
    if ce_separable(features):
        return 0.0, "separable (margin features have full row rank)"
    return 0.0, "assumed 0 (margin features are rank deficient: separability not certified)"


@dataclass(frozen=True)
class PLRun:
    """One (rank, seed, lr) trajectory, summarised.

    Attributes:
        final_loss: L_T (training objective at the last step; NaN if diverged).
        steps_to_threshold: first logged step with L_t − L_inf < threshold (None if never).
        mu_min, kappa_min: min over steps of μ_t and κ_t (steps with L_t − L_inf > eps).
        mu_min_above: min of μ_t over steps with L_t − L_inf ≥ threshold (the PL constant
            while still above the target; NaN if no such step).
        t_mu_min: step of mu_min.
    """

    rank: int
    seed: int
    lr: float
    L_inf: float
    L0: float
    final_loss: float
    steps_to_threshold: int | None
    mu_min: float
    kappa_min: float
    mu_min_above: float
    t_mu_min: int
    diverged_step: int | None


def summarize_trajectory(traj: Trajectory, L_inf: float, threshold: float,
                         eps: float = 1e-12) -> PLRun:
    """PL summary of one engine trajectory: :func:`pl_ratios` of (objective, grad_norm2).

    Uses the logged objective Φ_t (equal to the loss without weight decay) and the squared norm
    of its full gradient over (A, B), both recorded by the engine at the same steps.
    """
    L = np.asarray(traj.objective, dtype=np.float64)
    g = np.asarray(traj.grad_norm2, dtype=np.float64)
    steps = np.asarray(traj.steps)
    pl = pl_ratios(L, g, L_inf, eps)
    gap = L - L_inf
    hit = np.nonzero(np.isfinite(gap) & (gap < threshold))[0]
    above = np.isfinite(pl.mu) & (gap >= threshold)
    t_min = int(steps[pl.t_min]) if pl.t_min >= 0 else -1
    return PLRun(traj.rank, traj.seed, traj.lr, float(L_inf), float(L[0]),
                 float(L[-1]) if traj.diverged_step is None else math.nan,
                 int(steps[hit[0]]) if hit.size else None, pl.mu_min, pl.kappa_min,
                 float(np.min(pl.mu[above])) if above.any() else math.nan, t_min,
                 traj.diverged_step)


def best_run(runs: Sequence[PLRun]) -> PLRun:
    """The non-diverged run with the smallest final loss (ties: smaller lr); else the first."""
    ok = [r for r in runs if r.diverged_step is None and math.isfinite(r.final_loss)]
    return min(ok, key=lambda r: (r.final_loss, r.lr)) if ok else runs[0]


@dataclass(frozen=True)
class TrainedGrid(TaskGrid):
    """A task grid plus the linearized training both the PL measurement and the rank predictor
    run: the loss, the learning-rate grid (absolute, or ``None`` for the auto grid
    ``lr_mults``·η0), the K-shot data and its encoding. Validated on construction."""

    loss: str = "ce"
    lrs: tuple[float, ...] | None = None
    lr_mults: tuple[float, ...] = AUTO_LR_MULTS
    k: int = 16
    max_length: int = 128
    dtype: str = "float32"
    data_dir: str | None = None
    use_cache: bool = True

    def __post_init__(self) -> None:
        check_loss(self.loss)
        super().__post_init__()
        check_lr_grid("learning rates", self.lrs)
        check_lr_grid("lr multipliers", self.lr_mults)

    def load_seeds(self, test_max: int | None = None) -> list[Any]:
        """Data, classifier and train/dev features of every seed (feature cache):
        :func:`lorank.linearized.experiment.load_seeds` of the :class:`SweepConfig` with this
        grid's task, classifier, adapter, seeds and data (test split capped at ``test_max``)."""
        return load_seeds(SweepConfig(
            task=self.task, model=self.model, head=self.head, adapter=self.adapter,
            seeds=self.seeds, k=self.k, max_length=self.max_length, dtype=self.dtype,
            data_dir=self.data_dir, use_cache=self.use_cache, test_max=test_max))


@dataclass(frozen=True)
class PLConfig(TrainedGrid):
    """A PL experiment on one task (JSON-able)."""

    adapter: AdapterConfig = field(default_factory=lambda: AdapterConfig(ranks=(1, 12)))
    mse_target: str = "onehot"
    steps: int = 1000
    threshold: float = 1e-2

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_ints(steps=self.steps)
        check_number("threshold", self.threshold, low=0)


@dataclass
class PLResult(StrictJson):
    """Every run of a PL experiment, the reported (best-lr) run per (rank, seed), and L_inf."""

    config: dict[str, Any]
    runs: list[PLRun]
    chosen: list[PLRun]
    loss_inf: dict[int, dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        """Per rank: final train loss mean ± std, fraction of seeds below threshold, and min μ, κ
        over the reported runs of the seeds where some lr of the grid did not diverge."""
        thr = self.config["threshold"]
        rows = []
        for r in sorted({c.rank for c in self.chosen}):
            cs = [c for c in self.chosen if c.rank == r]
            ok = [c for c in cs if c.diverged_step is None]  # seeds with a stable lr
            fin = [c.final_loss for c in cs]
            hits = [c.steps_to_threshold for c in cs if c.steps_to_threshold is not None]
            rows.append({
                "rank": r, "loss": self.config["loss"], "n_seeds": len(cs),
                "final_loss": mean_std(fin), "L0": mean_std([c.L0 for c in cs]),
                "below_threshold": sum(c.steps_to_threshold is not None for c in cs) / len(cs),
                "threshold": thr,
                "steps_to_threshold": (float(np.median(hits)) if hits else None),
                "mu_min": _nanmin([c.mu_min for c in ok]),
                "mu_min_above": _nanmin([c.mu_min_above for c in ok]),
                "kappa_min": _nanmin([c.kappa_min for c in ok]),
                "seeds_all_diverged": len(cs) - len(ok),
                "lrs": [c.lr for c in cs],
                "diverged_runs": sum(x.diverged_step is not None for x in self.runs
                                     if x.rank == r),
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "table": self.table(), "loss_inf": self.loss_inf,
                "chosen": [asdict(c) for c in self.chosen],
                "runs": [asdict(c) for c in self.runs], "seconds": self.seconds,
                "provenance": provenance()}


def _nanmin(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return float(min(vals)) if vals else math.nan


def pl_on_features(train: Sequence[Features], seeds: Sequence[int], cfg: PLConfig,
                   progress: Callable[[int], None] | None = None) -> PLResult:
    """Train every (rank, seed, lr) of ``cfg`` on the given train features and summarise.

    Args:
        train: one Features per data seed (same blocks and K).
        seeds: the data seed of each feature set (also the LoRA init seed).
        cfg: ranks, loss, steps, lr grid (absolute ``lrs`` or ``lr_mults`` × η0 per seed),
            threshold.
    """
    if len(train) != len(seeds):
        raise LorankError(f"{len(train)} feature sets for {len(seeds)} seeds")
    t0 = time.perf_counter()
    infs, runs = {}, []
    for g, (f, seed) in enumerate(zip(train, seeds, strict=True)):
        L_inf, how = loss_inf(f, cfg.loss, cfg.mse_target)
        eta0 = kernel_step(f)
        infs[seed] = {"L_inf": L_inf, "how": how, "eta0": eta0, "N": f.N, "K": f.K, "P": f.P}
        lrs = cfg.lrs if cfg.lrs is not None else tuple(m * eta0 for m in cfg.lr_mults)
        runs += [RunSpec(r, seed, float(lr), g) for r in cfg.adapter.ranks for lr in sorted(lrs)]
    t_inf = time.perf_counter() - t0
    settings = LinearizedTraining(steps=cfg.steps, loss=cfg.loss, mse_target=cfg.mse_target,
                                  log_every=1, eval_every=cfg.steps)
    res = train_linearized(list(train), runs, settings, None, progress, adapter=cfg.adapter)
    summaries = [summarize_trajectory(tr, infs[run.seed]["L_inf"], cfg.threshold)
                 for run, tr in zip(res.runs, res.trajectories, strict=True)]
    chosen = [best_run([s for s in summaries if s.rank == r and s.seed == seed])
              for seed in seeds for r in cfg.adapter.ranks]
    return PLResult(asdict(cfg), summaries, chosen, infs,
                    {"loss_inf_s": t_inf, "train_s": res.seconds})


def run_pl(cfg: PLConfig, progress: Callable[[int], None] | None = None) -> PLResult:
    """Load the task's train features for every seed (feature cache) and run
    :func:`pl_on_features`."""
    t0 = time.perf_counter()
    seeds = cfg.load_seeds()
    t_feat = time.perf_counter() - t0
    result = pl_on_features([s.train for s in seeds], [s.seed for s in seeds], cfg, progress)
    result.seconds["features_s"] = t_feat
    return result
