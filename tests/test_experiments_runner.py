"""Runners: the real ``prescribe`` method, feature groups, failures, pool and Ray backends.

Two test methods are registered here (test-only, deterministic numpy work, not engine
stand-ins): ``test_runner_lstsq`` (a seeded least-squares fit whose ``prepare`` draws the
design matrix once per features key) and ``test_runner_solve`` (solves an exactly singular
system for rank < 8, which raises numpy's LinAlgError).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from lorank.errors import LorankError
from lorank.experiments import (
    LocalRunner,
    ResultStore,
    RunConfig,
    get_method,
    make_runner,
    parse_spec,
    register_method,
)
from lorank.experiments.runners import group_runs, split_groups
from lorank.theory import prescribe

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def design(key, ctx):
    """Features of a key: a seeded 200×40 design matrix (drawn once per key and process)."""
    rng = np.random.default_rng([key.seed, len(key.task)])
    return rng.standard_normal((200, 40))


@register_method("test_runner_lstsq", prepare=design)
def lstsq_method(config, ctx):
    X = ctx.features
    rng = np.random.default_rng([config.seed, config.rank])
    y = X[:, : config.rank] @ rng.standard_normal(config.rank) + 0.1 * rng.standard_normal(200)
    with threadpool_limits(1):
        coef, residual, *_ = np.linalg.lstsq(X[:, : config.rank * 2], y, rcond=None)
    return {"metrics": {"residual": float(residual[0]), "norm": float(np.linalg.norm(coef))},
            "curves": {"coef": coef[:3].tolist()}}


@register_method("test_runner_solve")
def solve_method(config, ctx):
    A = np.diag([1.0 if i < config.rank else 0.0 for i in range(8)])
    return {"metrics": {"x0": float(np.linalg.solve(A, np.ones(8))[0])}}


@register_method("test_runner_group")
def group_method(config, ctx):
    return {"metrics": {"group": len(ctx.group), "in_group": config in ctx.group}}


@register_method("test_runner_batch", grouped=True)
def batch_method(runs, ctx):
    """Every run of the batch in one call: records the batch's ranks, the call's process and
    a per-call counter; rank 3 comes back as an exception (fails alone), rank 5 not at all."""
    batch_method.calls += 1
    if any(run.option("explode") for run in runs):
        raise RuntimeError("the whole batch failed")
    out = {run.run_id: {"metrics": {"ranks": sorted(r.rank for r in runs), "pid": os.getpid(),
                                    "steps": run.steps}} for run in runs if run.rank != 5}
    out.update({run.run_id: ValueError(f"rank {run.rank} is bad") for run in runs
                if run.rank == 3})
    return out


batch_method.calls = 0


def sweep(method, ranks=(1, 2, 4), tasks=("sst2", "mnli"), seeds=(13,), **base):
    return parse_spec({"name": "t", "base": {"model": "minilm", **base},
                       "grid": {"method": [method], "task": list(tasks), "rank": list(ranks),
                                "seed": list(seeds)}}).runs


def test_prescribe_runs_match_closed_forms(tmp_path):
    runs = sweep("prescribe", ranks=(1, 12), layers="last")
    with ResultStore(tmp_path / "r.sqlite") as store:
        summary = LocalRunner(progress=False).run(runs, store)
        assert summary.done == 4 and summary.failed == 0
        assert summary.feature_builds == 2  # one per (task, seed) group, not per run
        recs = {(r.config["task"], r.config["rank"]): r for r in store.query()}
    # MiniLM, last layer, query+value: two 384×384 matrices
    shapes = [(384, 384), (384, 384)]
    for task, K, N in (("sst2", 2, 32), ("mnli", 3, 48)):
        p = prescribe(K, N, shapes)
        for r in (1, 12):
            m = recs[(task, r)].metrics
            assert (m["K"], m["N"], m["matrices"]) == (K, N, 2)
            assert m["sard_exact"] == p.sard_exact and m["sard_rounded"] == p.sard_rounded
            assert m["manifold_total"] == p.manifold_total
            assert m["lora_params"] == r * 768 * 2
            assert m["manifold_dim_total"] == 2 * (r * 768 - r * r)
            assert m["meets_sard"] == (r * (r + 1) / 2 > K * N)
            assert recs[(task, r)].curves["manifold_dim_total"][-1] == m["manifold_dim_total"]
    assert recs[("sst2", 1)].metrics["sard_exact"] == 11  # r(r+1)/2 > 64 (docs/science.md)
    assert recs[("mnli", 12)].metrics["sard_exact"] == 17


def test_prescribe_validation_rejects_unknown_task(tmp_path):
    runs = sweep("prescribe", tasks=("sst-7",))
    with ResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(LorankError, match="unknown task 'sst-7'"):
            LocalRunner(progress=False).run(runs, store)
        assert store.query() == []  # nothing queued for a sweep that cannot start


def test_unavailable_and_unknown_methods(monkeypatch):
    from lorank.experiments import registry

    monkeypatch.setitem(registry.METHOD_PROVIDERS, "ghost", "lorank.no_such_engine")
    with pytest.raises(LorankError, match="not available: its engine module"):
        get_method("ghost")
    for name in ("prescribe", "linearized", "lora", "cstar"):  # the shipped engines resolve
        assert get_method(name).name == name
    with pytest.raises(LorankError, match="unknown method 'nope'"):
        get_method("nope")
    with pytest.raises(LorankError, match="already registered"):
        register_method("prescribe")(lambda c, ctx: {})
    with pytest.raises(LorankError, match="method name"):
        register_method("Bad Name")


def test_failed_runs_are_stored_and_the_sweep_goes_on(tmp_path):
    runs = sweep("test_runner_solve", ranks=(2, 8, 4), tasks=("sst2",))
    with ResultStore(tmp_path / "r.sqlite") as store:
        summary = LocalRunner(progress=False).run(runs, store)
        assert (summary.done, summary.failed) == (1, 2)
        by_rank = {r.config["rank"]: r for r in store.query()}
        assert by_rank[8].status == "done" and by_rank[8].metrics == {"x0": 1.0}
        bad = by_rank[2]
        assert bad.status == "failed" and bad.error == "LinAlgError: Singular matrix"
        assert "Traceback" in bad.traceback and "solve_method" in bad.traceback
        assert bad.metrics is None and bad.finished_at is not None
        again = LocalRunner(progress=False).run(runs, store)
        assert (again.skipped, again.done, again.failed) == (3, 0, 0)
        retry = LocalRunner(progress=False).run(runs, store, retry_failed=True)
        assert (retry.skipped, retry.failed) == (1, 2)
        assert store.get(bad.run_id).attempts == 2
        assert len(store.query()) == 3


def test_grouping_and_chunking():
    runs = sweep("test_runner_lstsq", ranks=(1, 2, 3), tasks=("sst2", "rte"), seeds=(1, 2))
    groups = group_runs(list(reversed(runs)))
    assert len(groups) == 4 and all(len(g) == 3 for g in groups)
    assert all(len({c.features_key for c in g}) == 1 for g in groups)
    # seed-major input (task cycles fastest): one task's groups come out adjacent, seeds in order
    seed_major = sorted(runs, key=lambda c: (c.seed, c.task))
    assert [(g[0].task, g[0].seed) for g in group_runs(seed_major)] == [
        ("rte", 1), ("rte", 2), ("sst2", 1), ("sst2", 2)]
    chunks = split_groups(groups[:1], 2)
    assert [len(c) for c in chunks] == [2, 1]
    assert split_groups(groups, 2) == groups
    assert [len(c) for c in split_groups([groups[0][:1]], 4)] == [1]


@pytest.mark.parametrize("workers", [1, 2])
def test_grouped_method_gets_each_batch_in_one_call(tmp_path, workers):
    """The runners form the batches (runs that differ only in their rank), call a grouped
    method once per batch, and store each run's result — or its own failure."""
    runs = (sweep("test_runner_batch", ranks=(1, 2, 4), tasks=("sst2",), steps=10)
            + sweep("test_runner_batch", ranks=(1, 8), tasks=("sst2",), steps=20)
            + sweep("test_runner_batch", ranks=(3, 5), tasks=("rte",), steps=30))
    batch_method.calls = 0
    with ResultStore(tmp_path / "r.sqlite") as store:
        summary = LocalRunner(workers=workers, progress=False).run(runs, store)
        recs = {(r.config["task"], r.config["steps"], r.config["rank"]): r
                for r in store.query()}
    assert summary.done == 5 and summary.failed == 2
    # one features group for sst2, split by the settings (steps) into two batches
    assert recs[("sst2", 10, 2)].metrics["ranks"] == [1, 2, 4]
    assert recs[("sst2", 20, 8)].metrics["ranks"] == [1, 8]
    assert recs[("sst2", 10, 2)].timings["batch_runs"] == 3
    assert recs[("rte", 30, 3)].status == "failed"
    assert "ValueError: rank 3 is bad" in recs[("rte", 30, 3)].error
    assert "returned no result for this run" in recs[("rte", 30, 5)].error
    if workers == 1:
        assert batch_method.calls == 3  # in this process: one call per batch


