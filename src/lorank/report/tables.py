"""Result tables from the results store: metric by rank with ties, r = 1 vs r = 12 by TOST.

Input is a pandas DataFrame with one row per finished run (see
:func:`lorank.report.build.runs_frame`) with the report columns of
:func:`lorank.report.metrics.prepare` (``value`` = the task's primary metric, ``moved``, ``w0``,
...; added on the fly when missing). Every table is a :class:`Table` (header, rows, per-row bold
cells, a note) rendered to Markdown, LaTeX or HTML by one function each. Aggregation over seeds
is mean ± sample std (ddof = 1), as in LM-BFF; comparisons are paired over seeds
(:mod:`lorank.report.stats`: TOST at a margin δ, the tie rule, power).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lorank.report.metrics import GROUP, LABELS, prepared
from lorank.report.stats import (
    DEFAULT_MARGIN,
    DID_NOT_TRAIN,
    EQUIVALENT,
    INCONCLUSIVE,
    Comparison,
    compare,
    mde,
    tied_with_best,
)

__all__ = ["GROUP", "Headline", "RankEffect", "Table", "by_rank", "headline", "headline_table",
           "mean_std", "multiclass_table", "prescription_table", "rank_effect", "rank_effects",
           "to_html", "to_latex", "to_markdown"]


@dataclass
class Table:
    """A rendered-agnostic table: title, header, rows of strings, and cells to set in bold."""

    title: str
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    note: str = ""


def mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of finite values."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def fmt(mean: float, std: float | None = None, scale: float = 100.0) -> str:
    """``"73.1 ± 0.5"`` (accuracy in percent); ``"-"`` for NaN."""
    if mean is None or not math.isfinite(mean):
        return "-"
    if std is None or not math.isfinite(std):
        return f"{mean * scale:.1f}"
    return f"{mean * scale:.1f} ± {std * scale:.1f}"


def _pts(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x * 100:+.1f}"


def _ci(ci: tuple[float, float] | None) -> str:
    """An interval in points with two decimals (so that a bound next to the margin reads on the
    side of it the test saw)."""
    if ci is None or not all(math.isfinite(v) for v in ci):
        return "-"
    return f"[{ci[0] * 100:+.2f}, {ci[1] * 100:+.2f}]"


def paired(sub: pd.DataFrame, rank_a: int, rank_b: int, column: str = "value",
           use_moved: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Per-seed values of two ranks of one group, over the seeds both have a finite value:
    (a, b, trained, seeds), ``trained[i]`` = at least one of the two moved off W0 on seed i
    (all True when ``use_moved`` is False, e.g. for the final checkpoint)."""
    def per_seed(rank: int) -> pd.DataFrame:
        rows = sub[(sub["rank"] == rank) & np.isfinite(sub[column].astype(float))]
        return rows.groupby("seed").agg(value=(column, "mean"), moved=("moved", "any"))

    A, B = per_seed(rank_a), per_seed(rank_b)
    seeds = sorted(set(A.index) & set(B.index))
    a = A.loc[seeds, "value"].to_numpy(float)
    b = B.loc[seeds, "value"].to_numpy(float)
    if use_moved:
        trained = (A.loc[seeds, "moved"].to_numpy(bool) | B.loc[seeds, "moved"].to_numpy(bool))
    else:
        trained = np.ones(len(seeds), bool)
    return a, b, trained, seeds


@dataclass(frozen=True)
class RankEffect:
    """Ranks of one task × model × method: means, the best rank and the ranks tied with it.

    Tie rule (:func:`lorank.report.stats.tied_with_best`): r is tied with the best rank b (the
    largest mean; exact ties go to the smaller rank) unless the paired difference x_b − x_r is
    significant (two-sided paired t-test, α = 0.05, over the seeds where at least one of the two
    moved off W0) and its mean is at least the margin δ. Power: ``paired_sd`` is the root mean
    square of the SDs of those paired differences, ``mde`` the minimal detectable difference at
    80% power for that SD and the median number of tested seed pairs.
    """

    task: str
    model: str
    method: str
    metric: str
    K: int
    means: dict[int, float]
    stds: dict[int, float]
    best: int | None
    tied: tuple[int, ...]
    n: int
    cells: int
    cells_moved: int
    paired_sd: float
    mde: float
    margin: float

    @property
    def trained(self) -> bool:
        """Some cell of the group moved off W0."""
        return self.cells_moved > 0

    @property
    def detected(self) -> bool:
        """A rank effect: some rank with a value is not tied with the best."""
        finite = [r for r, m in self.means.items() if math.isfinite(m)]
        return self.trained and len(self.tied) < len(finite)

    def text(self) -> str:
        """"did not train", "none detected" or "best r = b (tied: …)"."""
        if not self.trained:
            return DID_NOT_TRAIN
        if self.best is None:
            return "-"
        if not self.detected:
            return "none detected"
        others = [r for r in self.tied if r != self.best]
        return f"best r = {self.best}" + (f" (tied: {', '.join(map(str, others))})"
                                          if others else "")


