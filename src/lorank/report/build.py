"""``lorank report``: turn a results store into tables, figures and one HTML page.

Reads only the store (runs with status ``done``). Writes, atomically (a temporary folder renamed
into place, so a failed report never leaves a half-written one)::

    OUT/report.html         self-contained page (tables, inlined figures, provenance)
    OUT/report.md           Markdown tables and the findings
    OUT/tables.tex          LaTeX (booktabs) tables
    OUT/figures/*.png|svg   accuracy vs rank, loss + PL ratio, C* curves, NTK gap, ΔW spectrum
    OUT/summary.json        the findings as data (headline verdicts, best ranks)
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from lorank.atomic import atomic_dir
from lorank.errors import LorankError
from lorank.report import figures as F
from lorank.report.failures import failures_table, unfinished_runs
from lorank.report.tables import (
    Table,
    accuracy_by_rank,
    best_ranks,
    headline,
    headline_table,
    multiclass_table,
    prescription_table,
    to_latex,
    to_markdown,
)

ENGINE_METHODS = ("linearized", "lora")


@dataclass(frozen=True)
class ReportPaths:
    """Where the report went."""

    out: Path
    html: Path
    markdown: Path
    latex: Path
    figures: tuple[Path, ...]
    summary: Path


def runs_frame(store_path: str | Path, sweep: str | None = None,
               run_ids: Collection[str] | None = None) -> tuple[pd.DataFrame, list]:
    """Finished runs as a DataFrame (config fields + ``metrics.*`` without prefix + ``curves``)
    and the raw records, optionally only ``run_ids`` (e.g. the runs of the current spec, so a
    store that also holds runs of an edited spec reports only what the spec asks for);
    LorankError if the store is missing."""
    from lorank.experiments.store import ResultStore, flatten_record

    path = Path(store_path)
    if not path.is_file():
        raise LorankError(f"results store {str(path)!r} not found; run `lorank sweep` or "
                          "`lorank reproduce` first")
    with ResultStore(path, readonly=True) as store:
        records = store.query(sweep=sweep, status="done")
    if run_ids is not None:
        wanted = set(run_ids)
        records = [r for r in records if r.run_id in wanted]
    rows = []
    for rec in records:
        row = flatten_record(rec)
        row = {(k[len("metrics."):] if k.startswith("metrics.") else k): v for k, v in row.items()}
        row["method"] = rec.method
        rows.append(row)
    return pd.DataFrame(rows), records


def _task_K(task: str, df: pd.DataFrame | None = None) -> int:
    """K of a registered task, or of a user's own data (its pinned label set, stored with the
    run as ``data.labels``)."""
    from lorank.data import get_task
    from lorank.data.tasks import REGISTRY

    if task in REGISTRY or df is None or "data.labels" not in df:
        return get_task(task).K
    labels = df.loc[df["task"] == task, "data.labels"].dropna()
    if labels.empty:
        return get_task(task).K
    value = labels.iloc[0]
    return len(json.loads(value) if isinstance(value, str) else value)


def prescriptions_vs_best(df: pd.DataFrame) -> list[dict]:
    """For each task × model × method: K, N, every prescription and the measured best rank."""
    from lorank.models.arch import adapted_matrices
    from lorank.models.bundled import load_config
    from lorank.theory import prescribe

    out = []
    for _, best in best_ranks(df).iterrows():
        first = df[(df["task"] == best.task) & (df["model"] == best.model)].iloc[0]
        K = _task_K(best.task, df)
        stored_N = first.get("N")  # the engine's count (a user's explicit files need it)
        N = (int(stored_N) if stored_N is not None and stored_N == stored_N
             else int(first.get("k", 16)) * K)
        targets = json.loads(first["targets"]) if isinstance(first.get("targets"), str) \
            else first.get("targets")
        layers = first.get("layers", "all")
        layers = json.loads(layers) if isinstance(layers, str) and layers.startswith("[") \
            else layers
        shapes = [m.shape for m in adapted_matrices(load_config(best.model), targets, layers)]
        p = prescribe(K, N, shapes)
        out.append(dict(task=best.task, model=best.model, method=best.method, K=K, N=N,
                        sard_exact=p.sard_exact, sard_rounded=p.sard_rounded,
                        manifold_total=p.manifold_total, ce=p.ce, best_rank=int(best["rank"])))
    return out


def reference_rank(df: pd.DataFrame, preferred: int = 12) -> int | None:
    """The rank r = 1 is compared with: 12 (the rounded Sard rank of 16-shot binary tasks)
    when the runs have it, else the largest rank run; None if only r = 1 ran."""
    ranks = {int(r) for r in df["rank"].dropna().unique()}
    if preferred in ranks:
        return preferred
    return max(ranks) if ranks and max(ranks) > 1 else None


def findings(df: pd.DataFrame, items, K_of: dict[str, int], r_ref: int | None = 12
             ) -> list[str]:
    """Plain sentences: per binary task and encoder whether r = 1 is competitive with r = r_ref,
    and the measured best rank of every K > 2 task. Generated from the numbers, never typed."""
    out = []
    for h in items:
        if K_of.get(h.task, 2) != 2:
            continue
        ci = ("" if not math.isfinite(h.ci_low)
              else f", 95% CI [{h.ci_low * 100:+.1f}, {h.ci_high * 100:+.1f}]")
        out.append(f"{h.task} / {h.model} / {h.method}: r = 1 {h.acc_r1 * 100:.1f}% vs r = {r_ref} "
                   f"{h.acc_ref * 100:.1f}% over {h.n_seeds} seeds (difference "
                   f"{h.diff * 100:+.1f} pts{ci}) — {h.verdict}.")
    best = best_ranks(df)
    for _, b in best.iterrows():
        if K_of.get(b.task, 2) > 2:
            sub = df[(df["task"] == b.task) & (df["model"] == b.model)
                     & (df["method"] == b.method)]
            means = sub.groupby("rank")["test_acc"].mean()
            out.append(f"{b.task} (K = {K_of[b.task]}) / {b.model} / {b.method}: measured best "
                       f"rank r = {int(b['rank'])} ({b['test_acc'] * 100:.1f}% mean test "
                       f"accuracy; all {len(means)} ranks within "
                       f"{(means.max() - means.min()) * 100:.1f} pts).")
    return out


def _cstar_results(records: list) -> list[dict]:
    out = []
    for rec in records:
        if rec.method != "cstar" or not rec.curves:
            continue
        cfg = rec.config.get("options", {})
        out.append({"ratios": rec.curves.get("ratios"), "success": rec.curves.get("success"),
                    "c50": (rec.metrics or {}).get("c50"),
                    "label": f"{cfg.get('solver', '?')} T={rec.config.get('steps', '?')} "
                             f"r={rec.config.get('rank')}"})
    return out


def build_report(store_path: str | Path, out_dir: str | Path, sweep: str | None = None,
                 title: str = "lorank report", run_ids: Collection[str] | None = None
                 ) -> ReportPaths:
    """Build every table, figure and the HTML page from the store into ``out_dir``."""
    df, records = runs_frame(store_path, sweep, run_ids)
    engine = df[df["method"].isin(ENGINE_METHODS)] if not df.empty else df
    unfinished = failures_table(unfinished_runs(store_path, sweep, run_ids), store_path)
    if engine.empty and not _cstar_results(records):
        raise LorankError(f"no finished runs in {str(store_path)!r}"
                          + (f" for sweep {sweep!r}" if sweep else ""))
    out = Path(out_dir)
    with atomic_dir(out, kind="report", protect=[store_path]) as tmp:
        paths = _write(engine, records, tmp, title, store_path, unfinished)
    return ReportPaths(**{k: (Path(str(v).replace(str(tmp), str(out))) if isinstance(v, Path)
                              else tuple(Path(str(p).replace(str(tmp), str(out))) for p in v))
                          for k, v in asdict(paths).items()})


def _write(engine: pd.DataFrame, records: list, out: Path, title: str, store,
           unfinished: Table | None = None) -> ReportPaths:
    K_of = ({t: _task_K(t, engine) for t in engine["task"].unique()} if not engine.empty
            else {})
    tables: list[Table] = []
    items = []
    if not engine.empty:
        tables.append(accuracy_by_rank(engine))
        if "test_acc_final" in engine:
            tables.append(accuracy_by_rank(engine, "test_acc_final"))
            tables[-1].title = "Final-step test accuracy (%) by rank (no selection: over-fitting)"
        r_ref = reference_rank(engine)
        items = headline(engine, r_ref) if r_ref else []
        if items:
            tables.append(headline_table(items, r_ref))
        if any(k > 2 for k in K_of.values()):
            tables.append(multiclass_table(engine, K_of))
        tables.append(prescription_table(prescriptions_vs_best(engine)))
    tables += [unfinished] if unfinished is not None else []
    figdir = out / "figures"
    figs: list[tuple[str, Path]] = []
    for caption, paths in (
        ("Test accuracy vs rank", F.accuracy_vs_rank(engine, figdir / "accuracy_vs_rank")),
        ("Linearized training loss and PL ratio", F.loss_and_pl(engine, figdir / "loss_pl")),
        ("C* success curves", F.cstar_curves(_cstar_results(records), figdir / "cstar")),
        ("Real vs linearized prediction gap", F.ntk_gap(engine, figdir / "ntk_gap")),
        ("Singular values of the trained ΔW", F.singular_values(engine, figdir / "sv")),
    ):
        if paths:
            figs.append((caption, paths[0]))
    summary = findings(engine, items, K_of, r_ref) if not engine.empty else []
    provenance = _provenance(records, store)
    from lorank.report.html import render

    html = out / "report.html"
    html.write_text(render(title, summary, tables, figs, provenance), encoding="utf-8")
    md = out / "report.md"
    md.write_text(f"# {title}\n\n## Findings\n\n" + "".join(f"- {s}\n" for s in summary)
                  + "\n" + "\n".join(to_markdown(t) for t in tables)
                  + "\n## Figures\n\n" + "".join(f"![{c}](figures/{p.name})\n\n" for c, p in figs),
                  encoding="utf-8")
    tex = out / "tables.tex"
    tex.write_text("\n".join(to_latex(t) for t in tables), encoding="utf-8")
    summ = out / "summary.json"
    summ.write_text(json.dumps({"findings": summary, "headline": [asdict(h) for h in items],
                                "provenance": provenance}, indent=2, default=str),
                    encoding="utf-8")
    all_figs = tuple(sorted(figdir.glob("*"))) if figdir.exists() else ()
    return ReportPaths(out, html, md, tex, all_figs, summ)


def _provenance(records: list, store) -> dict:
    """Which configs, package versions and commits the report came from."""
    commits = sorted({f"{r.git_commit}{'+dirty' if r.git_dirty else ''}" for r in records
                      if r.git_commit})
    versions = {}
    for r in records:
        for k, v in (r.versions or {}).items():
            versions.setdefault(k, set()).add(str(v))
    sweeps = sorted({r.sweep for r in records})
    return {"store": str(store), "runs": len(records), "sweeps": sweeps, "git_commits": commits,
            "versions": {k: sorted(v) for k, v in versions.items()},
            "configs": _config_summary(records)}


def _config_summary(records: list) -> dict:
    """Every config field with the set of values it took across the runs."""
    values: dict[str, set] = {}
    for r in records:
        for k, v in r.config.items():
            values.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    return {k: sorted(v) for k, v in sorted(values.items())}
