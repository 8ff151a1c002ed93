"""Report figures (matplotlib, Agg backend), each saved as PNG and SVG.

Every function takes the runs DataFrame (or a C* result list) and an output stem, and returns the
written paths, or ``[]`` when the store holds nothing to draw (the report then says so).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from lorank.report.metrics import GROUP, LABELS, prepared
from lorank.report.tables import mean_std


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, stem: Path) -> list[Path]:
    """Save ``fig`` as ``stem.png`` (150 dpi) and ``stem.svg``; close it."""
    plt = _plt()
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _grid(n: int):
    plt = _plt()
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False,
                             constrained_layout=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def accuracy_vs_rank(df: pd.DataFrame, stem: Path, metric: str = "value") -> list[Path]:
    """The task's test metric vs rank per task (mean ± std over seeds), one line per model ×
    method, with f(W0) dashed ("zero-shot", or "head at W0" when the head was fitted on the
    training split). ``df`` carries the columns of :func:`lorank.report.metrics.prepare`."""
    if df.empty:
        return []
    df = prepared(df)
    if metric not in df or df[metric].isna().all():
        return []
    tasks = sorted(df["task"].unique())
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        sub = df[df["task"] == task]
        for (model, method), g in sub.groupby(["model", "method"]):
            ranks = sorted(g["rank"].unique())
            stats = [mean_std(g.loc[g["rank"] == r, metric].to_numpy(float)) for r in ranks]
            ax.errorbar(ranks, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats],
                        marker="o", capsize=3, label=f"{model} {method}")
        # f(W0) of the linearized runs (the real-LoRA runs may use other seeds or a test cap)
        base = sub[sub["method"] == "linearized"] if (sub["method"] == "linearized").any() \
            else sub
        w0, _ = mean_std(base.groupby("seed")["w0"].first().to_numpy(float))
        if math.isfinite(w0):
            fitted = any(v is True for v in base["head_fitted"])
            ax.axhline(100 * w0, ls="--", c="grey", lw=1,
                       label="head at W0 (fitted)" if fitted else "zero-shot")
        ax.set_xscale("log", base=2)
        ax.set_title(task)
        ax.set_xlabel("rank r")
        ax.set_ylabel(f"test {LABELS.get(str(sub['metric'].iloc[0]), 'metric')} (%)")
        ax.legend(fontsize=7)
    fig.suptitle("Test metric vs LoRA rank (mean ± std over seeds; F1 for MRPC)")
    return save(fig, stem)


def _curves(df: pd.DataFrame, name: str) -> pd.DataFrame:
    rows = []
    for _, run in df.iterrows():
        curves = run.get("curves")
        curves = json.loads(curves) if isinstance(curves, str) else (curves or {})
        values = curves.get(name)
        if values:
            rows.append({**{k: run[k] for k in [*GROUP, "rank", "seed"]},
                         "values": np.asarray(values, dtype=float)})
    return pd.DataFrame(rows)


def loss_and_pl(df: pd.DataFrame, stem: Path) -> list[Path]:
    """Linearized training loss per rank (log scale) and the PL ratio ‖∇L‖²/(L − L_inf), for the
    first task with curves (mean over seeds)."""
    loss = _curves(df[df["method"] == "linearized"], "train_loss")
    if loss.empty:
        return []
    pl = _curves(df[df["method"] == "linearized"], "pl_ratio")
    task, model = loss.iloc[0]["task"], loss.iloc[0]["model"]
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, frame, ylabel in ((a, loss, "training loss"), (b, pl, "PL ratio μ_t")):
        sel = frame[(frame["task"] == task) & (frame["model"] == model)] if not frame.empty \
            else frame
        for r, g in (sel.groupby("rank") if not sel.empty else []):
            n = min(len(v) for v in g["values"])
            mean = np.nanmean(np.stack([v[:n] for v in g["values"]]), axis=0)
            ax.plot(np.arange(n), mean, label=f"r={r}")
        ax.set_yscale("log")
        ax.set_xlabel("recorded step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    a.set_title(f"{task} / {model}: linearized CE loss")
    b.set_title("PL ratio ‖∇L‖²/(L − L_inf)")
    return save(fig, stem)


def cstar_curves(results: list[dict], stem: Path) -> list[Path]:
    """C* success probability vs d/(KN) per solver/budget, the algebraic count (ratio 1) and the
    paper's C* = 1.35 marked. ``results`` are C* run metrics+curves dicts."""
    results = [r for r in results if r.get("ratios")]
    if not results:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for res in results:
        label = res.get("label", "")
        c50 = res.get("c50")
        if c50 is not None and math.isfinite(c50):
            label += f" (C50={c50:.2f})"
        ax.plot(res["ratios"], res["success"], marker="o", label=label)
    ax.axvline(1.0, c="k", ls=":", lw=1, label="count: d = KN (ratio 1)")
    ax.axvline(1.35, c="r", ls="--", lw=1, label="C* = 1.35 (paper)")
    ax.set_xlabel("count / (KN)")
    ax.set_ylabel("success probability")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7)
    ax.set_title("Phase transition of rank-r fitting (Gaussian features)")
    return save(fig, stem)


def ntk_gap(df: pd.DataFrame, stem: Path, metric: str = "ntk_gap") -> list[Path]:
    """Distance between real-LoRA and linearized predictions on the test set, by rank."""
    sub = df[df["method"] == "lora"] if "method" in df else df
    if sub.empty or metric not in sub or sub[metric].isna().all():
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for (task, model), g in sub.groupby(["task", "model"]):
        ranks = sorted(g["rank"].unique())
        stats = [mean_std(g.loc[g["rank"] == r, metric].to_numpy()) for r in ranks]
        ax.errorbar(ranks, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o",
                    capsize=3, label=f"{task} {model}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank r")
    ax.set_ylabel("‖f_real − f_lin‖ (test, per example RMS)")
    ax.set_title("NTK approximation error of real LoRA")
    ax.legend(fontsize=7)
    return save(fig, stem)


def singular_values(df: pd.DataFrame, stem: Path) -> list[Path]:
    """Singular values of the trained ΔW (first adapted matrix), one line per rank."""
    sv = _curves(df[df["method"] == "linearized"], "singular_values")
    if sv.empty:
        return []
    task, model = sv.iloc[0]["task"], sv.iloc[0]["model"]
    sel = sv[(sv["task"] == task) & (sv["model"] == model)]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for r, g in sel.groupby("rank"):
        n = min(len(v) for v in g["values"])
        ax.semilogy(np.arange(1, n + 1), np.mean([v[:n] for v in g["values"]], axis=0),
                    marker=".", label=f"r={r}")
    ax.set_xlabel("index")
    ax.set_ylabel("singular value of ΔW")
    ax.set_title(f"{task} / {model}: spectrum of the trained ΔW")
    ax.legend(fontsize=7)
    return save(fig, stem)