def rank_effect(sub: pd.DataFrame, margin: float = DEFAULT_MARGIN, column: str = "value",
                use_moved: bool = True) -> RankEffect:
    """The :class:`RankEffect` of one group (rows of one task × model × method)."""
    sub = prepared(sub)
    first = sub.iloc[0]
    ranks = sorted(int(r) for r in sub["rank"].dropna().unique())
    means, stds = {}, {}
    for r in ranks:
        means[r], stds[r] = mean_std(sub.loc[sub["rank"] == r, column].to_numpy(float))
    finite = {r: m for r, m in means.items() if math.isfinite(m)}
    best = min(finite, key=lambda r: (-finite[r], r)) if finite else None
    tied, sds, ns = [], [], []
    for r in finite:
        if r == best:
            tied.append(r)
            continue
        a, b, trained, _ = paired(sub, best, r, column, use_moved)
        if tied_with_best(a, b, margin, trained):
            tied.append(r)
        if trained.sum() >= 2:
            sds.append(float((a - b)[trained].std(ddof=1)))
            ns.append(int(trained.sum()))
    moved = sub["moved"].astype(bool) if use_moved else pd.Series(True, index=sub.index)
    sd = math.sqrt(float(np.mean(np.square(sds)))) if sds else math.nan
    n = int(np.median(ns)) if ns else int(sub["seed"].nunique())  # typical tested pairs
    return RankEffect(str(first["task"]), str(first["model"]), str(first["method"]),
                      str(first["metric"]), int(first["K"]), means, stds, best,
                      tuple(sorted(tied)), int(sub["seed"].nunique()), len(sub),
                      int(moved.sum()), sd, mde(sd, n) if sds else math.inf, margin)


def rank_effects(df: pd.DataFrame, margin: float = DEFAULT_MARGIN) -> list[RankEffect]:
    """:func:`rank_effect` of every task × model × method (sorted)."""
    return [rank_effect(sub, margin) for _, sub in prepared(df).groupby(GROUP, sort=True)]


def _w0_header(df: pd.DataFrame) -> tuple[str, str]:
    """Header of the f(W0) column and a note (CONTRACT: "zero-shot" only for unfitted heads)."""
    fitted = {v for v in df["head_fitted"] if v is not None}
    if fitted == {False}:
        return "zero-shot", ""
    if fitted == {True}:
        return "head at W0 (fitted on train)", ""
    return "f(W0)", ("f(W0): the model before adapter training; † marks a head fitted on the "
                     "training split (head at W0, not zero-shot).")


RULES_NOTE = ("Bold: the best rank and the ranks tied with it — r is tied with the best rank "
              "unless the paired difference (best − r) is significant (two-sided paired t-test, "
              "α = 0.05, over the seeds where at least one of the two ranks moved off W0) and "
              "its mean is at least the margin δ = {margin} pts; \"none detected\": every rank "
              "tied. Power: paired SD = root mean square of the SDs of the paired differences "
              "against the best rank; MDE ≈ (t(0.975; n−1) + t(0.80; n−1))·SD/√n, the "
              "smallest difference a paired t-test detects with 80% power, n the median number "
              "of seed pairs tested.")


#: the value column of a by-rank table -> its f(W0) and kernel columns
BASELINES = {"value": ("w0", "kernel"), "value_final": ("w0", "kernel"),
             "acc": ("w0_acc", "kernel_acc")}


