"""Benchmark: batched C* estimator vs a loop over single instances (same solver, same instances).

Setting (issue #5): r = 1, m = n = 32 (d = 63), GD with the Hessian step, T = 1000 steps,
tol 1e-8, 200 instances per grid point, the default ratio grid (10 KN values).

* fast path: :func:`lorank.capacity.estimate_c_star` (chunks of 32 instances, one batched solve
  per chunk);
* baseline: the same instances solved one at a time (``solve_gd`` on a batch of one). Looping over
  all 2,000 instance-points would take many minutes, so the baseline runs the first
  ``--loop-instances`` instances of every grid point and is extrapolated per instance to 200
  (instances are exchangeable; the output says so).

Times are reported as wall and CPU (process) seconds; the speed-up uses CPU time, which is robust
to other jobs sharing the machine.

Run: ``python benchmarks/bench_capacity.py [--threads 2] [--instances 200] [--loop-instances 6]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lorank.capacity.estimator import DEFAULT_RATIOS, estimate_c_star, sweep_KN
from lorank.capacity.problems import gaussian_batch
from lorank.capacity.solvers import solve_gd
from lorank.theory import manifold_dim


def loop_baseline(r, m, n, steps, tol, instances, seed=0) -> tuple[float, float, list[int]]:
    """Wall s, CPU s and successes of solving ``instances`` per grid point one at a time."""
    KNs = sweep_KN(manifold_dim(r, m, n), DEFAULT_RATIOS)
    t0, c0 = time.perf_counter(), time.process_time()
    succ = []
    for KN in KNs:
        batch = gaussian_batch(r, m, n, KN, instances, seed)
        succ.append(sum(int(solve_gd(batch.select([i]), steps=steps, tol=tol).success[0])
                        for i in range(instances)))
    return time.perf_counter() - t0, time.process_time() - c0, succ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 2 threads on a busy 2-core machine is ~30x slower")
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--loop-instances", type=int, default=6)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--m", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    r, m, n, tol = 1, args.m, args.m, 1e-8
    print(f"r={r} m=n={m} d={manifold_dim(r, m, n)} GD(hessian) T={args.steps} tol={tol:g}, "
          f"{args.instances} instances x {len(DEFAULT_RATIOS)} ratios, torch threads "
          f"{args.threads}")

    t0, c0 = time.perf_counter(), time.process_time()
    res = estimate_c_star(r, m, n, solver="gd", steps=args.steps, tol=tol,
                          instances=args.instances, seed=0)
    t_batched, c_batched = time.perf_counter() - t0, time.process_time() - c0
    points = args.instances * len(res.curve.KN)
    per_batched = c_batched / points
    print(f"batched : {t_batched:7.1f} s wall, {c_batched:7.1f} s CPU "
          f"({per_batched * 1e3:.2f} ms CPU per instance-point); "
          f"C50 = {res.c50:.4f} [{res.ci_low:.4f}, {res.ci_high:.4f}]")
    print(f"          success counts {list(res.curve.successes)} at KN {list(res.curve.KN)}")

    t_loop, c_loop, succ = loop_baseline(r, m, n, args.steps, tol, args.loop_instances)
    per_loop = c_loop / (args.loop_instances * len(res.curve.KN))
    print(f"loop    : {t_loop:7.1f} s wall, {c_loop:7.1f} s CPU for the first "
          f"{args.loop_instances} instances per point ({per_loop * 1e3:.2f} ms CPU per "
          f"instance-point); EXTRAPOLATED to {args.instances} instances: "
          f"{per_loop * points:.1f} s CPU")
    first = [int(np.sum(x)) for x in succ]
    print(f"          loop successes on its subset: {first}")
    print(f"speed-up (CPU per instance-point, loop / batched): {per_loop / per_batched:.1f}x")


if __name__ == "__main__":
    main()
