"""Clean stop of ``lorank sweep`` on SIGINT and SIGTERM (:mod:`lorank.experiments.signals`).

The subprocess sweeps start with SIGINT *ignored*, as a background job of a non-interactive
shell does (``lorank sweep ... &``), in a session of their own. They run the real ``cstar``
method on tiny Gaussian problems (8×8, 4 instances, 200-300 GD steps: ~0.1-0.25 s a run), so
a signal sent once a run is stored lands mid-sweep (the torch backend: the compiled one would
finish these runs in milliseconds). After the stop: exit 130 (SIGINT) or 143
(SIGTERM), one "interrupted" line and no traceback, an intact store with no run left
``running``; the rerun executes exactly the runs that were not done.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from lorank.experiments.signals import EXIT_CODES, StopRequest, stop_on_signals

N_RUNS = 24


# -- the context manager, in this process -------------------------------------------------------
def _wait_for_signal() -> None:
    end = time.monotonic() + 5
    while time.monotonic() < end:
        time.sleep(0.01)
    raise AssertionError("no KeyboardInterrupt within 5 s")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_raises_keyboard_interrupt_and_names_itself(signum, code):
    with pytest.raises(KeyboardInterrupt), stop_on_signals() as stop:
        os.kill(os.getpid(), signum)
        _wait_for_signal()
    assert stop.signum == signum and stop.exit_code == code
    assert stop.name == signal.Signals(signum).name


def test_overrides_an_inherited_ignored_sigint_and_restores_handlers():
    def mine(signum, frame):
        raise AssertionError("the sweep's handler should be active")

    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, mine)
    try:
        with pytest.raises(KeyboardInterrupt), stop_on_signals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for_signal()
        assert stop.signum == signal.SIGINT
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def test_signals_during_the_clean_up_are_ignored():
    with stop_on_signals() as stop:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for_signal()
        except KeyboardInterrupt:
            os.kill(os.getpid(), signal.SIGINT)  # impatient second Ctrl-C while cleaning up
            time.sleep(0.2)
    assert stop.signum == signal.SIGTERM and stop.exit_code == EXIT_CODES[signal.SIGTERM]


def test_no_signal_no_change_and_outside_main_thread_nothing_installed():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert signal.getsignal(signal.SIGTERM) is not before
    assert stop == StopRequest() and stop.exit_code == 130
    assert signal.getsignal(signal.SIGTERM) is before
    seen = []

    def body() -> None:
        with stop_on_signals() as req:
            seen.append((req, signal.getsignal(signal.SIGTERM)))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [(StopRequest(), before)]


# -- `lorank sweep` in a subprocess -------------------------------------------------------------
def test_sigterm_while_ray_starts_takes_the_clean_stop():
    """``ray.init`` installs ``sys.exit(signum)`` as the SIGTERM handler before it returns; a
    SIGTERM in that window must still reach the caller's clean stop, and a half-started Ray is
    shut down. The stand-in below does what ray.init does with signals, then gets a real one."""
    from lorank.experiments.runners import RayRunner

    class StartingRay:
        up = shut = False

        def is_initialized(self) -> bool:
            return self.up

        def init(self, **kwargs) -> None:
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # Ray's
            self.up = True
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for_signal()

        def shutdown(self) -> None:
            self.up, self.shut = False, True

    ray = StartingRay()
    with stop_on_signals() as request:
        ours = signal.getsignal(signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            RayRunner()._start(ray)
        assert signal.getsignal(signal.SIGTERM) is ours
    assert request.name == "SIGTERM" and request.exit_code == 143
    assert ray.shut and not ray.up


def write_spec(tmp_path: Path, n_runs: int = N_RUNS) -> Path:
    spec = {
        "name": "signals", "store": str(tmp_path / "s.sqlite"),
        "base": {"method": "cstar", "task": "gaussian", "model": "gaussian",
                 "options": {"m": 8, "n": 8, "solver": "gd", "instances": 4, "n_boot": 20,
                             "ratios": [1.0, 1.4, 2.0], "backend": "torch"}},
        "grid": {"rank": [1], "seed": list(range(1, n_runs // 2 + 1)), "steps": [200, 300]},
    }
    path = tmp_path / "signals.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start(spec: Path, *args: str) -> subprocess.Popen:
    """``lorank sweep SPEC`` as a background job of a non-interactive shell: SIGINT ignored."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "lorank.cli.main", "sweep", str(spec), "--no-progress", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))


def rows(store: Path) -> dict[str, tuple[str, int, str | None]]:
    """run_id -> (status, attempts, finished_at); {} before the schema exists."""
    if not store.exists():
        return {}
    try:
        with sqlite3.connect(store, timeout=30) as conn:
            return {r[0]: tuple(r[1:]) for r in conn.execute(
                "SELECT run_id, status, attempts, finished_at FROM runs")}
    except sqlite3.OperationalError:
        return {}


def n_done(store: Path) -> int:
    return sum(status == "done" for status, _, _ in rows(store).values())


