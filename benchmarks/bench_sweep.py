"""Benchmark of the sweep machinery (lorank.experiments), fast path vs baseline in one process.

1. Feature groups: runs sharing a features key reuse one ``prepare`` (a Gram matrix
   K = X Xᵀ of seeded random features, standing in for the empirical NTK of a rank sweep), against
   the baseline that prepares for every run (feature cache of size 0).
2. Store overhead: wall time per trivial run (claim + result, two SQLite transactions each)
   through the in-process runner, and the bare method call for comparison.

The benchmark methods below are registered only in this script. Run:
``python benchmarks/bench_sweep.py [--quick] [--ranks 12] [--groups 4] [--n 400] [--p 20000]``
(``--quick``: 6 ranks x 2 groups, p = 5000, 100 trivial runs). The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from lorank.experiments import LocalRunner, ResultStore, RunConfig, register_method


def gram(key, ctx):
    """K = X Xᵀ / p for X ∈ R^{n×p} seeded by the key (the expensive, shared part)."""
    n, p = ctx_dims["n"], ctx_dims["p"]
    rng = np.random.default_rng([key.seed, len(key.task)])
    X = rng.standard_normal((n, p), dtype=np.float32)
    return (X @ X.T) / p


ctx_dims = {"n": 400, "p": 20000}


@register_method("bench_kernel_ridge", prepare=gram)
def kernel_ridge(config, ctx):
    """Kernel ridge on the shared Gram matrix with ridge 10^-rank/4 (cheap per run)."""
    K = ctx.features
    y = np.sign(np.random.default_rng(config.seed).standard_normal(K.shape[0]))
    alpha = np.linalg.solve(K + 10.0 ** (-config.rank / 4) * np.eye(K.shape[0]), y)
    return {"metrics": {"train_mse": float(np.mean((K @ alpha - y) ** 2))}}


@register_method("bench_noop")
def noop(config, ctx):
    return {"metrics": {"rank": config.rank}}


def configs(method: str, groups: int, ranks: int) -> list[RunConfig]:
    return [RunConfig(sweep="bench", method=method, task="sst2", model="minilm", rank=r, seed=s)
            for s in range(groups) for r in range(1, ranks + 1)]


def timed_sweep(runs: list[RunConfig], cache_size: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp, ResultStore(Path(tmp) / "b.sqlite") as store:
        start = time.perf_counter()
        summary = LocalRunner(progress=False, feature_cache_size=cache_size).run(runs, store)
        assert summary.done == len(runs), summary.line()
        return time.perf_counter() - start, summary.feature_builds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ranks", type=int, default=12)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--p", type=int, default=20000)
    parser.add_argument("--trivial", type=int, default=300)
    args = parser.parse_args()
    if args.quick:
        args.ranks, args.groups, args.p, args.trivial = 6, 2, 5000, 100
    ctx_dims.update(n=args.n, p=args.p)
    with threadpool_limits(1):
        runs = configs("bench_kernel_ridge", args.groups, args.ranks)
        grouped, g_builds = timed_sweep(runs, cache_size=1)
        baseline, b_builds = timed_sweep(runs, cache_size=0)
        print(f"feature groups: {len(runs)} runs in {args.groups} groups, "
              f"X {args.n}x{args.p}: grouped {grouped:.2f} s ({g_builds} prepares), "
              f"per-run prepare {baseline:.2f} s ({b_builds} prepares), "
              f"speed-up x{baseline / grouped:.1f}")
        trivial = configs("bench_noop", 1, args.trivial)
        wall, _ = timed_sweep(trivial, cache_size=1)
        start = time.perf_counter()
        for config in trivial:
            noop(config, None)
        bare = time.perf_counter() - start
        print(f"store overhead: {args.trivial} trivial runs in {wall:.2f} s = "
              f"{1000 * wall / args.trivial:.2f} ms/run (bare calls "
              f"{1e6 * bare / args.trivial:.1f} us/run)")
    print(json.dumps({"bench": "sweep", "runs": len(runs), "groups": args.groups, "n": args.n,
                      "p": args.p, "grouped_s": grouped, "grouped_prepares": g_builds,
                      "baseline_s": baseline, "baseline_prepares": b_builds,
                      "ratio": baseline / grouped, "ideal_ratio": args.ranks,
                      "trivial_runs": args.trivial, "ms_per_run": 1000 * wall / args.trivial,
                      "bare_us_per_run": 1e6 * bare / args.trivial}))


if __name__ == "__main__":
    main()
