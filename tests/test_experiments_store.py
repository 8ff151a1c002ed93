"""Results store: insert idempotence, claims, failed/done semantics, queries and export."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from lorank.errors import LorankError
from lorank.experiments import ResultStore, RunConfig, export_records
from lorank.experiments.provenance import process_token, token_alive
from lorank.experiments.registry import RunResult, normalize_result


def configs(n=4, sweep="s"):
    return [RunConfig(sweep=sweep, method="prescribe", task="sst2", model="minilm", rank=r,
                      seed=13) for r in range(1, n + 1)]


def finish(store, config, value):
    store.finish(config.run_id, RunResult({"acc": value, "nested": {"a": 1}},
                                          {"loss": [1.0, 0.5]}),
                 {"run_s": 0.1}, {"numpy": "x"}, ("abc", True), "h")


def test_add_is_idempotent_and_never_duplicates(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store.add(configs(4)) == 4
        assert store.add(configs(4)) == 0
        assert store.add(configs(6)) == 2
        assert store.counts() == {"queued": 6, "running": 0, "done": 0, "failed": 0,
                                  "interrupted": 0}
    raw = sqlite3.connect(tmp_path / "r.sqlite")
    assert raw.execute("SELECT COUNT(*), COUNT(DISTINCT run_id) FROM runs").fetchone() == (6, 6)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_claim_finish_fail_and_readd(tmp_path):
    c = configs(2)
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.add(c)
        assert store.claim(c[0].run_id)
        assert not store.claim(c[0].run_id)  # running, owned by this live process
        finish(store, c[0], 0.75)
        assert not store.claim(c[0].run_id)  # done: never again
        assert store.claim(c[1].run_id)
        store.fail(c[1].run_id, "ValueError: bad\nthing", "Traceback ...", {}, {}, (None, None),
                   "h")
        assert not store.claim(c[1].run_id)
        assert store.claim(c[1].run_id, retry_failed=True)
        store.add(c)  # re-adding keeps the stored state
        rec = store.get(c[0].run_id)
        assert rec.status == "done" and rec.metrics == {"acc": 0.75, "nested": {"a": 1}}
        assert rec.curves == {"loss": [1.0, 0.5]} and rec.git_commit == "abc"
        assert rec.git_dirty is True and rec.attempts == 1 and rec.run_config == c[0]
        failed = store.get(c[1].run_id)
        assert failed.status == "running" and failed.attempts == 2
        assert store.release([c[1].run_id]) == 1
        assert store.get(c[1].run_id).status == "interrupted"


def test_a_transaction_left_open_by_an_interrupt_does_not_block_the_next_write(tmp_path):
    """Ctrl-C can land just after SQLite began a transaction (CI saw "cannot start a transaction
    within a transaction" from the interrupt handler's release): the next write still works, and
    what the interrupted transaction held is rolled back, not committed."""
    c = configs(2)
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.add(c)
        assert store.claim(c[0].run_id)
        store._conn.execute("BEGIN IMMEDIATE")  # what an interrupt after BEGIN leaves behind
        store._conn.execute("UPDATE runs SET status = 'done' WHERE run_id = ?", (c[1].run_id,))
        assert store.release([c[0].run_id]) == 1
        assert store.get(c[0].run_id).status == "interrupted"
        assert store.get(c[1].run_id).status == "queued"

        class Boom(KeyboardInterrupt):
            pass

        with pytest.raises(Boom), store._write() as conn:
            conn.execute("UPDATE runs SET status = 'failed' WHERE run_id = ?", (c[1].run_id,))
            raise Boom
        assert not store._conn.in_transaction and store.get(c[1].run_id).status == "queued"


def test_running_rows_of_dead_or_foreign_processes(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_token = f"{process_token().rsplit(':', 2)[0]}:{int(dead.stdout)}:1"
    assert not token_alive(dead_token)
    assert token_alive(process_token())
    assert token_alive("some-other-host:1:1")  # cannot check: left alone
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store.claimable("running", dead_token, False)
        assert not store.claimable("running", "some-other-host:1:1", False)
        assert not store.claimable("done", None, True)


def test_two_connections_see_one_row_per_run(tmp_path):
    path = tmp_path / "r.sqlite"
    c = configs(3)
    with ResultStore(path) as a, ResultStore(path) as b:
        a.add(c)
        b.add(c)
        assert a.claim(c[0].run_id)
        assert not b.claim(c[0].run_id)  # same process token: not stale
        assert len(b.query()) == 3


def test_query_filters(tmp_path):
    c = configs(3) + configs(2, sweep="other")
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.add(c)
        store.claim(c[1].run_id)
        finish(store, c[1], 0.5)
        assert len(store.query(sweep="s")) == 3
        assert [r.run_id for r in store.query(status="done")] == [c[1].run_id]
        assert len(store.query(where={"rank": 1})) == 2
        assert len(store.query(sweep="other", where={"rank": 2, "task": "sst2"})) == 1
        assert len(store.query(where={"targets": ["query", "value"]})) == 5
        assert store.query(where={"task": "rte"}) == []
        with pytest.raises(LorankError, match="unknown status"):
            store.query(status="finished")
        with pytest.raises(LorankError, match="invalid config field"):
            store.query(where={"x') OR 1=1 --": 1})


def test_export_csv_and_parquet(tmp_path):
    c = configs(3)
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.add(c)
        for i, config in enumerate(c[:2]):
            store.claim(config.run_id)
            finish(store, config, 0.5 + i / 10)
        records = store.query()
    for name in ("out.csv", "out.parquet"):
        path = export_records(records, tmp_path / name)
        frame = pd.read_csv(path) if name.endswith(".csv") else pd.read_parquet(path)
        assert len(frame) == 3
        assert {"run_id", "rank", "task", "metrics.acc", "metrics.nested.a", "timings.run_s",
                "versions.numpy", "curves"} <= set(frame.columns)
        done = frame[frame.status == "done"].sort_values("rank")
        assert list(done["metrics.acc"]) == [0.5, 0.6]
        assert json.loads(done["curves"].iloc[0]) == {"loss": [1.0, 0.5]}
        assert json.loads(frame["targets"].iloc[0]) == ["query", "value"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(LorankError, match=r"\.csv or \.parquet"):
        export_records(records, tmp_path / "out.xlsx")


def test_store_path_errors(tmp_path):
    with pytest.raises(LorankError, match="is a folder"):
        ResultStore(tmp_path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LorankError, match="not a lorank results store"):
        ResultStore(junk)


def test_normalize_result():
    import numpy as np

    r = normalize_result({"metrics": {"a": np.float64(0.5), "n": np.int64(3),
                                      "loss": float("nan")},
                          "curves": {"x": np.arange(3)}})
    assert r.metrics["a"] == 0.5 and r.metrics["n"] == 3 and r.curves == {"x": [0, 1, 2]}
    assert r.metrics["loss"] != r.metrics["loss"]  # NaN kept: a diverged run
    with pytest.raises(TypeError, match="unexpected keys"):
        normalize_result({"metric": {}})
    with pytest.raises(TypeError, match="JSON values"):
        normalize_result({"metrics": {"a": object()}})
    with pytest.raises(TypeError, match="mapping"):
        normalize_result([1])


def test_readonly_store_reads_without_writing_anything(tmp_path):
    path = tmp_path / "r.sqlite"
    cfg = RunConfig(sweep="s", method="prescribe", task="sst2", model="minilm", rank=1, seed=13)
    with ResultStore(path) as st:
        st.add([cfg])
    before = sorted(p.name for p in tmp_path.iterdir())
    mtime = path.stat().st_mtime_ns
    with ResultStore(path, readonly=True) as ro:  # no writer: opened immutable
        assert [r.run_id for r in ro.query()] == [cfg.run_id]
        with pytest.raises(LorankError, match="opened read-only"):
            ro.add([cfg])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no -wal/-shm left behind
    assert path.stat().st_mtime_ns == mtime
    with ResultStore(path) as writer:  # a live writer: the reader sees its committed rows
        other = RunConfig(sweep="s", method="prescribe", task="rte", model="minilm", rank=1,
                          seed=13)
        writer.add([other])
        with ResultStore(path, readonly=True) as ro:
            assert len(ro.query()) == 2
    with pytest.raises(LorankError, match="results store not found"):
        ResultStore(tmp_path / "missing.sqlite", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()
    (tmp_path / "text.sqlite").write_text("not sqlite\n")
    with pytest.raises(LorankError, match="is not a lorank results store"):
        ResultStore(tmp_path / "text.sqlite", readonly=True)