def test_grouped_method_failure_fails_its_batch_only(tmp_path):
    runs = (sweep("test_runner_batch", ranks=(1, 2), tasks=("sst2",),
                  options={"explode": True})
            + sweep("test_runner_batch", ranks=(1, 2), tasks=("rte",)))
    with ResultStore(tmp_path / "r.sqlite") as store:
        summary = LocalRunner(progress=False).run(runs, store)
        by_task = {}
        for r in store.query():
            by_task.setdefault(r.config["task"], set()).add((r.status, r.error))
    assert summary.done == 2 and summary.failed == 2
    assert by_task["sst2"] == {("failed", "RuntimeError: the whole batch failed")}
    assert by_task["rte"] == {("done", None)}


def test_batches_keep_per_run_methods_apart():
    from lorank.experiments.runners import batches

    per_run = sweep("test_runner_lstsq", ranks=(1, 2), tasks=("sst2",))
    grouped = sweep("test_runner_batch", ranks=(1, 2), tasks=("sst2",))
    assert [len(b) for b in batches(per_run)] == [1, 1]
    assert [len(b) for b in batches(grouped)] == [2]


def _results(store):
    return {r.run_id: (r.status, r.metrics, r.curves) for r in store.query()}


def test_process_pool_matches_sequential(tmp_path):
    runs = sweep("test_runner_lstsq", ranks=(1, 2, 3, 4), tasks=("sst2", "rte"))
    with ResultStore(tmp_path / "a.sqlite") as a, ResultStore(tmp_path / "b.sqlite") as b:
        seq = LocalRunner(progress=False).run(runs, a)
        pool = LocalRunner(workers=2, progress=False).run(runs, b)
        assert seq.done == pool.done == 8
        assert seq.feature_builds == 2 and pool.feature_builds == 2
        ra, rb = _results(a), _results(b)
    assert ra.keys() == rb.keys()
    for run_id, (status, metrics, curves) in ra.items():
        assert status == rb[run_id][0] == "done"
        assert metrics == pytest.approx(rb[run_id][1], rel=1e-10)
        assert curves["coef"] == pytest.approx(rb[run_id][2]["coef"], rel=1e-10)


