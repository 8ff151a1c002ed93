"""``lorank report``: tables, figures and an HTML page from a results store (reads only it)."""

from __future__ import annotations

import click

from lorank.experiments.spec import DEFAULT_MARGIN


@click.command("report")
@click.option("--store", required=True, type=click.Path(dir_okay=False),
              help="SQLite results store written by `lorank sweep` / `lorank reproduce`.")
@click.option("--out", "out_dir", default="lorank-out/report", show_default=True,
              help="Output folder (replaced atomically).")
@click.option("--sweep", help="Only runs of this sweep.")
@click.option("--title", default="lorank report", show_default=True)
@click.option("--margin", type=float, default=DEFAULT_MARGIN, show_default=True,
              help="Equivalence margin δ of the r = 1 vs r = 12 test (TOST) and of the tie rule, "
                   "as a fraction of the task's metric (0.01 = 1 point).")
def command(store: str, out_dir: str, sweep: str | None, title: str, margin: float) -> None:
    """Markdown/LaTeX tables, PNG/SVG figures and a self-contained HTML report."""
    from lorank.report.build import build_report
    from lorank.report.stats import check_margin

    check_margin(margin, "--margin")
    paths = build_report(store, out_dir, sweep=sweep, title=title, margin=margin)
    click.echo(f"report: {paths.html}")
    click.echo(f"tables: {paths.markdown}, {paths.latex}")
    click.echo(f"figures: {len(paths.figures)} files in {paths.out / 'figures'}")
