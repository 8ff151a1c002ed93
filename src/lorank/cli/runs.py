"""``lorank runs``: list, filter and export the runs of a results store."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import yaml

from lorank.errors import LorankError


def parse_where(items: tuple[str, ...]) -> dict[str, Any]:
    """``("task=sst2", "rank=1")`` → ``{"task": "sst2", "rank": 1}`` (values read as YAML)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LorankError(f"--where expects FIELD=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _summary(metrics: dict[str, Any] | None, width: int = 100) -> str:
    if not metrics:
        return ""
    text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in metrics.items())
    return text if len(text) <= width else text[: width - 1] + "…"


@click.command("runs")
@click.option("--store", type=str, default=None,
              help="Results store (default results/<sweep>.sqlite with --sweep).")
@click.option("--sweep", type=str, default=None, help="Only this sweep.")
@click.option("--status", type=str, default=None,
              help="queued, running, done, failed or interrupted.")
@click.option("--method", type=str, default=None, help="Only this method.")
@click.option("--where", "where", multiple=True, metavar="FIELD=VALUE",
              help="Config field filter, repeatable (e.g. --where task=sst2 --where rank=1).")
@click.option("--export", "export", type=str, default=None,
              help="Write the selected runs to a .csv or .parquet file.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def command(store: str | None, sweep: str | None, status: str | None, method: str | None,
            where: tuple[str, ...], export: str | None, as_json: bool) -> None:
    """List, filter and export the runs stored by `lorank sweep`."""
    from lorank.experiments.store import ResultStore, export_records

    if store is None:
        if sweep is None:
            raise LorankError("pass --store PATH (or --sweep NAME for results/NAME.sqlite)")
        store = str(Path("results") / f"{sweep}.sqlite")
    if not Path(store).is_file():
        raise LorankError(f"results store not found: {store}")
    if export and Path(export).suffix.lower() not in (".csv", ".parquet"):
        raise LorankError(f"--export file must end in .csv or .parquet, got {export!r}")
    if export:
        from lorank.atomic import check_out_file

        check_out_file(export, "--export file")
    with ResultStore(store, readonly=True) as results:
        records = results.query(sweep=sweep, method=method, status=status,
                                where=parse_where(where))
    if export:
        path = export_records(records, export)
        click.echo(f"wrote {len(records)} runs to {path}", err=as_json)
    if as_json:
        click.echo(json.dumps([asdict(r) for r in records], indent=1))
        return
    if export:
        return
    for r in records:
        c = r.config
        text = r.error if r.status == "failed" else _summary(r.metrics)
        click.echo(f"{r.run_id[:12]}  {r.sweep:<10} {r.method:<10} {c.get('task', ''):<6} "
                   f"{c.get('model', ''):<8} r={c.get('rank')!s:<3} seed={c.get('seed')!s:<4} "
                   f"{r.status:<11} {text}")
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    click.echo(f"{len(records)} runs" + "".join(f", {n} {s}" for s, n in sorted(counts.items())))
