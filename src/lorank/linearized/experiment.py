"""A linearized-LoRA rank sweep on one task, end to end (the ``lorank train --mode linearized``).

For every data seed s (LM-BFF split 16-s): build the classifier, compute (or load) the NTK
features of train and dev; train every (rank, seed, lr) configuration in ONE vectorised run
(:func:`lorank.linearized.train.train_linearized`, one feature group per seed); per (rank, seed)
select (lr, step) on dev (:func:`lorank.linearized.selection.select_checkpoint`); fit the
kernel baseline on the same features (λ chosen on dev); then stream the test split once per
distinct classifier, contracting each Jacobian chunk with every needed ΔW (selected and final
per (rank, seed), kernel per seed) — test Jacobians are never materialised. Zero-shot is f(W0).
The LoRA init seed of a configuration is its data seed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from lorank.data.source import DataSource
from lorank.errors import LorankError, check_choice, check_number
from lorank.linearized.kernel import KERNEL_LAMS, select_kernel
from lorank.linearized.losses import metrics_dict
from lorank.linearized.model import factor_spectrum, spectrum
from lorank.linearized.selection import select_checkpoint
from lorank.linearized.step_size import full_kernel_step
from lorank.linearized.train import (
    LinearizedTraining,
    RunSpec,
    TrainResult,
    train_linearized,
)
from lorank.models.lora_shape import AdapterConfig
from lorank.ntk.features import Features
from lorank.ntk.jacobian import JacobianMethod
from lorank.ntk.stream import PREDICTORS

DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Learning-rate units: ``eta0`` — the grid holds multiples c of the kernel step η0 of the train
#: features (:func:`lorank.linearized.step_size.full_kernel_step`), resolved per data seed;
#: ``abs`` — the grid holds absolute learning rates.
LR_UNITS = ("eta0", "abs")
#: Default grid, in units of η0 (plain GD is stable at W0 for c < 2).
DEFAULT_LRS = (0.1, 0.3, 1.0)
#: A cell "moved" when dev selection kept a step > 0 whose train loss is at least this fraction
#: below the loss at W0 (see :func:`moved`).
MOVED_MIN_DROP = 0.01


def check_lr_grid(name: str, grid: Sequence[float] | None) -> None:
    """A learning-rate grid (absolute rates, or the auto grid's multipliers of η0; None = auto):
    non-empty, finite, positive (LorankError otherwise). Shared by the sweep, PL and
    rank-prediction configs."""
    if grid is not None and (not grid or any(not math.isfinite(v) or v <= 0 for v in grid)):
        raise LorankError(f"{name} must be positive numbers, got {grid}")


#: The rank grid of a sweep when none is given.
DEFAULT_RANKS = (1, 2, 4, 8, 12, 16)


@dataclass(frozen=True)
class TaskGrid:
    """What every experiment on one task shares: the classifier (model, head), the adapter —
    one :class:`~lorank.models.lora_shape.AdapterConfig` with the rank grid, targets, layers and
    scaling, passed down whole to the trainer — and the data seeds. Subclasses add their own
    settings after these."""

    task: str = "sst2"
    model: str = "minilm"
    head: str = "verbalizer"
    adapter: AdapterConfig = field(default_factory=lambda: AdapterConfig(ranks=DEFAULT_RANKS))
    seeds: tuple[int, ...] = (13, 21, 42, 87, 100)

    def __post_init__(self) -> None:
        if not isinstance(self.adapter, AdapterConfig):
            raise LorankError(f"adapter must be an AdapterConfig, got "
                              f"{type(self.adapter).__name__}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise LorankError(f"seeds must be a non-empty list of distinct integers, "
                              f"got {list(self.seeds)}")


@dataclass(frozen=True)
class SweepConfig(TaskGrid):
    """Everything that defines a linearized rank sweep (JSON-able, saved with the results).

    The task, classifier, adapter (rank grid, scaling, targets, layers) and seeds
    (:class:`TaskGrid`), the learning-rate grid and its unit, the data (shots ``k``, test cap,
    own files), the optimisation — one :class:`~lorank.linearized.train.LinearizedTraining` (steps,
    loss, weight decay, optimiser, evaluation period, engine), passed whole to the trainer with
    the task's selection metric and the adapter — and where the features are computed (dtype,
    device, memory, cache).
    """

    lrs: tuple[float, ...] = DEFAULT_LRS
    lr_unit: str = "eta0"
    k: int = 16
    train: LinearizedTraining = field(default_factory=LinearizedTraining)
    test_max: int | None = None
    max_length: int = 128
    dtype: str = "float32"
    device: str = "cpu"
    memory_budget_mb: float = 1024.0
    data_dir: str | None = None
    kernel_lams: tuple[float, ...] = KERNEL_LAMS
    use_cache: bool = True
    cache_root: str | None = None
    method: str = JacobianMethod.AUTO.value
    predictor: str = "auto"
    data: DataSource | None = None  # a user's own files (then ``task`` is their name)

    def __post_init__(self) -> None:
        if not isinstance(self.train, LinearizedTraining):
            raise LorankError(f"train must be LinearizedTraining, got {type(self.train).__name__}")
        JacobianMethod.parse(self.method)
        check_choice("dtype", self.dtype, DTYPES)
        super().__post_init__()
        check_lr_grid("learning rates", list(self.lrs))
        check_choice("lr unit", self.lr_unit, LR_UNITS)
        check_choice("predictor", self.predictor, PREDICTORS)
        check_number("memory budget (MB)", self.memory_budget_mb, low=0)

    def settings(self, metric: str) -> LinearizedTraining:
        """The trainer's settings: ``train`` with the task's selection ``metric`` and curves
        logged every min(eval_every, 10) steps."""
        return replace(self.train, metric=metric,
                       log_every=max(1, min(self.train.eval_every, 10)))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["adapter"] = self.adapter.to_dict()
        out["data"] = self.data.to_dict() if self.data is not None else None
        return out


@dataclass
class RunRecord:
    """One (rank, seed) cell: its lr grid's trajectories, the selection and all test numbers.

    ``w0`` holds the metrics of f(x; W0), the head as built before any adapter training: a
    zero-shot head when ``head_fitted`` is False, a head fitted on the k-shot train split
    (probe, pair) otherwise. ``eta0`` is the kernel step of the seed's train features and
    ``selected_lr_mult`` the selected learning rate in its units (None for absolute grids).
    ``movement`` says whether training moved the selected checkpoint (:func:`movement`).
    """

    task: str
    model: str
    head: str
    rank: int
    seed: int
    scale: float
    selected_lr: float | None
    selected_step: int | None
    selected_dev: float | None
    w0: dict[str, dict[str, float]]
    kernel: dict[str, Any]
    selected: dict[str, Any]
    final: dict[str, Any]
    head_fitted: bool = False
    eta0: float | None = None
    selected_lr_mult: float | None = None
    movement: dict[str, Any] = field(default_factory=dict)
    trajectories: list[dict[str, Any]] = field(default_factory=list)
    wall_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StrictJson:
    """``to_json()`` for a result with ``to_dict()``: strict JSON (NaN/inf become null, numpy
    numbers plain Python numbers, :func:`finite_json`, :func:`json_default`), indent 1."""

    def to_json(self) -> str:
        return json.dumps(finite_json(self.to_dict()), indent=1, default=json_default)


@dataclass
class SweepResult(StrictJson):
    """All records of a sweep, its resolved config, feature provenance and timings."""

    config: dict[str, Any]
    metric: str
    records: list[RunRecord]
    features: list[dict[str, Any]]
    timings: dict[str, Any]

    def table(self) -> list[dict[str, Any]]:
        """Per rank, mean ± std over seeds of the W0 head, kernel, selected and final test metric,
        the selections and how many cells moved."""
        rows = []
        m = self.metric
        for r in sorted({rec.rank for rec in self.records}):
            recs = [rec for rec in self.records if rec.rank == r]
            rows.append({
                "rank": r, "n_seeds": len(recs), "metric": m,
                "head_fitted": any(x.head_fitted for x in recs),
                "w0": mean_std([x.w0["test"].get(m) for x in recs]),
                "kernel": mean_std([x.kernel["test"].get(m) for x in recs]),
                "selected": mean_std([x.selected["test"].get(m) for x in recs]),
                "final": mean_std([x.final["test"].get(m) for x in recs]),
                "selected_lr": [x.selected_lr for x in recs],
                "selected_step": [x.selected_step for x in recs],
                "selected_lr_mult": [x.selected_lr_mult for x in recs],
                "moved": sum(bool(x.movement.get("moved")) for x in recs),
                "diverged_runs": sum(t["diverged_step"] is not None for x in recs
                                     for t in x.trajectories),
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        from lorank.provenance import provenance

        return {"mode": "linearized", "config": self.config, "metric": self.metric,
                "table": self.table(), "records": [r.to_dict() for r in self.records],
                "features": self.features, "timings": self.timings,
                "provenance": provenance()}


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """(mean, sample standard deviation) over seeds of the finite values — the convention of
    the report's tables (:func:`lorank.report.tables.mean_std`): std 0 for a single value,
    (nan, nan) for none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None and dict keys made strings, so that
    ``json.dumps`` writes strict JSON (NaN/inf become null). Shared by the result records."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for result records: numpy numbers as Python numbers (NaN and
    inf as null), anything else as its string."""
    if isinstance(obj, float | np.floating):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return str(obj)


def selection_metric(task: Any) -> str:
    """The dev metric used to select checkpoints: the task's primary metric (F1 when the task
    reports it, else accuracy; :attr:`lorank.data.tasks.TaskSpec.primary_metric`)."""
    return task.primary_metric


@dataclass
class _Seed:
    seed: int
    clf: Any
    data: Any
    train: Features
    dev: Features
    info: dict[str, Any]


Progress = Callable[[str, int], Callable[[int], None]]


def load_seeds(cfg: SweepConfig, progress: Progress | None = None,
               load_data: Callable[[int], Any] | None = None) -> list[_Seed]:
    """Data, classifier and train/dev features of every seed of ``cfg`` (reusable across
    sweeps that share them, e.g. the runs of one features group in ``lorank sweep``)."""
    from lorank.data.load import load_task
    from lorank.data.source import load_source
    from lorank.models import build_classifier, load_encoder
    from lorank.models.factory import FITTED_HEADS
    from lorank.ntk.pipeline import split_features

    enc = load_encoder(cfg.model, dtype=DTYPES[cfg.dtype], device=cfg.device)
    out, shared_clf = [], None
    tick = progress("features", len(cfg.seeds)) if progress is not None else None
    ad = cfg.adapter
    for seed in cfg.seeds:
        if load_data is not None:
            data = load_data(seed)
        elif cfg.data is not None:
            data = load_source(cfg.data, k=cfg.k if cfg.data.sampled else None, seed=seed,
                               test_max=cfg.test_max)
        else:
            data = load_task(cfg.task, k=cfg.k, seed=seed, data_dir=cfg.data_dir,
                             test_max=cfg.test_max)
        if cfg.head in FITTED_HEADS:
            clf = build_classifier(enc, data.task, cfg.head, train=data.train, dev=data.dev)
        else:
            shared_clf = shared_clf or build_classifier(enc, data.task, cfg.head)
            clf = shared_clf
        feats, info = [], {"seed": seed, "source": data.source}
        for split in (data.train, data.dev):
            f, path, hit = split_features(
                clf, split, targets=ad.targets, layers=ad.layers, max_length=cfg.max_length,
                method=cfg.method, memory_budget_mb=cfg.memory_budget_mb, k=cfg.k, seed=seed,
                use_cache=cfg.use_cache, cache_root=cfg.cache_root)
            feats.append(f)
            info[split.name] = {"N": f.N, "K": f.K, "P": f.P, "cache": str(path) if path
                                else None, "cache_hit": hit,
                                "seconds": f.meta.get("seconds")}
        out.append(_Seed(seed, clf, data, feats[0], feats[1], info))
        if tick is not None:
            tick(len(out))
    return out


def run_linearized_sweep(cfg: SweepConfig, progress: Progress | None = None,
                         load_data: Callable[[int], Any] | None = None,
                         seeds: list[_Seed] | None = None) -> SweepResult:
    """Run the sweep described by ``cfg`` (see module doc) and return all records.

    ``load_data(seed) -> FewShotData`` replaces the default loader
    (:func:`lorank.data.source.load_source` of ``cfg.data`` when set, else
    :func:`lorank.data.load.load_task` with cfg.task, k, data_dir, test_max); ``seeds``
    (from :func:`load_seeds` with the same data/model fields) skips loading altogether.
    ``progress(stage, total)`` returns a callback taking the number of finished units; stages
    are ``"features"``, ``"train"`` (steps) and ``"test"`` (examples).
    """
    t_all = time.perf_counter()
    seeds = seeds if seeds is not None else load_seeds(cfg, progress, load_data)
    t_feat = time.perf_counter() - t_all
    task = seeds[0].data.task
    metric = selection_metric(task)
    names = list(task.metrics)
    t0 = time.perf_counter()
    # η0 of each seed's train features (None for absolute grids): the inverse top curvature of
    # full linearized fine-tuning at W0 with the sweep's loss and weight decay, the same for
    # every rank, so every rank of a seed trains with the same learning rates
    eta0 = [full_kernel_step(s.train, cfg.train.loss, cfg.train.weight_decay)
            if cfg.lr_unit == "eta0" else None for s in seeds]
    t_eta = time.perf_counter() - t0
    runs, mults = [], {}
    for g, s in enumerate(seeds):
        for r in cfg.adapter.ranks:
            for c in sorted(cfg.lrs):
                lr = float(c * eta0[g]) if eta0[g] is not None else float(c)
                mults[(g, lr)] = float(c) if eta0[g] is not None else None
                runs.append(RunSpec(r, s.seed, lr, g))
    t0 = time.perf_counter()
    result = train_linearized([s.train for s in seeds], runs, cfg.settings(metric),
                              [s.dev for s in seeds],
                              progress("train", cfg.train.steps) if progress else None,
                              adapter=cfg.adapter)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    kernels = [select_kernel(s.train, s.dev, cfg.kernel_lams, cfg.train.loss, metric,
                             cfg.train.mse_target)
               for s in seeds]
    t_kernel = time.perf_counter() - t0
    choices = select_runs(result, len(seeds), cfg.adapter.ranks)
    t0 = time.perf_counter()
    records = _evaluate(cfg, seeds, result, choices, kernels, names, progress)
    t_test = time.perf_counter() - t0
    for rec in records:
        g = next(i for i, s in enumerate(seeds) if s.seed == rec.seed)
        rec.eta0 = eta0[g]
        rec.selected_lr_mult = mults.get((g, rec.selected_lr))
        rec.wall_seconds = t_train / max(1, len(records))
    timings = {"features_s": t_feat, "eta0_s": t_eta, "train_s": t_train, "kernel_s": t_kernel,
               "test_s": t_test, "total_s": time.perf_counter() - t_all,
               "configs": len(runs), "engine": result.engine}
    return SweepResult(cfg.to_dict(), metric, records, [s.info for s in seeds], timings)


def movement(traj: dict[str, Any], step: int | None, delta_fro: float | None
             ) -> dict[str, Any]:
    """Did training move this cell? From the selected learning rate's trajectory:

    ``train_loss_init`` (at W0), ``train_loss_selected`` (at the selected step),
    ``train_loss_final`` (last step), ``train_loss_drop`` = 1 − L_selected / L_init,
    ``delta_fro`` = ‖ΔW‖_F of the selected checkpoint (all adapted matrices), and ``moved``:
    the selected step is > 0 **and** its train loss is at least :data:`MOVED_MIN_DROP` (1 %)
    below the loss at W0. A cell that kept step 0, or whose selected update left the train loss
    where it was, did not train (a learning rate far below the kernel step does that).
    """
    steps, losses = traj.get("steps") or [], traj.get("loss") or []
    at = dict(zip(steps, losses, strict=True))
    init = at.get(0, math.nan)
    sel = at.get(step, math.nan) if step is not None else math.nan
    final = losses[-1] if losses else math.nan
    drop = 1 - sel / init if math.isfinite(init) and init > 0 and math.isfinite(sel) else math.nan
    moved = bool(step is not None and step > 0 and math.isfinite(drop)
                 and drop >= MOVED_MIN_DROP)
    return {"train_loss_init": init, "train_loss_selected": sel, "train_loss_final": final,
            "train_loss_drop": drop, "delta_fro": delta_fro, "moved": moved}


def select_runs(result: TrainResult, groups: int, ranks: Sequence[int], ties: bool = True
                ) -> dict[tuple[int, int], int]:
    """(group, rank) -> index of the run selected on dev over the learning rates (ascending:
    :func:`select_checkpoint`), or -1 when every lr diverged before its first evaluation.

    ``ties``: the dev loss breaks ties on the metric, as in the engine's best checkpoint, which
    is then the selected step (checked); without it (the rank predictor) only the metric counts.
    """
    chosen = {}
    for g in range(groups):
        for r in ranks:
            idx = {run.lr: c for c, run in enumerate(result.runs)
                   if run.group == g and run.rank == r}
            trajs = {lr: result.trajectories[c] for lr, c in sorted(idx.items())}
            curves = {lr: (t.dev_steps, t.dev_metric, t.dev_loss) if ties
                      else (t.dev_steps, t.dev_metric) for lr, t in trajs.items()}
            try:
                choice = select_checkpoint(curves)
            except LorankError:
                chosen[(g, r)] = -1
                continue
            c = idx[choice.key]
            if ties and result.best[c].step != choice.step:
                raise RuntimeError("stored checkpoint does not match the selected step")
            chosen[(g, r)] = c
    return chosen


def _evaluate(cfg: SweepConfig, seeds: list[_Seed], result: TrainResult,
              chosen: dict[tuple[int, int], int], kernels: list[Any], names: list[str],
              progress: Progress | None) -> list[RunRecord]:
    """Train/dev/test metrics of selected, final, kernel and the W0 head; build the records."""
    blocks = result.blocks
    cols: dict[tuple[str, int, int], torch.Tensor] = {}
    for (g, r), c in chosen.items():
        if c >= 0:
            cols[("selected", g, r)] = result.best[c].delta()
            if result.trajectories[c].diverged_step is None:
                cols[("final", g, r)] = result.final[c].delta()
    for g, (fit, _) in enumerate(kernels):
        cols[("kernel", g, 0)] = fit.delta
    split_metrics = _split_metrics(seeds, cols, names)
    w0_test, test_metrics = stream_test_metrics(
        seeds, cols, lambda key: key[1], names, cfg.max_length, progress,
        predictor=cfg.predictor, method=cfg.method, memory_budget_mb=cfg.memory_budget_mb)
    records = []
    for g, s in enumerate(seeds):
        fit, kdev = kernels[g]
        kernel = {"lam": fit.lam, "lam_abs": fit.lam_abs, "dev_by_lam": kdev,
                  "train": split_metrics.get(("kernel", g, 0), {}).get("train", {}),
                  "dev": split_metrics.get(("kernel", g, 0), {}).get("dev", {}),
                  "test": test_metrics.get(("kernel", g, 0), {}),
                  "spectrum": spectrum(fit.delta, blocks)}
        zero = {"train": split_metrics[("w0", g, 0)]["train"],
                "dev": split_metrics[("w0", g, 0)]["dev"],
                "test": w0_test.get(g, {})}
        for r in cfg.adapter.ranks:
            c = chosen[(g, r)]
            trajs = [result.trajectories[i].to_dict() for i, run in enumerate(result.runs)
                     if run.group == g and run.rank == r]
            records.append(_record(cfg, s, r, c, result, zero, kernel, trajs, split_metrics,
                                   test_metrics, blocks, g))
    return records


def _record(cfg: SweepConfig, s: _Seed, r: int, c: int, result: TrainResult, zero: dict,
            kernel: dict, trajs: list[dict], split_metrics: dict, test_metrics: dict,
            blocks: list, g: int) -> RunRecord:
    def part(kind: str, factors: Any, diverged: int | None) -> dict[str, Any]:
        key = (kind, g, r)
        return {"step": None if factors is None else factors.step,
                "diverged_step": diverged,
                "train": split_metrics.get(key, {}).get("train", {}),
                "dev": split_metrics.get(key, {}).get("dev", {}),
                "test": test_metrics.get(key, {}),
                "spectrum": ([] if factors is None or key not in split_metrics else
                             factor_spectrum(factors.A, factors.B, factors.s, blocks))}

    from lorank.models.factory import FITTED_HEADS

    if c < 0:
        sel = part("selected", None, None)
        fin = part("final", None, None)
        lr = step = dev = None
        moved = movement({}, None, None)
    else:
        tr = result.trajectories[c]
        sel = part("selected", result.best[c], None)
        fin = part("final", result.final[c], tr.diverged_step)
        lr, step, dev = tr.lr, tr.best_step, tr.best_dev
        fro = [b["frobenius"] for b in sel["spectrum"]]
        moved = movement(tr.to_dict(), step, math.sqrt(sum(x * x for x in fro)) if fro
                         else 0.0)
    return RunRecord(task=s.data.task.name, model=cfg.model, head=cfg.head, rank=r,
                     seed=s.seed, scale=trajs[0]["scale"], selected_lr=lr, selected_step=step,
                     selected_dev=dev, w0=zero, kernel=kernel, selected=sel, final=fin,
                     head_fitted=cfg.head in FITTED_HEADS, movement=moved,
                     trajectories=trajs)


def _split_metrics(seeds: list[_Seed], cols: dict, names: list[str]) -> dict:
    """Train and dev metrics of every column (materialised features) plus the W0 head."""
    out: dict[tuple[str, int, int], dict[str, dict[str, float]]] = {}
    for g, s in enumerate(seeds):
        keys = [k for k in cols if k[1] == g]
        for split_name, f in (("train", s.train), ("dev", s.dev)):
            out.setdefault(("w0", g, 0), {})[split_name] = metrics_dict(
                list(names), f.f0[:, :, None], f.labels)[0]
            if not keys:
                continue
            D = torch.stack([cols[k] for k in keys], dim=1).to(f.f0.dtype)
            vals = metrics_dict(list(names), f.f0[:, :, None] + f.apply(D), f.labels)
            for k, v in zip(keys, vals, strict=True):
                out.setdefault(k, {})[split_name] = v
    return out


def stream_test_metrics(seeds: Sequence[_Seed], cols: Mapping[Any, torch.Tensor],
                        seed_of: Callable[[Any], int], names: Sequence[str], max_length: int,
                        progress: Progress | None = None, **predict: Any
                        ) -> tuple[dict[int, dict[str, float]], dict[Any, dict[str, float]]]:
    """Test metrics of f(W0) per seed index g and of f0 + J·ΔW for every column ΔW (P,) of
    ``cols`` (key -> ΔW, its seed index ``seed_of(key)``): each distinct (classifier, test split)
    is streamed once with the columns of every seed sharing it
    (:func:`lorank.ntk.stream.predict_linearized`, keyword arguments ``predict``); seeds without
    a test split are skipped. Returns ({g: W0 metrics}, {key: metrics})."""
    from lorank.models.lower_cache import reuse_lower_states
    from lorank.ntk.cache import split_fingerprint
    from lorank.ntk.stream import predict_linearized

    groups: dict[tuple[int, str], list[int]] = {}
    for g, s in enumerate(seeds):
        if s.data.test is not None:
            groups.setdefault((id(s.clf), split_fingerprint(s.data.test)), []).append(g)
    w0: dict[int, dict[str, float]] = {}
    out: dict[Any, dict[str, float]] = {}
    with reuse_lower_states():  # the frozen bottom of the encoder, once per test split
        for members in groups.values():
            s0 = seeds[members[0]]
            keys = [k for k in cols if seed_of(k) in members]
            blocks = s0.train.blocks
            inputs = s0.clf.encode(s0.data.test, max_length=max_length)
            D = torch.stack([cols[k] for k in keys], dim=1) if keys else torch.zeros(
                sum(b.size for b in blocks), 1)
            cb = progress("test", len(s0.data.test)) if progress else None
            f0, lin = predict_linearized(s0.clf, inputs, blocks, D, progress=cb, **predict)
            labels = torch.as_tensor(np.array(s0.data.test.labels, dtype=np.int64),
                                     device=f0.device)
            w0.update(dict.fromkeys(members, metrics_dict(list(names), f0[:, :, None], labels)[0]))
            if keys:  # else only W0 was wanted (D is one zero column)
                out.update(zip(keys, metrics_dict(list(names), lin, labels), strict=True))
    return w0, out