def by_rank(df: pd.DataFrame, margin: float = DEFAULT_MARGIN, column: str = "value",
            title: str | None = None, use_moved: bool = True, full_note: bool = True) -> Table:
    """Rows task × model × method, columns f(W0), kernel and the ranks (mean ± std over seeds,
    in %), then the rank effect and the power of the row.

    ``column`` is ``"value"`` (the task's primary metric, selected checkpoint), ``"value_final"``
    (last step) or ``"acc"`` (accuracy for every task). The best rank and every rank tied with
    it are bold (:class:`RankEffect`); "cells trained" counts the (rank, seed) cells that moved
    off W0. ``full_note`` states the tie and power rules (else a pointer to them).
    """
    df = prepared(df)
    ranks = sorted(int(r) for r in df["rank"].dropna().unique())
    w0_col, kernel_col = BASELINES.get(column, ("w0", "kernel"))
    baselines = [c for c in (w0_col, kernel_col) if df[c].notna().any()]
    w0_name, w0_note = _w0_header(df)
    header = [*GROUP, "metric", *[w0_name if c == w0_col else "kernel" for c in baselines],
              *[f"r={r}" for r in ranks], "rank effect", "seeds",
              *(["cells trained"] if use_moved else []), "paired SD", "MDE (80%)"]
    rows, bold = [], set()
    for i, (key, sub) in enumerate(df.groupby(GROUP, sort=True)):
        eff = rank_effect(sub, margin, column, use_moved)
        row = [str(k) for k in key] + [LABELS["accuracy" if column == "acc" else eff.metric]]
        for col in baselines:
            cell = fmt(*mean_std(sub.groupby("seed")[col].first().to_numpy(float)))
            if col == w0_col and w0_note and any(v is True for v in sub["head_fitted"]):
                cell += " †"
            row.append(cell)
        offset = len(row)
        for j, r in enumerate(ranks):
            row.append(fmt(eff.means.get(r, math.nan), eff.stds.get(r, math.nan)))
            if eff.trained and r in eff.tied:
                bold.add((i, offset + j))
        row += [eff.text(), str(eff.n),
                *([f"{eff.cells_moved}/{eff.cells}"] if use_moved else []),
                fmt(eff.paired_sd), fmt(eff.mde)]
        rows.append(row)
    note = (RULES_NOTE.format(margin=f"{margin * 100:g}") if full_note else
            "Bold (tied with the best rank), paired SD and MDE: as in the first table.")
    if use_moved:
        note += " A cell that kept W0 (selected step 0) did not train."
    return Table(title or "Test metric (%) by rank — selected checkpoint, mean ± std over seeds "
                          "(accuracy; F1 for MRPC)", header, rows, bold,
                 " ".join(x for x in (note, w0_note) if x))


@dataclass(frozen=True)
class Headline:
    """r = 1 against another rank for one task × model × method (paired over seeds).

    ``against`` is "r = 12" (the reference rank) or "best r = b" (the rank with the best mean,
    chosen after seeing the data: that comparison is biased in b's favour).
    """

    task: str
    model: str
    method: str
    metric: str
    K: int
    rank: int
    against: str
    comparison: Comparison

    @property
    def verdict(self) -> str:
        return self.comparison.verdict

    def detail(self) -> str:
        """The verdict with the numbers a reader needs to check it."""
        c, d = self.comparison, f"{self.comparison.margin * 100:g}"
        if c.verdict == DID_NOT_TRAIN:
            return (f"did not train: neither rank moved off W0 on any of the {c.n_pairs} seeds "
                    "(their difference is 0 by construction), so there is no rank comparison")
        if c.verdict == EQUIVALENT:
            return f"equivalent within ±{d} pts (90% CI {_ci(c.ci90)})"
        if c.verdict != INCONCLUSIVE:
            return f"{c.verdict} (95% CI {_ci(c.ci95)} excludes 0)"
        if c.n < 2:
            return (f"inconclusive: {_seeds(c.n)} with training at either rank, no interval")
        need = (f"; about {c.seeds_needed} seeds would show equivalence at ±{d} pts if the "
                "ranks were equal" if c.seeds_needed and c.seeds_needed > c.n else "")
        return (f"inconclusive: the 90% CI {_ci(c.ci90)} is not inside ±{d} pts (no "
                f"equivalence) and the 95% CI {_ci(c.ci95)} includes 0 (no difference shown); "
                f"{_seeds(c.n)} detect differences of about {fmt(c.mde)} pts at 80% "
                f"power{need}")


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def headline(df: pd.DataFrame, r_ref: int = 12, margin: float = DEFAULT_MARGIN,
             best: bool = True) -> list[Headline]:
    """r = 1 against r = r_ref per task, encoder and method, paired over the seeds both ranks
    ran; with ``best``, also against the rank with the best mean when it is neither 1 nor r_ref."""
    df = prepared(df)
    out = []
    for _, sub in df.groupby(GROUP, sort=True):
        eff = rank_effect(sub, margin)
        against = [(r_ref, f"r = {r_ref}")]
        if best and eff.best is not None and eff.best not in (1, r_ref) and eff.trained:
            against.append((eff.best, f"best r = {eff.best}"))
        for rank, label in against:
            a, b, trained, seeds = paired(sub, 1, rank)
            if not seeds or rank == 1:
                continue
            out.append(Headline(eff.task, eff.model, eff.method, eff.metric, eff.K, rank, label,
                                compare(a, b, margin, trained)))
    return out


