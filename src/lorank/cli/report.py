"""``lorank report``: tables, figures and an HTML page from a results store (reads only it)."""

from __future__ import annotations

import click


@click.command("report")
@click.option("--store", required=True, type=click.Path(dir_okay=False),
              help="SQLite results store written by `lorank sweep` / `lorank reproduce`.")
@click.option("--out", "out_dir", default="lorank-out/report", show_default=True,
              help="Output folder (replaced atomically).")
@click.option("--sweep", help="Only runs of this sweep.")
@click.option("--title", default="lorank report", show_default=True)
def command(store: str, out_dir: str, sweep: str | None, title: str) -> None:
    """Markdown/LaTeX tables, PNG/SVG figures and a self-contained HTML report."""
    from lorank.report.build import build_report

    paths = build_report(store, out_dir, sweep=sweep, title=title)
    click.echo(f"report: {paths.html}")
    click.echo(f"tables: {paths.markdown}, {paths.latex}")
    click.echo(f"figures: {len(paths.figures)} files in {paths.out / 'figures'}")
