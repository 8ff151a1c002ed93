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
from lorank.report.controls import capacity_section, planted_section, split_controls
from lorank.report.failures import failures_table, unfinished_runs
from lorank.report.metrics import label_shots, prepare
from lorank.report.stats import DEFAULT_MARGIN, check_margin
from lorank.report.tables import (
    Headline,
    RankEffect,
    Table,
    by_rank,
    headline,
    headline_table,
    multiclass_table,
    prescription_table,
    rank_effects,
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
        records = store.query(sweep=sweep, status="done", run_ids=run_ids)
    rows = []
    for rec in records:
        row = flatten_record(rec)
        row = {(k[len("metrics."):] if k.startswith("metrics.") else k): v for k, v in row.items()}
        row["method"] = rec.method
        rows.append(row)
    return pd.DataFrame(rows), records


def prescriptions_vs_best(df: pd.DataFrame, effects: list[RankEffect]) -> list[dict]:
    """For each task × model × method: K, N, every prescription and the measured rank effect
    (the best rank and the ranks tied with it, "none detected" or "did not train")."""
    from lorank.models.arch import adapted_matrices
    from lorank.models.bundled import load_config
    from lorank.theory import prescribe

    out = []
    for eff in effects:
        first = df[(df["task"] == eff.task) & (df["model"] == eff.model)].iloc[0]
        stored_N = first.get("N")  # the engine's count (a user's explicit files need it)
        N = (int(stored_N) if stored_N is not None and stored_N == stored_N
             else int(first.get("k", 16)) * eff.K)
        targets = json.loads(first["targets"]) if isinstance(first.get("targets"), str) \
            else first.get("targets")
        layers = first.get("layers", "all")
        layers = json.loads(layers) if isinstance(layers, str) and layers.startswith("[") \
            else layers
        shapes = [m.shape for m in adapted_matrices(load_config(eff.model), targets, layers)]
        p = prescribe(eff.K, N, shapes)
        measured = eff.text() if not eff.detected else (
            ", ".join(map(str, eff.tied)) if len(eff.tied) > 1 else str(eff.best))
        out.append(dict(task=eff.task, model=eff.model, method=eff.method, K=eff.K, N=N,
                        sard_exact=p.sard_exact, sard_rounded=p.sard_rounded,
                        manifold_total=p.manifold_total, ce=p.ce, best_rank=measured))
    return out


def reference_rank(df: pd.DataFrame, preferred: int = 12) -> int | None:
    """The rank r = 1 is compared with: 12 (the rounded Sard rank of 16-shot binary tasks)
    when the runs have it, else the largest rank run; None if only r = 1 ran."""
    ranks = {int(r) for r in df["rank"].dropna().unique()}
    if preferred in ranks:
        return preferred
    return max(ranks) if ranks and max(ranks) > 1 else None


def findings(items: list[Headline], effects: list[RankEffect]) -> list[str]:
    """Plain sentences, one per task × model × method: r = 1 against r = 12 (and the best rank)
    with the verdict and its numbers, then the rank effect. Generated from the numbers, never
    typed."""
    out = []
    for eff in effects:
        K = f" (K = {eff.K})" if eff.K > 2 else ""
        mine = [h for h in items if (h.task, h.model, h.method) == (eff.task, eff.model,
                                                                    eff.method)]
        parts = []
        for h in mine:
            c = h.comparison
            if c.verdict == "did not train":
                parts.append(f"r = 1 vs {h.against}: {h.detail()}")
                continue
            left = (f"; {c.untrained_pairs} of {c.n_pairs} seeds where neither rank moved off "
                    "W0 left out" if c.untrained_pairs else "")
            parts.append(f"r = 1 vs {h.against}: {c.mean_a * 100:.1f} vs {c.mean_b * 100:.1f}, "
                         f"difference {c.diff * 100:+.1f} pts over {c.n} "
                         f"seed{'s' if c.n != 1 else ''}{left} — {h.detail()}")
        if not eff.trained:
            rank_text = "no cell moved off W0 at any rank (did not train)"
        elif eff.detected:
            rank_text = f"rank effect detected: {eff.text()}"
        else:
            finite = sum(1 for m in eff.means.values() if math.isfinite(m))
            rank_text = (f"no rank effect detected (all {finite} ranks tied with the best, "
                         f"{eff.cells_moved} of {eff.cells} cells trained)")
        out.append(f"{eff.task}{K} / {eff.model} / {eff.method} "
                   f"({'F1' if eff.metric == 'f1' else 'accuracy'}): "
                   + "; ".join([*parts, rank_text]) + ".")
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
                 title: str = "lorank report", run_ids: Collection[str] | None = None,
                 margin: float = DEFAULT_MARGIN) -> ReportPaths:
    """Build every table, figure and the HTML page from the store into ``out_dir``.

    ``margin`` is the equivalence margin δ of the headline and the tie rule, as a fraction of
    the task's metric (0.01 = 1 point).
    """
    margin = check_margin(margin, "the equivalence margin")
    df, records = runs_frame(store_path, sweep, run_ids)
    main, capacity, planted = split_controls(df)
    engine = label_shots(main[main["method"].isin(ENGINE_METHODS)] if not main.empty else main)
    controls = control_sections(capacity, planted)
    unfinished = failures_table(unfinished_runs(store_path, sweep, run_ids), store_path)
    if engine.empty and not _cstar_results(records) and not controls:
        raise LorankError(f"no finished runs in {str(store_path)!r}"
                          + (f" for sweep {sweep!r}" if sweep else ""))
    out = Path(out_dir)
    with atomic_dir(out, kind="report", protect=[store_path]) as tmp:
        paths = _write(prepare(engine), records, tmp, title, store_path, margin, unfinished,
                       controls)
    return ReportPaths(**{k: (Path(str(v).replace(str(tmp), str(out))) if isinstance(v, Path)
                              else tuple(Path(str(p).replace(str(tmp), str(out))) for p in v))
                          for k, v in asdict(paths).items()})