def test_runner_argument_errors():
    with pytest.raises(LorankError, match="workers must be a positive integer"):
        LocalRunner(workers=0)
    with pytest.raises(LorankError, match="unknown backend"):
        make_runner("dask")
    with pytest.raises(LorankError, match="needs --backend ray"):
        make_runner("local", address="auto")


def test_ray_task_runs_a_whole_group_in_one_context():
    """A Ray task is a features group, like a pool chunk: the method sees the whole group
    (the linearized method then trains all its ranks in one vectorised call)."""
    from lorank.experiments.runners import _ray_execute

    runs = sweep("test_runner_group", ranks=(1, 4, 12), tasks=("sst2",))
    (group,) = group_runs(runs)
    outcomes = _ray_execute(group, {"cache_dir": None, "data_dir": None, "device": "cpu"})
    assert [o.run_id for o in outcomes] == [c.run_id for c in group]
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    assert all(o.result.metrics == {"group": 3, "in_group": True} for o in outcomes)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
@pytest.mark.timeout(120)
def test_ray_runner_matches_local(tmp_path):
    import ray

    from lorank.experiments import RayRunner

    runs = sweep("prescribe", ranks=(1, 4, 12), tasks=("sst2", "mnli"))
    runs = [RunConfig(**{**c.to_dict(), "num_cpus": 0.5}) for c in runs]
    with ResultStore(tmp_path / "a.sqlite") as a, ResultStore(tmp_path / "b.sqlite") as b:
        local = LocalRunner(progress=False).run(runs, a)
        runner = RayRunner(num_cpus=2, progress=False)
        ray_summary = runner.run(runs, b)  # starts a local Ray instance and shuts it down
        assert not ray.is_initialized()
        assert local.done == ray_summary.done == 6 and ray_summary.failed == 0
        assert _results(a) == _results(b)
        assert {r.host for r in b.query()} == {r.host for r in a.query()}
        again = runner.run(runs, b)
        assert again.skipped == 6 and again.done == 0  # nothing left: Ray is not even started


