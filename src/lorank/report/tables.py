"""Result tables from the results store: accuracy by rank, r = 1 vs r = 12, best rank, rules.

Input is a pandas DataFrame with one row per finished run (see
:func:`lorank.report.build.runs_frame`): columns ``task, model, method, rank, seed`` and metric
columns such as ``test_acc``. Every table is a :class:`Table` (header, rows, per-row bold cells)
rendered to Markdown, LaTeX or HTML by one function each.
Aggregation over seeds is mean ± sample std (ddof = 1), as in LM-BFF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

GROUP = ["task", "model", "method"]


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


def accuracy_by_rank(df: pd.DataFrame, metric: str = "test_acc") -> Table:
    """Rows task × model × method, columns the ranks (mean ± std over seeds); best rank in bold.

    Baseline columns (zero-shot f(W0), kernel regression on the same features) are added when
    the runs carry ``zero_shot_test_acc`` / ``kernel_test_acc``.
    """
    ranks = sorted(int(r) for r in df["rank"].dropna().unique())
    baselines = [c for c in ("zero_shot_test_acc", "kernel_test_acc") if c in df.columns]
    header = [*GROUP, *[{"zero_shot_test_acc": "zero-shot", "kernel_test_acc": "kernel"}[c]
                        for c in baselines], *[f"r={r}" for r in ranks]]
    rows, bold = [], set()
    for i, (key, sub) in enumerate(df.groupby(GROUP, sort=True)):
        row = [str(k) for k in key]
        for col in baselines:
            per_seed = sub.groupby("seed")[col].first()
            row.append(fmt(*mean_std(per_seed.to_numpy())))
        means = {}
        for r in ranks:
            vals = sub.loc[sub["rank"] == r, metric].to_numpy()
            m, s = mean_std(vals) if vals.size else (math.nan, math.nan)
            means[r] = m
            row.append(fmt(m, s))
        finite = {r: m for r, m in means.items() if math.isfinite(m)}
        if finite:
            best = max(finite.values())
            for j, r in enumerate(ranks):
                if r in finite and finite[r] == best:
                    bold.add((i, len(GROUP) + len(baselines) + j))
        rows.append(row)
    return Table(f"Test accuracy (%) by rank — {metric}, mean ± std over seeds", header, rows,
                 bold)


@dataclass(frozen=True)
class Headline:
    """Paired comparison of r = 1 against r = r_ref for one task × model × method."""

    task: str
    model: str
    method: str
    n_seeds: int
    acc_r1: float
    acc_ref: float
    diff: float
    ci_low: float
    ci_high: float
    verdict: str


def paired_ci(diffs: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its Student-t confidence interval (n − 1 dof)."""
    diffs = np.asarray(diffs, dtype=float)
    n = diffs.size
    mean = float(diffs.mean())
    if n < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * diffs.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def verdict(ci_low: float, ci_high: float, diff: float) -> str:
    """"competitive" when the CI contains 0 or r = 1 is better; "r_ref better" when CI < 0."""
    if not math.isfinite(ci_low):
        return "too few seeds"
    if ci_high < 0:
        return "higher rank better"
    return "competitive" if ci_low <= 0 else "r=1 better (competitive)"


def headline(df: pd.DataFrame, r_ref: int = 12, metric: str = "test_acc") -> list[Headline]:
    """r = 1 vs r = r_ref per task, encoder and method, paired over the seeds both ranks ran."""
    out = []
    for (task, model, method), sub in df.groupby(GROUP, sort=True):
        a = sub[sub["rank"] == 1].groupby("seed")[metric].mean()
        b = sub[sub["rank"] == r_ref].groupby("seed")[metric].mean()
        seeds = sorted(set(a.index) & set(b.index))
        if not seeds:
            continue
        d = a.loc[seeds].to_numpy() - b.loc[seeds].to_numpy()
        mean, lo, hi = paired_ci(d)
        out.append(Headline(task, model, method, len(seeds), float(a.loc[seeds].mean()),
                            float(b.loc[seeds].mean()), mean, lo, hi, verdict(lo, hi, mean)))
    return out


def headline_table(items: list[Headline], r_ref: int = 12) -> Table:
    """The headline comparison as a table (differences in accuracy points)."""
    header = [*GROUP, "seeds", "r=1", f"r={r_ref}", "diff (pts)", "95% CI", "verdict"]
    rows = []
    for h in items:
        ci = "-" if not math.isfinite(h.ci_low) else f"[{h.ci_low*100:+.1f}, {h.ci_high*100:+.1f}]"
        rows.append([h.task, h.model, h.method, str(h.n_seeds), fmt(h.acc_r1), fmt(h.acc_ref),
                     f"{h.diff * 100:+.1f}", ci, h.verdict])
    return Table(f"Headline: r = 1 vs r = {r_ref} (paired over seeds, Student-t 95% CI)",
                 header, rows, note="competitive: the CI contains 0 or r = 1 is better")


def best_ranks(df: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Per task × model × method: the rank with the best mean metric over seeds."""
    means = df.groupby([*GROUP, "rank"])[metric].mean().reset_index()
    idx = means.groupby(GROUP)[metric].idxmax()
    return means.loc[idx.dropna().astype(int)].reset_index(drop=True)


def multiclass_table(df: pd.DataFrame, K_of: dict[str, int], metric: str = "test_acc") -> Table:
    """Accuracy by rank for tasks with K > 2 classes, the best rank marked."""
    tasks = [t for t in df["task"].unique() if K_of.get(t, 2) > 2]
    table = accuracy_by_rank(df[df["task"].isin(tasks)], metric)
    table.title = "Tasks with K > 2 classes: test accuracy (%) by rank, best rank in bold"
    best = best_ranks(df[df["task"].isin(tasks)], metric)
    table.note = "; ".join(f"{b.task}/{b.model}/{b.method}: best r = {int(b['rank'])}"
                           for _, b in best.iterrows())
    return table


PRESCRIPTION_COLUMNS = (
    ("task", "task"), ("model", "model"), ("method", "method"), ("K", "K"), ("N", "N"),
    ("Sard exact", "sard_exact"), ("Sard rounded", "sard_rounded"),
    ("manifold (total)", "manifold_total"), ("CE (PL)", "ce"), ("measured best r", "best_rank"),
)


def prescription_table(rows: list[dict]) -> Table:
    """Prescriptions (Sard exact/rounded, manifold, CE) next to the measured best rank."""
    header = [h for h, _ in PRESCRIPTION_COLUMNS]
    body = [[str(row[key]) for _, key in PRESCRIPTION_COLUMNS] for row in rows]
    return Table("Prescribed ranks vs the measured best rank", header, body)


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
                 ("#", r"\#"), ("±", r"$\pm$")):
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
