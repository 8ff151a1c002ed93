"""Runners: execute a sweep's runs and record each outcome in a :class:`ResultStore`.

All runners share one interface, ``Runner.run(configs, store, retry_failed=False) ->
SweepSummary``, and one protocol:

1. every method used is resolved and each config validated (LorankError before anything runs);
2. the configs are inserted as ``queued`` (existing rows are kept: no duplicates);
3. claimable runs (queued/interrupted, failed with ``retry_failed``, running rows whose
   coordinator died) are grouped by (method, features key) and executed group by group, so a
   method's ``prepare`` builds features once per group and process;
4. each run is claimed just before it starts and its outcome is written in one transaction; a
   run that raises is stored ``failed`` (one-line error + traceback) and the sweep goes on;
5. Ctrl-C puts this process's in-flight runs back to ``interrupted`` and raises
   :class:`SweepInterrupted` (finished runs stay as they are).

Only the coordinating process writes to the store; worker processes and Ray tasks compute and
return :class:`RunOutcome` s.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback as tb
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorank.errors import LorankError, check_positive_int
from lorank.experiments.config import RunConfig
from lorank.experiments.registry import (
    FeatureCache,
    Method,
    RunContext,
    RunResult,
    get_method,
    normalize_result,
)
from lorank.experiments.store import ResultStore
from lorank.provenance import git_state, hostname, package_versions

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; ``summary`` holds what had finished (stored) by then."""

    def __init__(self, summary: SweepSummary) -> None:
        super().__init__("sweep interrupted")
        self.summary = summary


@dataclass
class SweepSummary:
    """Counts for one ``Runner.run`` call.

    ``done``/``failed``: runs finished by this call; ``skipped``: already done (or failed,
    without retry) before; ``busy``: running in, or taken by, another live sweep;
    ``interrupted``: released by Ctrl-C; ``feature_builds``: ``prepare`` calls (in every
    process) for the runs recorded; ``not_done``: runs of the call not ``done`` in the store
    when it returned (this call's failures, and failed runs skipped without ``retry_failed``).
    """

    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    busy: int = 0
    interrupted: int = 0
    elapsed_s: float = 0.0
    feature_builds: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    not_done: int = 0

    @property
    def ok(self) -> bool:
        """Every run of the call is ``done`` in the store."""
        return self.failed == 0 and self.interrupted == 0 and self.not_done == 0

    def line(self) -> str:
        """One-line human summary."""
        earlier = self.not_done - self.failed - self.interrupted - self.busy
        return (f"{self.total} runs: {self.done} done, {self.failed} failed, {self.skipped} "
                f"skipped (already stored), {self.busy} busy elsewhere, {self.interrupted} "
                f"interrupted in {self.elapsed_s:.1f} s"
                + (f"; {earlier} failed earlier (not retried)" if earlier > 0 else ""))


@dataclass(frozen=True)
class RunOutcome:
    """What executing one run produced (picklable; sent back from workers)."""

    run_id: str
    result: RunResult | None
    error: str | None
    traceback: str | None
    timings: dict[str, float]
    versions: dict[str, Any]
    host: str
    built_features: bool = False

    @property
    def ok(self) -> bool:
        return self.result is not None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _prepare(method: Method, config: RunConfig, ctx: RunContext) -> None:
    """``ctx.features``: the method's ``prepare`` result for the config's features key (from
    ``ctx.cache``, built on a miss); the worker's thread count applied."""
    ctx.features = None
    if method.prepare is not None:
        key = config.features_key
        ctx.features = ctx.cache.get_or_build(method.name, key, lambda: method.prepare(key, ctx))
    if "torch" in sys.modules and os.environ.get("LORANK_WORKER_THREADS"):
        sys.modules["torch"].set_num_threads(int(os.environ["LORANK_WORKER_THREADS"]))