def test_a_method_a_worker_cannot_resolve_fails_its_runs_not_the_chunk():
    """A chunk whose method cannot be resolved in the worker stores each run as failed (the
    error in one line) instead of aborting the sweep with runs left running."""
    from lorank.experiments.config import RunConfig
    from lorank.experiments.registry import RunContext
    from lorank.experiments.runners import batches, execute_chunk

    runs = [RunConfig(sweep="t", method="no_such_method", task="sst2", model="minilm", rank=r,
                      seed=13) for r in (1, 2)]
    assert [len(b) for b in batches(runs)] == [1, 1]
    outcomes = []
    execute_chunk(runs, RunContext(), outcomes.append)
    assert [o.run_id for o in outcomes] == [r.run_id for r in runs]
    assert all(not o.ok and "unknown method 'no_such_method'" in o.error for o in outcomes)


def test_per_run_isolates_a_failing_run():
    from lorank.experiments.registry import per_run

    runs = sweep("test_runner_batch", ranks=(1, 2, 3), tasks=("sst2",))

    def cell(run):
        if run.rank == 2:
            raise ValueError("rank 2 broke")
        return {"metrics": {"r": run.rank}}

    out = per_run(runs, cell)
    assert out[runs[0].run_id] == {"metrics": {"r": 1}}
    assert isinstance(out[runs[1].run_id], ValueError)
    assert out[runs[2].run_id] == {"metrics": {"r": 3}}


def test_execute_batch_runs_a_per_run_method_one_config_at_a_time():
    """A per-run method's batch is one run; handing it several fails them all (no run may get
    another run's features), and a single run still gets its result."""
    from lorank.experiments.registry import RunContext
    from lorank.experiments.runners import execute_batch

    runs = sweep("test_runner_solve", ranks=(8, 9), tasks=("sst2",))
    [one] = execute_batch(runs[:1], RunContext())
    assert one.ok and one.result.metrics["x0"] == 1.0 and "batch_runs" not in one.timings
    both = execute_batch(runs, RunContext())
    assert [o.ok for o in both] == [False, False]
    assert all("one config per batch" in o.error for o in both)