def headline_table(items: list[Headline], margin: float = DEFAULT_MARGIN) -> Table:
    """The headline comparisons as a table (differences in points of the primary metric)."""
    header = [*GROUP, "metric", "r = 1 vs", "seeds", "r=1", "other", "diff (pts)", "90% CI",
              "bootstrap 90% CI", "MDE (80%)", "verdict"]
    rows = []
    for h in items:
        c = h.comparison
        seeds = str(c.n) if c.n == c.n_pairs else f"{c.n} of {c.n_pairs}"
        verdict = c.verdict + (f" (±{margin * 100:g})" if c.verdict == EQUIVALENT else "")
        rows.append([h.task, h.model, h.method, LABELS[h.metric], h.against, seeds,
                     fmt(c.mean_a), fmt(c.mean_b), _pts(c.diff), _ci(c.ci90), _ci(c.boot90),
                     fmt(c.mde), verdict])
    d = f"{margin * 100:g}"
    note = (f"Paired over seeds; margin δ = {d} pts of the task's metric (accuracy; F1 for "
            f"MRPC). equivalent: the 90% CI d̄ ± t(0.95; n−1)·SE lies inside (−{d}, +{d}) "
            "(TOST, α = 0.05); r = 1 better / worse: otherwise, when the 95% CI excludes 0; "
            "inconclusive: neither; did not train: no seed on which either rank moved off W0. "
            "Seeds on which neither rank moved (both kept f(W0): a difference of 0 by "
            "construction) are left out (\"3 of 5\"). MDE: the smallest difference a paired "
            "t-test detects with 80% power, ≈ (t(0.975; n−1) + t(0.80; n−1))·s_d/√n. Bootstrap "
            "(BCa, n ≥ 5 seeds): a cross-check of the 90% CI. \"best r\" is chosen after seeing "
            "the data, which biases that comparison in its favour.")
    disagree = [h for h in items if h.comparison.bootstrap_agrees is False]
    if disagree:
        note += (" The bootstrap interval gives a different equivalence call for: "
                 + ", ".join(f"{h.task}/{h.model}/{h.method} vs {h.against}" for h in disagree)
                 + ".")
    refs = sorted({h.against for h in items if not h.against.startswith("best")})
    return Table(f"Headline: r = 1 vs {' / '.join(refs) or 'r = 12'} and vs the best rank — "
                 f"TOST at ±{d} pts",
                 header, rows, note=note)


def multiclass_table(df: pd.DataFrame, margin: float = DEFAULT_MARGIN) -> Table:
    """:func:`by_rank` for the tasks with K > 2 classes."""
    df = prepared(df)
    table = by_rank(df[df["K"] > 2], margin)
    table.title = ("Tasks with K > 2 classes: test metric (%) by rank, the best rank and the "
                   "ranks tied with it in bold")
    return table


PRESCRIPTION_COLUMNS = (
    ("task", "task"), ("model", "model"), ("method", "method"), ("K", "K"), ("N", "N"),
    ("Sard exact", "sard_exact"), ("Sard rounded", "sard_rounded"),
    ("manifold (total)", "manifold_total"), ("CE (PL)", "ce"), ("measured best r", "best_rank"),
)


def prescription_table(rows: list[dict]) -> Table:
    """Prescriptions (Sard exact/rounded, manifold, CE) next to the measured rank effect."""
    header = [h for h, _ in PRESCRIPTION_COLUMNS]
    body = [[str(row[key]) for _, key in PRESCRIPTION_COLUMNS] for row in rows]
    return Table("Prescribed ranks vs the measured best rank", header, body,
                 note="CE (PL): rank-free while the linearized training data are separable "
                      "(docs/prescriptions.md). Measured best r: the best rank and the ranks "
                      "tied with it (tie rule of the by-rank table); \"none detected\": all "
                      "ranks tied.")


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown; bold cells as ``**x**``."""
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.header) + " |",
             "|" + "|".join("---" for _ in table.header) + "|"]
    for i, row in enumerate(table.rows):
        cells = [f"**{c}**" if (i, j) in table.bold else c for j, c in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("±", r"$\pm$"), ("†", r"$^\dagger$")):
        text = text.replace(a, b)
    return text


def to_latex(table: Table) -> str:
    """A booktabs ``tabular``; bold cells as ``\\textbf{x}``."""
    cols = "l" * len(table.header)
    lines = [f"% {table.title}", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(_latex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    for i, row in enumerate(table.rows):
        cells = [rf"\textbf{{{_latex_escape(c)}}}" if (i, j) in table.bold else _latex_escape(c)
                 for j, c in enumerate(row)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    """An HTML ``<table>`` (escaped), bold cells as ``<b>``."""
    from html import escape

    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = []
    for i, row in enumerate(table.rows):
        cells = "".join(f"<td><b>{escape(c)}</b></td>" if (i, j) in table.bold
                        else f"<td>{escape(c)}</td>" for j, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    note = f"<p class='note'>{escape(table.note)}</p>" if table.note else ""
    return (f"<h3>{escape(table.title)}</h3><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{note}")