def execute_batch(configs: Sequence[RunConfig], ctx: RunContext) -> list[RunOutcome]:
    """Run a batch (:func:`batches`) in one call of its method: the runs of a grouped method
    with one :attr:`RunConfig.batch_key`, or a per-run method's single run (a batch of one);
    one outcome per run, in order. An exception of the call, or of resolving the method, fails
    every run of the batch; an exception returned for a run, a missing or malformed result,
    fails that run. Timings are the call's, shared by a grouped batch (``batch_runs`` says by
    how many). KeyboardInterrupt and SystemExit propagate."""
    start = time.perf_counter()
    timings = {"prepare_s": 0.0, "run_s": 0.0}
    builds = ctx.cache.builds
    raw: Mapping[str, Any] = {}
    error = trace = None
    try:
        method = get_method(configs[0].method)
        if method.grouped:
            timings["batch_runs"] = float(len(configs))
        elif len(configs) != 1:
            raise ValueError(f"a per-run method runs one config per batch, got {len(configs)}")
        _prepare(method, configs[0], ctx)
        timings["prepare_s"] = time.perf_counter() - start
        began = time.perf_counter()
        raw = (method.run(list(configs), ctx) if method.grouped else
               {configs[0].run_id: normalize_result(method.run(configs[0], ctx))})
        timings["run_s"] = time.perf_counter() - began
        if not isinstance(raw, Mapping):
            raise TypeError(f"a grouped method must return run id -> result, got "
                            f"{type(raw).__name__}")
    except Exception as exc:
        error, trace = _one_line(exc), tb.format_exc()
    finally:
        ctx.features = None
    timings["wall_s"] = time.perf_counter() - start
    built = ctx.cache.builds > builds
    out = []
    for i, config in enumerate(configs):
        result, why, where = None, error, trace
        if why is None:
            value = raw.get(config.run_id)
            try:
                if value is None:
                    raise LorankError(f"method {config.method!r} returned no result for this run")
                if isinstance(value, BaseException):
                    raise value
                result = normalize_result(value)
            except Exception as exc:
                why, where = _one_line(exc), tb.format_exc()
        out.append(RunOutcome(config.run_id, result, why, where, dict(timings),
                              package_versions(), hostname(), built and i == 0))
    return out


def batches(configs: Sequence[RunConfig]) -> list[list[RunConfig]]:
    """The runs of a group as the units the runners execute: the runs of a grouped method with
    one :attr:`RunConfig.batch_key` together (in order of first appearance), every other run
    alone, in order."""
    out: dict[tuple[str, str], list[RunConfig]] = {}
    for config in configs:
        slot = ((config.method, config.batch_key) if _grouped(config.method)
                else ("", config.run_id))
        out.setdefault(slot, []).append(config)
    return list(out.values())


def _grouped(name: str) -> bool:
    """Whether method ``name`` is grouped; False when it cannot be resolved here (e.g. a worker
    that cannot import it): each run is then a batch of its own, and :func:`execute_batch`
    stores the error as that run's failure instead of aborting the chunk."""
    try:
        return get_method(name).grouped
    except Exception:
        return False


def execute_chunk(configs: Sequence[RunConfig], ctx: RunContext,
                  emit: Callable[[RunOutcome], None] | None = None) -> list[RunOutcome]:
    """Execute already-claimed runs (one features group, or a chunk of one) batch by batch,
    handing each outcome to ``emit`` as soon as it exists; returns them all, in order."""
    out: list[RunOutcome] = []
    for batch in batches(configs):
        for outcome in execute_batch(batch, ctx):
            if emit is not None:
                emit(outcome)
            out.append(outcome)
    return out


def group_runs(configs: Sequence[RunConfig]) -> list[list[RunConfig]]:
    """Runs grouped by (method, features key); the groups of one (method, task, model, head)
    next to each other (a stable sort: otherwise in order of first appearance), so that a worker
    running them back to back reuses what does not depend on the seed — the frozen lower
    layers of the test split (:mod:`lorank.models.lower_cache`), whose LRU a seed-major order
    cycling through all tasks would thrash."""
    groups: dict[tuple[str, str], list[RunConfig]] = {}
    for config in configs:
        groups.setdefault((config.method, config.features_key.digest), []).append(config)
    first: dict[tuple[str, str, str, str], int] = {}
    for g in groups.values():
        first.setdefault((g[0].method, g[0].task, g[0].model, g[0].head), len(first))
    return sorted(groups.values(),
                  key=lambda g: first[(g[0].method, g[0].task, g[0].model, g[0].head)])


