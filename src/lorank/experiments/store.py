"""The results store: one SQLite row per run (stdlib :mod:`sqlite3`, WAL mode).

Schema (table ``runs``; JSON columns hold UTF-8 JSON text)::

    run_id TEXT PRIMARY KEY     sha256 of the run's canonical config (RunConfig.run_id)
    sweep, method TEXT          from the config, indexed
    status TEXT                 queued | running | done | failed | interrupted
    config JSON                 the resolved RunConfig (to_dict)
    metrics, curves JSON        what the method returned (NULL until done)
    timings JSON                {"prepare_s", "run_s", "wall_s"}
    versions JSON               torch, transformers, peft, numpy, lorank of the executing process
    git_commit TEXT, git_dirty INTEGER   of the coordinating checkout (NULL outside a repo)
    error TEXT, traceback TEXT  one-line error and the full traceback of a failed run
    attempts INTEGER            how many times the run was started
    owner TEXT                  host:pid:start of the coordinator that claimed the run
    host TEXT                   host that executed it
    created_at, started_at, finished_at TEXT   UTC ISO-8601

Every state change is one ``BEGIN IMMEDIATE`` transaction and the connection waits on locks
(``busy_timeout``), so several sweeps may share a store: a run is *claimed* (queued → running)
atomically, and a row is never duplicated (``INSERT … ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorank.errors import LorankError
from lorank.experiments.config import RunConfig
from lorank.experiments.provenance import process_token, token_alive
from lorank.experiments.registry import RunResult
from lorank.provenance import now

STATUSES = ("queued", "running", "done", "failed", "interrupted")
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    sweep TEXT NOT NULL,
    method TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued','running','done','failed','interrupted')),
    config TEXT NOT NULL,
    metrics TEXT,
    curves TEXT,
    timings TEXT,
    versions TEXT,
    git_commit TEXT,
    git_dirty INTEGER,
    error TEXT,
    traceback TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    host TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_sweep_status ON runs (sweep, status);
CREATE INDEX IF NOT EXISTS runs_method ON runs (method);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_JSON_COLUMNS = ("config", "metrics", "curves", "timings", "versions")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class RunRecord:
    """One stored run, JSON columns decoded."""

    run_id: str
    sweep: str
    method: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, Any] | None
    curves: dict[str, Any] | None
    timings: dict[str, Any] | None
    versions: dict[str, Any] | None
    git_commit: str | None
    git_dirty: bool | None
    error: str | None
    traceback: str | None
    attempts: int
    owner: str | None
    host: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None

    @property
    def run_config(self) -> RunConfig:
        """The stored config as a :class:`RunConfig`."""
        return RunConfig.from_dict(self.config)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        data = {key: row[key] for key in row.keys()}  # noqa: SIM118 (sqlite3.Row)
        for key in _JSON_COLUMNS:
            data[key] = None if data[key] is None else json.loads(data[key])
        if data["git_dirty"] is not None:
            data["git_dirty"] = bool(data["git_dirty"])
        return cls(**data)


class ResultStore:
    """A SQLite results store at ``path`` (created with its folder if missing).

    Use one instance per process (the coordinator); it is a context manager that closes the
    connection. ``readonly=True`` (readers: ``lorank runs``, ``lorank report``) never creates
    or changes a file: with no ``-wal`` file beside the store (no writer has it open) it is
    opened ``immutable`` — SQLite then reads the file without creating the WAL's ``-wal`` and
    ``-shm`` companions, which a plain read-only connection would create and leave behind, and
    without needing a writable folder; while a writer (a running sweep) holds it, read-only
    through the writer's WAL, so the reader sees its committed runs.
    """

    def __init__(self, path: str | Path, timeout_s: float = 60.0, readonly: bool = False) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise LorankError(f"store path {self.path} is a folder; give a .sqlite file")
        self.readonly = readonly
        if readonly:
            self._open_readonly()
            self.token = process_token()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None,
                                         check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise LorankError(f"cannot open store {self.path}: {exc}") from None
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.executescript(_SCHEMA)
            self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                               (SCHEMA_VERSION,))
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise LorankError(f"{self.path} is not a lorank results store ({exc})") from None
        self.token = process_token()

    def _open_readonly(self) -> None:
        if not self.path.is_file():
            raise LorankError(f"results store not found: {self.path}")
        uri = self.path.resolve().as_uri()
        last: sqlite3.Error | None = None
        wal = self.path.with_name(self.path.name + "-wal").exists()
        for flags in (("mode=ro", "mode=ro&immutable=1") if wal else ("mode=ro&immutable=1",)):
            try:
                conn = sqlite3.connect(f"{uri}?{flags}", uri=True, check_same_thread=False)
            except sqlite3.Error as exc:
                last = exc
                continue
            try:
                conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                conn.execute("SELECT run_id FROM runs LIMIT 1").fetchone()
            except sqlite3.OperationalError as exc:
                conn.close()
                last = exc
                if "no such table" in str(exc):
                    break
                continue  # e.g. "unable to open database file": the WAL's -shm cannot be made
            except sqlite3.DatabaseError as exc:
                conn.close()
                last = exc
                break
            conn.row_factory = sqlite3.Row
            self._conn = conn
            return
        raise LorankError(f"{self.path} is not a lorank results store ({last})")

    # -- plumbing -----------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction (writer lock taken up front; rolled back on any error).

        A Ctrl-C can land between ``BEGIN`` returning inside SQLite and Python seeing it, or
        inside ``COMMIT``: a transaction left open that way is rolled back here (on the way out
        and, should one survive, before the next one), so the interrupt handler's own write --
        putting in-flight runs back to ``interrupted`` -- always gets its transaction.
        """
        if self.readonly:
            raise LorankError(f"results store {self.path} was opened read-only")
        self._rollback_open()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback_open()
            raise

    def _rollback_open(self) -> None:
        """Roll back a transaction an interrupt left open on this connection (no-op if none)."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def add(self, configs: Sequence[RunConfig]) -> int:
        """Insert the runs not stored yet as ``queued`` (one transaction); returns how many."""
        stamp = now()
        rows = [(c.run_id, c.sweep, c.method, _dumps(c.to_dict()), stamp) for c in configs]
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO runs (run_id, sweep, method, status, config, created_at) "
                "VALUES (?, ?, ?, 'queued', ?, ?) ON CONFLICT (run_id) DO NOTHING", rows)
            return conn.total_changes - before

    def claimable(self, status: str, owner: str | None, retry_failed: bool) -> bool:
        """Whether a row in ``status`` (claimed by ``owner``) may be started now.

        queued/interrupted: yes; failed: only with ``retry_failed``; done: never; running: only
        when its owner process is gone (a killed sweep), never while that process lives.
        """
        if status in ("queued", "interrupted"):
            return True
        if status == "failed":
            return retry_failed
        if status == "running":
            return owner != self.token and not token_alive(owner)
        return False

    def claim(self, run_id: str, retry_failed: bool = False) -> bool:
        """Atomically mark a claimable run ``running`` for this process; False if not claimable."""
        with self._write() as conn:
            row = conn.execute("SELECT status, owner FROM runs WHERE run_id = ?",
                               (run_id,)).fetchone()
            if row is None or not self.claimable(row["status"], row["owner"], retry_failed):
                return False
            conn.execute(
                "UPDATE runs SET status = 'running', owner = ?, started_at = ?, "
                "attempts = attempts + 1, finished_at = NULL WHERE run_id = ?",
                (self.token, now(), run_id))
            return True

    def finish(self, run_id: str, result: RunResult, timings: Mapping[str, float],
               versions: Mapping[str, Any], git: tuple[str | None, bool | None],
               host: str) -> None:
        """Store a successful run's metrics, curves and provenance (one transaction)."""
        self._end(run_id, "done", result.metrics, result.curves, None, None, timings, versions,
                  git, host)

    def fail(self, run_id: str, error: str, traceback: str, timings: Mapping[str, float],
             versions: Mapping[str, Any], git: tuple[str | None, bool | None],
             host: str) -> None:
        """Store a failed run: one-line ``error`` and the full ``traceback`` (one transaction)."""
        self._end(run_id, "failed", None, None, " ".join(error.split()), traceback, timings,
                  versions, git, host)

    def _end(self, run_id: str, status: str, metrics: dict[str, Any] | None,
             curves: dict[str, Any] | None, error: str | None, traceback: str | None,
             timings: Mapping[str, float], versions: Mapping[str, Any],
             git: tuple[str | None, bool | None], host: str) -> None:
        """Write a finished run's row: status, result or error, provenance, ``finished_at``."""
        commit, dirty = git
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET status = ?, metrics = ?, curves = ?, timings = ?, versions = ?, "
                "git_commit = ?, git_dirty = ?, error = ?, traceback = ?, host = ?, "
                "finished_at = ? WHERE run_id = ?",
                (status, _dumps(metrics), _dumps(curves), _dumps(dict(timings)),
                 _dumps(dict(versions)), commit, None if dirty is None else int(dirty), error,
                 traceback, host, now(), run_id))

    def release(self, run_ids: Sequence[str]) -> int:
        """Put this process's ``running`` rows among ``run_ids`` back to ``interrupted``."""
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany(
                "UPDATE runs SET status = 'interrupted' WHERE run_id = ? AND status = 'running' "
                "AND owner = ?", [(rid, self.token) for rid in run_ids])
            return conn.total_changes - before

    # -- reading ------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord | None:
        row = self._conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else RunRecord.from_row(row)

    def statuses(self, run_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """run_id → (status, owner) for the stored ones among ``run_ids``."""
        out = {}
        ids = list(run_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(
                    f"SELECT run_id, status, owner FROM runs WHERE run_id IN ({marks})", chunk):
                out[row["run_id"]] = (row["status"], row["owner"])
        return out

    def query(self, sweep: str | None = None, method: str | None = None,
              status: str | None = None, where: Mapping[str, Any] | None = None,
              run_ids: Collection[str] | None = None) -> list[RunRecord]:
        """Runs matching every given filter; ``where`` compares config fields for equality
        (e.g. ``{"task": "sst2", "rank": 1}``); ``run_ids`` keeps only those runs (e.g. the
        runs of the current spec). Ordered by creation time, then run id."""
        clauses, args = [], []
        for column, value in (("sweep", sweep), ("method", method), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if status is not None and status not in STATUSES:
            raise LorankError(f"unknown status {status!r}; choose from: {', '.join(STATUSES)}")
        for key, value in (where or {}).items():
            if not key.replace("_", "").isalnum():
                raise LorankError(f"invalid config field name {key!r}")
            if isinstance(value, list | tuple | dict):
                clauses.append(f"json_extract(config, '$.{key}') = json(?)")
                args.append(json.dumps(value))
            else:
                clauses.append(f"json_extract(config, '$.{key}') IS ?")
                args.append(int(value) if isinstance(value, bool) else value)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        rows = self._conn.execute(sql + " ORDER BY created_at, run_id", args).fetchall()
        wanted = None if run_ids is None else set(run_ids)
        return [RunRecord.from_row(row) for row in rows
                if wanted is None or row["run_id"] in wanted]

    def counts(self, sweep: str | None = None) -> dict[str, int]:
        """Number of runs per status (all statuses listed)."""
        sql, args = "SELECT status, COUNT(*) AS n FROM runs", []
        if sweep is not None:
            sql, args = sql + " WHERE sweep = ?", [sweep]
        out = dict.fromkeys(STATUSES, 0)
        for row in self._conn.execute(sql + " GROUP BY status", args):
            out[row["status"]] = row["n"]
        return out


# -- export -------------------------------------------------------------------------------------
def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key in sorted(value):
            _flat(f"{prefix}.{key}" if prefix else str(key), value[key], out)
    elif isinstance(value, list):
        out[prefix] = json.dumps(value)
    else:
        out[prefix] = value


def flatten_record(record: RunRecord) -> dict[str, Any]:
    """One flat row: run columns, config fields by name, ``metrics.*``, ``timings.*``,
    ``versions.*``; lists (targets, curves) as JSON text."""
    row: dict[str, Any] = {key: getattr(record, key) for key in
                           ("run_id", "sweep", "method", "status", "error", "attempts", "host",
                            "git_commit", "git_dirty", "created_at", "started_at",
                            "finished_at")}
    config = {k: v for k, v in record.config.items() if k not in ("sweep", "method")}
    _flat("", config, row)
    _flat("metrics", record.metrics or {}, row)
    _flat("timings", record.timings or {}, row)
    _flat("versions", record.versions or {}, row)
    row["curves"] = json.dumps(record.curves) if record.curves is not None else None
    return row


def records_frame(records: Sequence[RunRecord]) -> Any:
    """A pandas DataFrame of :func:`flatten_record` rows."""
    import pandas as pd

    return pd.DataFrame([flatten_record(r) for r in records])


def export_records(records: Sequence[RunRecord], path: str | Path) -> Path:
    """Write records to ``.csv`` or ``.parquet`` atomically (temp file + os.replace)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise LorankError(f"export file must end in .csv or .parquet, got {path.name!r}")
    from lorank.atomic import atomic_file, check_out_file

    check_out_file(path, "export file")
    frame = records_frame(records)
    with atomic_file(path) as tmp:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            for column in frame.columns:  # arrow needs one type per column
                kinds = {type(v) for v in frame[column] if v is not None}
                if frame[column].dtype == object and len(kinds) > 1:
                    frame[column] = frame[column].map(
                        lambda v: v if v is None or isinstance(v, str) else json.dumps(v))
            frame.to_parquet(tmp, index=False)
    return path