def wait_for(condition, proc: subprocess.Popen, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended early: {proc.communicate()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.02)


POOL, RAY = ["--workers", "2"], ["--backend", "ray", "--workers", "2"]
CASES = [  # (signal, sweep args, to the whole process group?, most runs in flight, runs)
    pytest.param(signal.SIGINT, [], False, 1, N_RUNS, id="sigint-inherited-ignored"),
    pytest.param(signal.SIGINT, POOL, True, N_RUNS, N_RUNS, id="sigint-pool-process-group"),
    pytest.param(signal.SIGTERM, [], False, 1, N_RUNS, id="sigterm"),
    pytest.param(signal.SIGTERM, POOL, True, N_RUNS, N_RUNS, id="sigterm-pool-process-group"),
    # Ray: <= 2 tasks in flight, each one features group (the 2 step budgets of a seed)
    pytest.param(signal.SIGTERM, RAY, False, 4, 12, id="sigterm-ray"),  # Ray starts in ~5 s
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("signum", "args", "group", "in_flight", "n"), CASES)
def test_signal_stops_sweep_cleanly_then_rerun_finishes(tmp_path, signum, args, group,
                                                        in_flight, n):
    """Pool chunks and Ray tasks are claimed whole (a features group each): the pool may hold
    every run in flight, Ray at most 2 tasks of 2 runs."""
    if "ray" in args:
        pytest.importorskip("ray")
    spec, store = write_spec(tmp_path, n), tmp_path / "s.sqlite"
    proc = start(spec, *args)
    wait_for(lambda: n_done(store) >= 1, proc, 40)
    began = time.monotonic()
    (os.killpg if group else os.kill)(proc.pid, signum)
    out, err = proc.communicate(timeout=20)
    assert time.monotonic() - began < 10, "the sweep should stop promptly"
    name = signal.Signals(signum).name
    assert proc.returncode == EXIT_CODES[signum] == 128 + signum, err
    assert f"interrupted ({name}): {n} runs:" in err
    assert err.rstrip().endswith("rerun the same command to resume")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err

    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    before = rows(store)
    statuses = [status for status, _, _ in before.values()]
    assert len(before) == n and "running" not in statuses
    done = {rid: row for rid, row in before.items() if row[0] == "done"}
    assert 1 <= len(done) < n
    interrupted = [rid for rid, row in before.items() if row[0] == "interrupted"]
    # a sequential sweep can be stopped between two runs (after one is stored, before the
    # next is claimed): then nothing was in flight. Pool chunks are claimed ahead: >= 1.
    assert (1 if in_flight > 1 else 0) <= len(interrupted) <= in_flight
    assert f" {len(interrupted)} interrupted in " in err  # the summary counts what it released

    rerun = start(spec, *([] if args == RAY else args))  # the store is backend-neutral;
    # resuming a Ray sweep locally saves a second Ray start (~6 s) and keeps the test < 20 s
    out, err = rerun.communicate(timeout=45)
    assert rerun.returncode == 0, err
    assert f"{n} runs: {n - len(done)} done, 0 failed, {len(done)} skipped" in out
    after = rows(store)
    assert len(after) == n and all(row[0] == "done" for row in after.values())
    assert all(after[rid] == row for rid, row in done.items())  # not run again
    assert all(after[rid][1] == 2 for rid in interrupted)
    assert all(row[1] == 1 for rid, row in after.items() if rid not in interrupted)


class StoppedRay:
    """Stands in for ``ray`` around a stop: every task is submitted, then ``ray.wait`` meets the
    KeyboardInterrupt. ``joined``: Ray already initialised by the caller (not the runner's)."""

    def __init__(self, joined: bool, store: Path) -> None:
        self.up, self.store, self.calls = joined, store, []

    def is_initialized(self) -> bool:
        return self.up

    def init(self, **kwargs) -> None:
        self.up = True

    def shutdown(self) -> None:
        self.up = False
        self.calls.append("shutdown")

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0}

    def remote(self, fn):
        ray = self

        class Task:
            def options(self, **kwargs):
                return self

            def remote(self, chunk, args):
                ray.calls.append(("submit", len(chunk)))
                return object()
        return Task()

    def wait(self, refs, num_returns, timeout):
        raise KeyboardInterrupt

    def cancel(self, ref, force):
        self.calls.append(("cancel", sorted(set(s for s, _, _ in rows(self.store).values()))))


@pytest.mark.parametrize("joined", [False, True],
                         ids=["started-by-runner", "initialised-by-caller"])
def test_ray_stop_releases_runs_first_and_cancels_only_the_callers_ray(
        tmp_path, monkeypatch, joined):
    """``ray.cancel`` racing a task's completion can abort the driver inside Ray
    (ray-project/ray#54846): a Ray connection the runner opened is only shut down (which ends
    its tasks); in a Ray the caller initialised, the tasks are cancelled, after the store
    released them."""
    from lorank.experiments import ResultStore, SweepInterrupted, runners
    from lorank.experiments.config import RunConfig

    path = tmp_path / "s.sqlite"
    ray = StoppedRay(joined, path)
    monkeypatch.setattr(runners, "import_ray", lambda: ray)
    configs = [RunConfig(sweep="stop", method="prescribe", task="sst2", model="minilm",
                         rank=r, seed=s) for s in (13, 42) for r in (1, 2)]
    with ResultStore(path) as store, pytest.raises(SweepInterrupted) as stop:
        runners.RayRunner(progress=False).run(configs, store)
    assert stop.value.summary.interrupted == 4
    assert {s for s, _, _ in rows(path).values()} == {"interrupted"}
    submitted = sum(c[1] for c in ray.calls if c[0] == "submit")
    cancels = [c for c in ray.calls if c[0] == "cancel"]
    assert submitted == 4
    if joined:
        assert len(cancels) == 2 and all(c[1] == ["interrupted"] for c in cancels)
        assert "shutdown" not in ray.calls  # not ours to stop
    else:
        assert cancels == [] and ray.calls[-1] == "shutdown"