def control_sections(capacity: pd.DataFrame, planted: pd.DataFrame
                     ) -> list[tuple[Table, list[str]]]:
    """The positive controls' tables and verdict sentences (:mod:`lorank.report.controls`),
    titled as the section "Can this setup detect a rank effect?"."""
    out = []
    if not capacity.empty:
        out.append(capacity_section(capacity))
    if not planted.empty:
        out.append(planted_section(planted))
    for table, _ in out:
        table.title = f"Can this setup detect a rank effect? — {table.title}"
    return out


def _write(engine: pd.DataFrame, records: list, out: Path, title: str, store,
           margin: float, unfinished: Table | None = None,
           controls: list[tuple[Table, list[str]]] | None = None) -> ReportPaths:
    tables: list[Table] = []
    items: list[Headline] = []
    effects: list[RankEffect] = []
    r_ref = None
    if not engine.empty:
        effects = rank_effects(engine, margin)
        tables.append(by_rank(engine, margin))
        if (engine["metric"] != "accuracy").any():
            tables.append(by_rank(engine, margin, "acc", "Test accuracy (%) by rank — selected "
                                  "checkpoint, mean ± std over seeds (every task)",
                                  full_note=False))
        if engine["value_final"].notna().any():
            tables.append(by_rank(engine, margin, "value_final", "Final-step test metric (%) "
                                  "by rank (no selection: over-fitting)", use_moved=False,
                                  full_note=False))
        r_ref = reference_rank(engine)
        items = headline(engine, r_ref, margin) if r_ref else []
        if items:
            tables.append(headline_table(items, margin))
        if (engine["K"] > 2).any():
            tables.append(multiclass_table(engine, margin))
        tables.append(prescription_table(prescriptions_vs_best(engine, effects)))
    tables += [table for table, _ in controls or []]
    tables += [unfinished] if unfinished is not None else []
    figdir = out / "figures"
    figs: list[tuple[str, Path]] = []
    for caption, paths in (
        ("Test metric vs rank (accuracy; F1 for MRPC)",
         F.accuracy_vs_rank(engine, figdir / "accuracy_vs_rank")),
        ("Linearized training loss and PL ratio", F.loss_and_pl(engine, figdir / "loss_pl")),
        ("C* success curves", F.cstar_curves(_cstar_results(records), figdir / "cstar")),
        ("Real vs linearized prediction gap", F.ntk_gap(engine, figdir / "ntk_gap")),
        ("Singular values of the trained ΔW", F.singular_values(engine, figdir / "sv")),
    ):
        if paths:
            figs.append((caption, paths[0]))
    summary = findings(items, effects) + [s for _, lines in controls or [] for s in lines]
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
    summ.write_text(json.dumps(_finite({
        "findings": summary, "margin": margin, "reference_rank": r_ref,
        "controls": [{"title": t.title, "verdicts": lines} for t, lines in controls or []],
        "headline": [{**asdict(h), "detail": h.detail()} for h in items],
        "rank_effects": [{**asdict(e), "text": e.text(), "detected": e.detected}
                         for e in effects],
        "provenance": provenance}), indent=2, default=str), encoding="utf-8")
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
    """Every config field with the distinct values it took across the runs (JSON values, in
    the order of their JSON text)."""
    values: dict[str, dict[str, object]] = {}
    for r in records:
        for k, v in r.config.items():
            values.setdefault(k, {})[json.dumps(v, sort_keys=True)] = v
    return {k: [v[key] for key in sorted(v)] for k, v in sorted(values.items())}


def _finite(value):
    """JSON-safe: NaN and ±inf become None (strict JSON), recursively; tuple keys as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