def validate_configs(configs: Sequence[RunConfig]) -> None:
    """Resolve every method and run its ``validate`` hook on each config (LorankError)."""
    for config in configs:
        method = get_method(config.method)
        if method.validate is not None:
            method.validate(config)


class _Tracker:
    """Writes outcomes to the store and keeps the summary and the progress bar current."""

    def __init__(self, store: ResultStore, summary: SweepSummary, pending: int, label: str,
                 progress: bool, retry_failed: bool) -> None:
        from lorank.progress import bar

        self.store, self.summary, self.retry_failed = store, summary, retry_failed
        self.git = git_state()
        self.in_flight: set[str] = set()
        self.info = ""
        self.bar = bar(pending, label, enabled=progress, unit="run", leave=True)
        self._postfix()

    def _postfix(self) -> None:
        left = self.bar.total - self.summary.done - self.summary.failed
        self.bar.set_postfix_str(f"done={self.summary.done} failed={self.summary.failed} "
                                 f"left={left}" + (f" | {self.info}" if self.info else ""),
                                 refresh=False)

    def refresh(self) -> None:
        self._postfix()
        self.bar.refresh()

    def claim(self, configs: Sequence[RunConfig]) -> list[RunConfig]:
        """The runs among ``configs`` this process claimed, in order (the others count busy)."""
        return [config for config in configs if self._claim(config)]

    def _claim(self, config: RunConfig) -> bool:
        # in_flight first: a stop that lands after the store commits the claim, before this
        # method returns, must still find the run to release (release only touches rows this
        # process holds ``running``, so listing one that was not claimed is harmless).
        self.in_flight.add(config.run_id)
        if self.store.claim(config.run_id, self.retry_failed):
            return True
        self.in_flight.discard(config.run_id)
        self.summary.busy += 1
        self.bar.total -= 1
        self.refresh()
        return False

    def record(self, outcome: RunOutcome) -> None:
        if outcome.run_id not in self.in_flight:
            return
        self.summary.feature_builds += int(outcome.built_features)
        if outcome.ok:
            self.store.finish(outcome.run_id, outcome.result, outcome.timings, outcome.versions,
                              self.git, outcome.host)
            self.summary.done += 1
        else:
            self.store.fail(outcome.run_id, outcome.error or "error", outcome.traceback or "",
                            outcome.timings, outcome.versions, self.git, outcome.host)
            self.summary.failed += 1
            self.summary.failures.append((outcome.run_id, outcome.error or "error"))
        self.in_flight.discard(outcome.run_id)
        self.info = ""
        self._postfix()
        self.bar.update(1)

    def lost(self, chunk: Sequence[RunConfig], error: str, trace: str,
             versions: dict[str, Any]) -> None:
        """Record every run of a chunk whose worker process or task was lost as failed."""
        for config in chunk:
            self.record(RunOutcome(config.run_id, None, error, trace, {}, versions, hostname()))

    def interrupt(self) -> None:
        self.summary.interrupted += self.store.release(sorted(self.in_flight))
        self.in_flight.clear()

    def close(self) -> None:
        self.bar.close()


class Runner(ABC):
    """Executes runs and stores them; subclasses implement :meth:`_execute`."""

    def __init__(self, *, cache_dir: str | Path | None = None,
                 data_dir: str | Path | None = None, device: str = "cpu",
                 progress: bool = True, feature_cache_size: int = 1) -> None:
        self.feature_cache_size = feature_cache_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.data_dir = Path(data_dir) if data_dir else None
        self.device = device
        self.progress = progress

    def run(self, configs: Sequence[RunConfig], store: ResultStore, *,
            retry_failed: bool = False, label: str = "sweep") -> SweepSummary:
        """Execute the claimable runs among ``configs`` and record them in ``store``."""
        start = time.perf_counter()
        validate_configs(configs)
        store.add(configs)
        summary = SweepSummary(total=len(configs))
        status = store.statuses([c.run_id for c in configs])
        pending = []
        for config in configs:
            state, owner = status[config.run_id]
            if store.claimable(state, owner, retry_failed):
                pending.append(config)
            elif state == "running":
                summary.busy += 1
            else:
                summary.skipped += 1
        tracker = _Tracker(store, summary, len(pending), label, self.progress, retry_failed)
        try:
            self._execute(group_runs(pending), tracker)
        except KeyboardInterrupt:
            tracker.interrupt()
            raise SweepInterrupted(summary) from None
        finally:
            tracker.close()
            summary.elapsed_s = time.perf_counter() - start
        final = store.statuses([c.run_id for c in configs])
        summary.not_done = sum(1 for c in configs if final.get(c.run_id, ("",))[0] != "done")
        return summary

    def context(self, progress: Callable[..., None] | None = None) -> RunContext:
        """A fresh :class:`RunContext` with this runner's folders and device."""
        ctx = RunContext(**self._ctx_args(), cache=FeatureCache(self.feature_cache_size))
        if progress is not None:
            ctx.progress = progress
        return ctx

    def _ctx_args(self) -> dict[str, Any]:
        """The picklable :class:`RunContext` arguments a worker process or task starts from."""
        return {"cache_dir": self.cache_dir, "data_dir": self.data_dir, "device": self.device}

    @abstractmethod
    def _execute(self, groups: list[list[RunConfig]], tracker: _Tracker) -> None:
        """Run every group, claiming each run first and recording each outcome."""


