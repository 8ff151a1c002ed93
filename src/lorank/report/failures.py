"""The report's "Runs that did not finish" table: what a sweep left failed, interrupted or unrun.

A sweep never stops at a failed run (:mod:`lorank.experiments.runners` stores it ``failed`` with
its one-line error and goes on), so a report can be built from a store where some cells are
missing. The tables aggregate only the finished runs; this table lists the others — method, task,
model, rank, seed, status and the stored one-line error — so that a missing cell is visible and
explained, and says how to rerun them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path

from lorank.experiments.store import ResultStore, RunRecord
from lorank.report.tables import Table

#: how many characters of a stored error the table shows (the store keeps all of it).
ERROR_WIDTH = 160


def unfinished_runs(store_path: str | Path, sweep: str | None = None,
                    run_ids: Collection[str] | None = None) -> list[RunRecord]:
    """Runs of the store (of ``sweep``; only ``run_ids`` when given) whose status is not
    ``done``, in a stable order (method, task, model, rank, seed). Reads the store read-only."""
    with ResultStore(store_path, readonly=True) as store:
        records = [r for r in store.query(sweep=sweep, run_ids=run_ids) if r.status != "done"]
    return sorted(records, key=lambda r: (r.method, str(r.config.get("task")),
                                          str(r.config.get("model")), r.config.get("rank") or 0,
                                          r.config.get("seed") or 0, r.run_id))


def _short(text: str | None) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= ERROR_WIDTH else line[: ERROR_WIDTH - 1] + "…"


def failures_table(records: Sequence[RunRecord], store: str | Path | None = None
                   ) -> Table | None:
    """The "Runs that did not finish" :class:`~lorank.report.tables.Table` (None when every
    run finished): one row per run, its status and stored error."""
    if not records:
        return None
    rows = [[r.method, str(r.config.get("task", "")), str(r.config.get("model", "")),
             str(r.config.get("rank", "")), str(r.config.get("seed", "")), r.status,
             _short(r.error) or "-"] for r in records]
    counts = Counter(r.status for r in records)
    what = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    where = f" --store {store}" if store is not None else ""
    note = (f"{len(records)} runs did not finish ({what}); their cells are missing from the "
            f"tables and figures above, which aggregate finished runs only. `lorank runs{where} "
            "--status failed` shows the full errors; `--retry-failed` (of `lorank sweep` or "
            "`lorank reproduce`) reruns them.")
    return Table(title="Runs that did not finish",
                 header=["method", "task", "model", "rank", "seed", "status", "error"],
                 rows=rows, note=note)
