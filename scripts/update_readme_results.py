"""Copy the results of a `lorank reproduce` run into README.md (nothing typed by hand).

    python scripts/update_readme_results.py lorank-out [--machine "2-core ..."]

Another sweep's results go into a doc the same way (its report built with `lorank report
--store S --out OUT/report`, the store copied to OUT/results.sqlite):

    python scripts/update_readme_results.py OUT --target docs/mnli-shots.md \
        --marker MNLI_SHOTS --command "`lorank sweep sweeps/mnli_shots.yaml`" \
        --title "Results" --figure mnli_shots_vs_rank.png --report-path OUT/report/report.html

Rewrites the block between ``<!-- RESULTS -->`` and ``<!-- /RESULTS -->`` (inserted after the
first marker if the closing one is missing) with: when, on which machine and commit the run was
made, how the verdicts are reached (the equivalence margin of the run's report), the findings
(one sentence per task × model × method: the TOST verdict of r = 1 vs r = 12 and vs the best
rank, and the rank effect; the positive controls' verdicts), the sweep's wall time (from the
store's timestamps) and the main job's (OUT/reproduce.json, .venv/lorank-setup.json), the
by-rank table (with the cells that trained), the headline table, the K > 2 table, the positive
controls' tables (all with their notes: rules and power), and the metric-vs-rank figure (copied
to docs/figures/). Every number comes from ``OUT/report/summary.json``,
``OUT/report/report.md``, ``OUT/results.sqlite`` and the two timing records.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- RESULTS -->", "<!-- /RESULTS -->"
MAIN_JOB = "the command above (`lorank reproduce`, the `quick` sweep)"


def markers(name: str) -> tuple[str, str]:
    """The opening and closing comment lines of a generated block."""
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def _tables(markdown: str) -> dict[str, str]:
    """Title line -> the table under it, from report.md."""
    out = {}
    for block in re.split(r"\n(?=\*\*|#)", markdown):  # a table ends at the next title/heading
        lines = block.strip().splitlines()
        if lines and lines[0].startswith("**"):
            out[lines[0].strip("*")] = "\n".join(lines[1:]).strip()
    return out


def _job_time(out: Path) -> str:
    """One sentence: the main job's wall time from its own records — ``OUT/reproduce.json``
    (written by `lorank reproduce`) and ``.venv/lorank-setup.json`` beside OUT (written by
    scripts/setup.sh); '' without the former."""
    rec = out / "reproduce.json"
    if not rec.exists():
        return ""
    job = json.loads(rec.read_text())
    setup_rec = out.resolve().parent / ".venv" / "lorank-setup.json"
    setup = json.loads(setup_rec.read_text())["wall_s"] if setup_rec.exists() else None
    text = (f"Main job wall time: `lorank reproduce` {job['wall_s'] / 60:.1f} min "
            f"(sweep {job['sweep_s'] / 60:.1f} min, then the report)")
    if setup is not None:
        text += (f" after {setup / 60:.1f} min of set-up (scripts/setup.sh): "
                 f"{(setup + job['wall_s']) / 60:.1f} min for the first command")
    if job.get("resumed"):
        text += "; this invocation resumed an earlier one, so it is not the whole job's time"
    return text + "."


def _machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor() or "unknown CPU")
    import os

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, no GPU"


def _wall_time(store: Path) -> str:
    """One sentence: the sweep's wall time from the store's run timestamps (first start to last
    finish) and the summed run time per method; '' without a store."""
    import sqlite3

    if not store.exists():
        return ""
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT method, started_at, finished_at FROM runs "
                           "WHERE status = 'done' AND started_at IS NOT NULL").fetchall()
    finally:
        con.close()
    if not rows:
        return ""
    start = min(datetime.fromisoformat(r[1]) for r in rows)
    end = max(datetime.fromisoformat(r[2]) for r in rows)
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for method, a, b in rows:
        spans.setdefault(method, []).append((datetime.fromisoformat(a),
                                             datetime.fromisoformat(b)))
    per = {m: _covered_s(s) for m, s in spans.items()}
    spent = ", ".join(f"{m} {v / 60:.1f}" for m, v in sorted(per.items(), key=lambda x: -x[1]))
    span = (end - start).total_seconds()
    busy = _covered_s([x for s in spans.values() for x in s])
    gap = (f" (runs in flight during {busy / 60:.1f} min of it: the sweep was stopped and "
           "resumed)" if span - busy > 60 else "")
    return (f"Sweep wall time (first run started to last run finished, from the store; set-up "
            f"and report not included): {span / 60:.1f} min{gap}; wall minutes during which "
            f"each method's runs were in flight: {spent}.")


def _covered_s(spans: list[tuple[datetime, datetime]]) -> float:
    """Seconds covered by the union of the intervals (the runs of a batch share one interval:
    summing them would count a batch once per run)."""
    total, current = 0.0, None
    for a, b in sorted(spans):
        if current is None or a > current[1]:
            if current is not None:
                total += (current[1] - current[0]).total_seconds()
            current = [a, b]
        else:
            current[1] = max(current[1], b)
    if current is not None:
        total += (current[1] - current[0]).total_seconds()
    return total


def render(out: Path, machine: str, figures: Path | None = None, *, marker: str = "RESULTS",
           command: str = MAIN_JOB, title: str = "Results of the main job",
           figure: str = "accuracy_vs_rank.png", link_base: str = "docs/figures",
           report_path: str = "lorank-out/report/report.html") -> str:
    """The block for the run in ``out`` between the ``marker`` comments (the metric-vs-rank
    figure is copied into ``figures``, default docs/figures/, as ``figure``; the block links it
    as ``link_base/figure``)."""
    start, end = markers(marker)
    report = out / "report"
    summary = json.loads((report / "summary.json").read_text())
    tables = _tables((report / "report.md").read_text())
    commits = ", ".join(summary["provenance"]["git_commits"]) or "unknown"
    finished = datetime.fromtimestamp((report / "summary.json").stat().st_mtime, UTC)
    figures = figures or ROOT / "docs" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    shutil.copy(report / "figures" / "accuracy_vs_rank.png", figures / figure)
    margin = summary.get("margin")
    rules = (f"Verdicts compare r = 1 with r = {summary.get('reference_rank') or 12} (and with "
             f"the best rank) paired over seeds, on the task's metric (accuracy; F1 for MRPC): "
             f"*equivalent* when the 90% CI of the difference lies inside ±{margin * 100:g} "
             "pts (TOST), *r = 1 better / worse* when the 95% CI excludes 0, *inconclusive* "
             "otherwise (with the smallest difference the seeds could detect), *did not train* "
             "when neither rank moved off W0 on any seed. " if margin else "")
    parts = [start, f"## {title}",
             f"Produced by {command} on "
             f"{finished:%Y-%m-%d} on {machine}, from commit {commits}; "
             f"{summary['provenance']['runs']} runs. {rules}The full report (all tables, "
             f"figures and the configuration) is `{report_path}`.", "",
             *[f"- {line}" for line in summary["findings"]], ""]
    for line in (_job_time(out), _wall_time(out / "results.sqlite")):
        if line:
            parts += [line, ""]
    for title, table in tables.items():
        if title.startswith(("Headline", "Tasks with K > 2", "Test metric (%) by rank",
                             "Can this setup detect a rank effect?")):
            parts += [f"**{title}**", "", table, ""]
    parts += [f"![Test metric vs LoRA rank]({link_base}/{figure})", "", end]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--machine", default=None)
    parser.add_argument("--target", type=Path, default=ROOT / "README.md",
                        help="file holding the block (default README.md)")
    parser.add_argument("--marker", default="RESULTS", help="block marker name")
    parser.add_argument("--command", default=MAIN_JOB, help="what produced the run (prose)")
    parser.add_argument("--title", default="Results of the main job")
    parser.add_argument("--figure", default="accuracy_vs_rank.png",
                        help="file name of the figure copy in docs/figures/")
    parser.add_argument("--report-path", default="lorank-out/report/report.html",
                        help="where the run's full report is, as the text names it")
    args = parser.parse_args()
    target = args.target.resolve()
    link_base = "docs/figures" if target.parent == ROOT else "figures"
    block = render(args.out, args.machine or _machine(), marker=args.marker,
                   command=args.command, title=args.title, figure=args.figure,
                   link_base=link_base, report_path=args.report_path)
    start, end = markers(args.marker)
    text = target.read_text()
    if start not in text:
        raise SystemExit(f"error: {target} has no {start} line to fill")
    if end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text,
                      flags=re.S)
    else:
        text = text.replace(start, block, 1)
    target.write_text(text)
    subprocess.run(["git", "-C", str(ROOT), "status", "--short", str(target)], check=False)


if __name__ == "__main__":
    main()
