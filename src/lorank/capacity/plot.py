"""Success-probability curves of C* sweeps (matplotlib, Agg backend), written atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lorank.atomic import atomic_file, check_out_file
from lorank.capacity.estimator import CStarResult
from lorank.errors import LorankError
from lorank.theory.thresholds import manifold_dim


def check_plot_path(path: str | os.PathLike[str]) -> Path:
    """Validate an output image path: its folder exists and is writable, the path is not a
    folder, and the suffix is png, pdf or svg."""
    p = Path(path)
    if p.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise LorankError(f"plot file must end in .png, .pdf or .svg, got {p.name!r}")
    if not p.parent.is_dir():
        raise LorankError(f"folder of the plot file does not exist: {p.parent}")
    check_out_file(p, "plot file")
    return p


def plot_success_curves(
    results: Sequence[CStarResult], path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Plot success rate against d/(KN) (manifold units, log scale) for several sweeps.

    Marks the manifold threshold d = KN (ratio 1) and the Sard threshold r(r+1)/2 = KN, which
    sits at ratio d / (r(r+1)/2) in manifold units, with each curve's C50 in the legend. All
    results must share (r, m, n). The file is written to a temporary name and renamed.
    """
    if not results:
        raise LorankError("nothing to plot: no results")
    p = check_plot_path(path)
    r, m, n = results[0].r, results[0].m, results[0].n
    if any((x.r, x.m, x.n) != (r, m, n) for x in results):
        raise LorankError("all plotted sweeps must share r, m and n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = manifold_dim(r, m, n)
    sard_at = d / (r * (r + 1) / 2)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for res in results:
        x = [d / kn for kn in res.curve.KN]
        c50 = res.c50 * (d / res.d) if res.bracketed else float("nan")
        label = f"{res.solver} T={res.steps}, tol={res.tol:g}, {res.loss}: C50={c50:.3g}"
        ax.plot(x, res.curve.rates, marker="o", label=label)
    ax.axvline(1.0, color="k", ls="--", lw=1, label="manifold threshold d = KN")
    ax.axvline(sard_at, color="tab:red", ls=":", lw=1.5,
               label=f"Sard threshold r(r+1)/2 = KN (d/KN = {sard_at:.3g})")
    ax.set_xscale("log")
    ax.set_xlabel(f"d / (KN), d = r(m+n) - r^2 = {d}  (r={r}, m={m}, n={n})")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title or "C* sweep: fraction of instances fitted")
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    try:
        with atomic_file(p) as tmp:  # the temporary's suffix is .tmp: name the format
            fig.savefig(tmp, dpi=120, format=p.suffix[1:].lower())
    finally:
        plt.close(fig)
    return p