# -- local --------------------------------------------------------------------------------------
@contextmanager
def _thread_env(threads: int) -> Iterator[None]:
    """Set OMP/MKL/... thread counts (inherited by spawned workers), restored afterwards."""
    saved = {name: os.environ.get(name) for name in (*THREAD_ENV, "LORANK_WORKER_THREADS")}
    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    os.environ["LORANK_WORKER_THREADS"] = str(threads)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_WORKER: dict[str, Any] = {}


def _worker_init(queue: Any, modules: list[str], ctx_args: dict[str, Any]) -> None:
    """Pool worker start: ignore SIGINT (the coordinator stops the pool: a Ctrl-C to the
    process group must not make each worker print a traceback), import the method modules,
    keep the queue and a RunContext, and exit as soon as the coordinating process dies (even
    by SIGKILL): no orphans."""
    import importlib
    import multiprocessing as mp

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    parent = mp.parent_process()
    if parent is not None:
        def watch() -> None:
            parent.join()
            os._exit(1)

        threading.Thread(target=watch, name="lorank-parent-watch", daemon=True).start()

    for module in modules:
        with suppress(ImportError):  # get_method then reports the method as a failed run
            importlib.import_module(module)
    _WORKER["queue"] = queue
    _WORKER["ctx"] = RunContext(**ctx_args, cache=FeatureCache())


def _worker_chunk(configs: list[RunConfig]) -> list[RunOutcome]:
    """Run a chunk (one features group) in a pool worker, streaming each outcome."""
    _WORKER["ctx"].group = tuple(configs)
    return execute_chunk(configs, _WORKER["ctx"], _WORKER["queue"].put)


def split_groups(groups: list[list[RunConfig]], workers: int) -> list[list[RunConfig]]:
    """Chunks for ``workers`` processes: whole groups, halving the largest while there are
    fewer chunks than workers (then a group's features are built once per chunk)."""
    chunks = [list(g) for g in groups]
    while len(chunks) < workers:
        largest = max(range(len(chunks)), key=lambda i: len(chunks[i]), default=None)
        if largest is None or len(chunks[largest]) < 2:
            break
        chunk = chunks.pop(largest)
        half = (len(chunk) + 1) // 2
        chunks[largest:largest] = [chunk[:half], chunk[half:]]
    return chunks


