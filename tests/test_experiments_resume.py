"""Crash safety: SIGKILL at random points, Ctrl-C, and two sweeps sharing one store.

The sweeps run in subprocesses with ``test_resume_lstsq``, a test-only method registered here
that does ~50-100 ms of real, deterministic numpy work (ten seeded least-squares fits), so that
kills land mid-sweep. Results after any number of kills and resumes must equal an
uninterrupted sweep, with every run stored exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from lorank.experiments import LocalRunner, ResultStore, SweepInterrupted, register_method
from lorank.experiments.config import RunConfig

TESTS = Path(__file__).resolve().parent
N_RUNS = 36


@register_method("test_resume_lstsq")
def lstsq_method(config, ctx):
    """Ten seeded least-squares fits (300×120); returns the residuals (deterministic)."""
    rng = np.random.default_rng([config.seed, config.rank])
    A, b = rng.standard_normal((300, 120)), rng.standard_normal(300)
    with threadpool_limits(1):  # one BLAS thread: fast on a loaded 2-core machine
        residuals = [float(np.linalg.lstsq(A + i * 1e-3, b, rcond=None)[1][0])
                     for i in range(10)]
    return {"metrics": {"residual": residuals[-1], "mean": float(np.mean(residuals))},
            "curves": {"residual": residuals}}


def runs() -> list[RunConfig]:
    return [RunConfig(sweep="resume", method="test_resume_lstsq", task="sst2", model="minilm",
                      rank=r, seed=s) for s in (13, 42, 87) for r in range(1, N_RUNS // 3 + 1)]


def main(store_path: str, workers: int = 1) -> None:
    """Subprocess entry: run the sweep, print the summary as JSON (exit 130 on Ctrl-C)."""
    with ResultStore(store_path) as store:
        try:
            summary = LocalRunner(workers=workers, progress=False).run(runs(), store)
        except SweepInterrupted as stop:
            print(json.dumps({"interrupted": stop.summary.interrupted,
                              "done": stop.summary.done}), flush=True)
            sys.exit(130)
    print(json.dumps({"done": summary.done, "busy": summary.busy,
                      "skipped": summary.skipped, "failed": summary.failed}), flush=True)


def start(store: Path, workers: int = 1) -> subprocess.Popen:
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
            f"import test_experiments_resume as t; t.main(sys.argv[1], {workers})")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    # A shell that starts jobs in the background (nohup ... &) makes them ignore SIGINT, and a
    # Python started that way installs no KeyboardInterrupt handler: give the child the default
    # disposition, as an interactive terminal would.
    return subprocess.Popen([sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def statuses(store: Path) -> dict[str, str]:
    if not store.exists():
        return {}
    try:
        with sqlite3.connect(store, timeout=30) as conn:
            return dict(conn.execute("SELECT run_id, status FROM runs"))
    except sqlite3.OperationalError:  # schema not created yet
        return {}


def wait_for(condition, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> dict[str, tuple]:
    """The uninterrupted sweep, in this process."""
    with ResultStore(tmp_path_factory.mktemp("ref") / "reference.sqlite") as store:
        assert LocalRunner(progress=False).run(runs(), store).done == N_RUNS
        return {r.run_id: (r.metrics, r.curves) for r in store.query()}


def assert_equal_to_reference(store: Path, ref: dict[str, tuple]) -> list:
    with ResultStore(store) as results:
        records = results.query()
    assert len(records) == N_RUNS == len({r.run_id for r in records})
    assert {r.run_id for r in records} == set(ref)
    for r in records:
        assert r.status == "done", (r.status, r.error)
        metrics, curves = ref[r.run_id]
        assert r.metrics == pytest.approx(metrics, rel=1e-9)
        assert r.curves["residual"] == pytest.approx(curves["residual"], rel=1e-9)
    return records


@pytest.mark.timeout(240)
def test_sigkill_at_random_points_then_resume(tmp_path, ref):
    store = tmp_path / "r.sqlite"
    rng = random.Random(20260501)
    partial, left_running = 0, set()
    for _ in range(4):
        before = sum(s == "done" for s in statuses(store).values())
        proc = start(store)
        wait_for(lambda b=before, p=proc: p.poll() is not None or
                 sum(s == "done" for s in statuses(store).values()) > b)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = statuses(store)
        partial += sum(s == "done" for s in state.values()) < N_RUNS
        left_running |= {rid for rid, s in state.items() if s == "running"}
    assert partial >= 2, "the kills should land mid-sweep"
    final = start(store)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert json.loads(out)["failed"] == 0
    records = assert_equal_to_reference(store, ref)
    attempts = {r.run_id: r.attempts for r in records}
    assert all(attempts[rid] >= 2 for rid in left_running)  # killed mid-run: run again


def children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            out.add(int(stat.parent.name))
    return out


@pytest.mark.timeout(180)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigkill_of_a_pool_sweep_leaves_no_orphans_and_resumes(tmp_path, ref):
    store = tmp_path / "r.sqlite"
    proc = start(store, workers=2)
    wait_for(lambda: sum(s == "done" for s in statuses(store).values()) >= 2)
    workers = children(proc.pid)
    assert len(workers) >= 2
    proc.kill()
    proc.wait()
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 30)
    assert "running" in statuses(store).values()  # claimed chunks of the killed coordinator
    final = start(store)
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert_equal_to_reference(store, ref)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", [1, 2])
def test_sigint_marks_in_flight_runs_interrupted_then_resumes(tmp_path, ref, workers):
    store = tmp_path / "r.sqlite"
    proc = start(store, workers)
    wait_for(lambda: sum(s == "done" for s in statuses(store).values()) >= 2)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    summary = json.loads(out)
    state = statuses(store)
    assert "running" not in state.values()
    interrupted = sum(s == "interrupted" for s in state.values())
    assert interrupted == summary["interrupted"]
    assert interrupted <= (1 if workers == 1 else N_RUNS)
    assert 2 <= sum(s == "done" for s in state.values()) < N_RUNS
    final = start(store)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert_equal_to_reference(store, ref)


@pytest.mark.timeout(180)
def test_two_sweeps_share_a_store_without_duplicate_work(tmp_path, ref):
    store = tmp_path / "r.sqlite"
    procs = [start(store), start(store)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outs.append(json.loads(out))
    assert sum(o["done"] for o in outs) == N_RUNS  # each run executed by exactly one sweep
    records = assert_equal_to_reference(store, ref)
    assert all(r.attempts == 1 for r in records)


def test_in_process_resume_skips_done_runs(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        first = LocalRunner(progress=False).run(runs()[:10], store)
        second = LocalRunner(progress=False).run(runs(), store)
    assert (first.done, second.skipped, second.done) == (10, 10, N_RUNS - 10)


class StopAfterClaim(ResultStore):
    """A store whose ``n``-th claim commits and then meets a stop (a signal arriving right
    after the claim's COMMIT, before the runner has noted the run as in flight)."""

    def __init__(self, path: Path, n: int) -> None:
        super().__init__(path)
        self.left = n

    def claim(self, run_id: str, retry_failed: bool = False) -> bool:
        claimed = super().claim(run_id, retry_failed)
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt
        return claimed


@pytest.mark.parametrize("workers", [1, 2])
def test_stop_right_after_a_claim_commits_leaves_nothing_running(tmp_path, workers):
    """The window CI once hit: without noting the run before claiming it, the run stayed
    ``running`` under a live-looking owner after a clean stop."""
    path = tmp_path / "r.sqlite"
    with StopAfterClaim(path, n=3) as store, pytest.raises(SweepInterrupted) as stop:
        LocalRunner(workers=workers, progress=False).run(runs()[:6], store)
    after = statuses(path)
    assert "running" not in after.values(), after
    assert list(after.values()).count("interrupted") == stop.value.summary.interrupted >= 1
    with ResultStore(path) as store:
        summary = LocalRunner(progress=False).run(runs()[:6], store)
    assert summary.done + summary.skipped == 6 and summary.busy == 0