class LocalRunner(Runner):
    """Runs on this machine: in-process (``workers=1``, default) or in a process pool.

    With ``workers = N > 1`` each worker is a spawned process with ``threads = cores // N``
    (OMP/MKL/OpenBLAS env vars and ``torch.set_num_threads``), executing whole features groups
    (split when there are fewer groups than workers) and streaming outcomes back.
    """

    def __init__(self, workers: int = 1, threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workers = check_positive_int("workers", workers)
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)

    def _execute(self, groups: list[list[RunConfig]], tracker: _Tracker) -> None:
        if self.workers == 1:
            self._sequential(groups, tracker)
        else:
            self._pool(groups, tracker)

    def _sequential(self, groups: list[list[RunConfig]], tracker: _Tracker) -> None:
        def progress(**info: Any) -> None:
            tracker.info = " ".join(f"{k}={v}" for k, v in info.items())
            tracker.refresh()

        ctx = self.context(progress)
        for group in groups:
            ctx.group = tuple(group)
            for batch in batches(group):  # claimed unit by unit: at most one batch in flight
                claimed = tracker.claim(batch)
                if claimed:
                    execute_chunk(claimed, ctx, tracker.record)

    def _pool(self, groups: list[list[RunConfig]], tracker: _Tracker) -> None:
        import multiprocessing as mp
        import queue as queue_mod
        from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        mpctx = mp.get_context("spawn")
        outcomes = mpctx.Queue()
        modules = sorted({get_method(c.method).module for g in groups for c in g})
        todo = split_groups(groups, self.workers)
        running: dict[Future, list[RunConfig]] = {}

        def drain(block_s: float) -> None:
            try:
                tracker.record(outcomes.get(timeout=block_s))
                while True:
                    tracker.record(outcomes.get_nowait())
            except queue_mod.Empty:
                pass

        def new_pool() -> ProcessPoolExecutor:
            return ProcessPoolExecutor(self.workers, mp_context=mpctx, initializer=_worker_init,
                                       initargs=(outcomes, modules, self._ctx_args()))

        with _thread_env(self.threads):
            pool = new_pool()
            try:
                while todo or running:
                    while todo and len(running) < self.workers:
                        chunk = tracker.claim(todo.pop(0))
                        if chunk:
                            running[pool.submit(_worker_chunk, chunk)] = chunk
                    drain(0.05)
                    finished, _ = wait(list(running), timeout=0.05, return_when=FIRST_COMPLETED)
                    for future in finished:
                        chunk = running.pop(future)
                        try:
                            for outcome in future.result():
                                tracker.record(outcome)
                        except BrokenProcessPool as exc:
                            tracker.lost(chunk, f"worker process died: {exc}", "",
                                         package_versions())
                            pool.shutdown(wait=False, cancel_futures=True)
                            pool = new_pool()
                drain(0.0)
            except BaseException:
                procs = list((getattr(pool, "_processes", None) or {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for proc in procs:
                    if proc.is_alive():
                        proc.terminate()
                raise
            pool.shutdown(wait=True)


# -- Ray ----------------------------------------------------------------------------------------
_RAY_CTX: dict[str, RunContext] = {}


def _ray_execute(configs: list[RunConfig], ctx_args: dict[str, Any]) -> list[RunOutcome]:
    """Body of a Ray task: one features group (or a chunk of one), like a pool worker's chunk,
    with a per-worker-process RunContext (feature cache). ``ctx.group`` lets a method share work
    across the chunk (the linearized method trains all its ranks in one vectorised call)."""
    slot = repr(sorted(ctx_args.items()))
    ctx = _RAY_CTX.get(slot)
    if ctx is None:
        ctx = _RAY_CTX[slot] = RunContext(**ctx_args, cache=FeatureCache())
    ctx.group = tuple(configs)
    return execute_chunk(configs, ctx)


def import_ray() -> Any:
    """``import ray`` or a one-line LorankError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise LorankError("the ray backend needs Ray: pip install 'ray[default]==2.60.0'") \
            from None
    return ray


class RayRunner(Runner):
    """Runs each features group as a Ray task with the largest ``num_cpus``/``num_gpus`` of its
    runs (groups are split, like the pool's, while there are fewer of them than task slots).

    ``address=None`` starts a local Ray instance (``num_cpus`` of this machine, or the given
    count) and shuts it down afterwards; an address (``"auto"``, ``"ray://host:10001"``,
    ``"host:6379"``) joins an existing cluster. Tasks are submitted in group order with at most
    ``max_in_flight`` outstanding; a worker process keeps its prepared features, and the runs of
    a group share one task, so a group's features are built once and the linearized method
    trains all ranks of a group in one vectorised call (one task per run measured 3.8× slower
    on the quick spec's SST-2 part: every rank re-trained and re-streamed the test split).
    A task's outcomes are stored when the task finishes; an interrupted sweep re-runs the
    groups that were in flight.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 max_in_flight: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.address = address
        self.num_cpus = num_cpus
        self.max_in_flight = max_in_flight

    def _start(self, ray: Any) -> bool:
        """Initialise Ray unless the caller has (True: this runner started it). The caller's
        Python SIGTERM handler in place (main thread only; e.g. the CLI's clean stop), which
        ``ray.init`` replaces with its own ``sys.exit``, is put back; SIG_DFL/SIG_IGN are left
        to Ray."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
        main = threading.current_thread() is threading.main_thread()
        sigterm = signal.getsignal(signal.SIGTERM) if main else None
        try:
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.num_cpus, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise LorankError(f"cannot start or reach Ray at {self.address or 'local'}: "
                              f"{_one_line(exc)}") from None
        except SystemExit as exc:  # Ray's own handler: a SIGTERM while ray.init ran
            if exc.code != signal.SIGTERM or not callable(sigterm):
                raise
            if ray.is_initialized():
                ray.shutdown()
            sigterm(signal.SIGTERM, None)  # the caller's clean stop (raises KeyboardInterrupt)
            raise
        finally:
            if callable(sigterm):
                signal.signal(signal.SIGTERM, sigterm)
        return True

    def _execute(self, groups: list[list[RunConfig]], tracker: _Tracker) -> None:
        ray = import_ray()
        if not groups:
            return
        started = self._start(ray)
        try:
            self._submit_all(ray, groups, tracker, cancel_on_stop=not started)
        finally:
            if started:
                ray.shutdown()

    def _submit_all(self, ray: Any, groups: list[list[RunConfig]], tracker: _Tracker,
                    cancel_on_stop: bool = True) -> None:
        """Submit the groups, ``max_in_flight`` at a time, and record outcomes as tasks finish.

        On a stop the claimed runs are released first; outstanding tasks are cancelled only
        when the caller had initialised Ray (``cancel_on_stop``). A connection this runner
        opened is shut down instead (a local instance with its workers; on a cluster, Ray ends
        a leaving driver's tasks), since ``ray.cancel`` racing a task's completion aborts the
        driver inside Ray (``Check failed: it != submissible_tasks_.end()``,
        ray-project/ray#54846; seen in about one stop in seven here). ``Runner.run`` releases
        again afterwards, a no-op by then.
        """
        task = ray.remote(_ray_execute)
        limit = self.max_in_flight or max(1, int(ray.cluster_resources().get("CPU", 1)))
        todo = split_groups(groups, limit)
        refs: dict[Any, list[RunConfig]] = {}
        try:
            while todo or refs:
                while todo and len(refs) < limit:
                    chunk = tracker.claim(todo.pop(0))
                    if not chunk:
                        continue
                    gpus = max(c.num_gpus for c in chunk)
                    args = dict(self._ctx_args(), device="cuda" if gpus > 0 else self.device)
                    ref = task.options(num_cpus=max(c.num_cpus for c in chunk),
                                       num_gpus=gpus).remote(chunk, args)
                    refs[ref] = chunk
                if not refs:
                    continue
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                for ref in ready:
                    chunk = refs.pop(ref)
                    try:
                        outcomes = ray.get(ref)
                    except Exception as exc:  # the task's process died (OOM, node loss)
                        tracker.lost(chunk, f"ray task lost: {_one_line(exc)}", tb.format_exc(),
                                     {})
                        continue
                    for outcome in outcomes:
                        tracker.record(outcome)
        except KeyboardInterrupt:
            tracker.interrupt()  # the store first: whatever Ray does next, nothing stays running
            if cancel_on_stop:
                for ref in refs:
                    ray.cancel(ref, force=True)
            raise


def make_runner(backend: str = "local", *, workers: int = 1, address: str | None = None,
                **kwargs: Any) -> Runner:
    """A runner by name: ``"local"`` (``workers``) or ``"ray"`` (``address``)."""
    if backend == "local":
        if address:
            raise LorankError("--ray-address needs --backend ray")
        return LocalRunner(workers=workers, **kwargs)
    if backend == "ray":
        check_positive_int("workers", workers)
        return RayRunner(address=address, num_cpus=workers if workers > 1 and not address
                         else None, **kwargs)
    raise LorankError(f"unknown backend {backend!r}; choose local or ray")
