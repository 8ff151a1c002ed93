"""Benchmark: batched C* estimator vs a loop over single instances (same solver, same instances).

Setting (issue #5): r = 1, m = n = 32 (d = 63), GD with the Hessian step, T = 1000 steps,
tol 1e-8, 200 instances per grid point, the default ratio grid (10 KN values).

* fast path: :func:`lorank.capacity.estimate_c_star` (chunks of 32 instances, one batched solve
  per chunk), once in this process (CPU time, the ratio) and once with ``workers=2`` (grid points
  in two spawned processes: the wall time on two cores);
* baseline: the same instances solved one at a time (``solve_gd`` on a batch of one). Looping over
  all 2,000 instance-points would take many minutes, so the baseline runs the first
  ``--loop-instances`` instances of every grid point and is extrapolated per instance (instances
  are exchangeable; the output says so).

The speed-up uses CPU time per instance-point, which is robust to other jobs sharing the machine.
The last stdout line is JSON (for run.py).

Run: ``python benchmarks/bench_capacity.py [--quick] [--threads 1] [--instances 200]
[--loop-instances 6] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import json
import time

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
    ap.add_argument("--quick", action="store_true",
                    help="32 instances per point, 2 looped (about 1-2 minutes)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 2 threads on a busy 2-core machine is ~30x slower")
    ap.add_argument("--instances", type=int, default=None)
    ap.add_argument("--loop-instances", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2, help="processes for the wall-time run")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--m", type=int, default=32)
    args = ap.parse_args()
    instances = args.instances or (32 if args.quick else 200)
    loop_n = args.loop_instances or (2 if args.quick else 6)
    torch.set_num_threads(args.threads)
    r, m, n, tol = 1, args.m, args.m, 1e-8
    print(f"r={r} m=n={m} d={manifold_dim(r, m, n)} GD(hessian) T={args.steps} tol={tol:g}, "
          f"{instances} instances x {len(DEFAULT_RATIOS)} ratios, torch threads "
          f"{args.threads}", flush=True)
    common = dict(solver="gd", steps=args.steps, tol=tol, instances=instances, seed=0)

    t0, c0 = time.perf_counter(), time.process_time()
    res = estimate_c_star(r, m, n, **common)
    t_batched, c_batched = time.perf_counter() - t0, time.process_time() - c0
    points = instances * len(res.curve.KN)
    per_batched = c_batched / points
    print(f"batched : {t_batched:7.1f} s wall, {c_batched:7.1f} s CPU "
          f"({per_batched * 1e3:.2f} ms CPU per instance-point); "
          f"C50 = {res.c50:.4f} [{res.ci_low:.4f}, {res.ci_high:.4f}]")
    print(f"          success counts {list(res.curve.successes)} at KN {list(res.curve.KN)}",
          flush=True)
    t_par = None
    if args.workers > 1:
        t0 = time.perf_counter()
        par = estimate_c_star(r, m, n, workers=args.workers, **common)
        t_par = time.perf_counter() - t0
        same = par.curve == res.curve and par.c50 == res.c50
        print(f"batched, {args.workers} worker processes: {t_par:7.1f} s wall "
              f"(same curve and C50: {same})", flush=True)

    t_loop, c_loop, succ = loop_baseline(r, m, n, args.steps, tol, loop_n)
    per_loop = c_loop / (loop_n * len(res.curve.KN))
    print(f"loop    : {t_loop:7.1f} s wall, {c_loop:7.1f} s CPU for the first "
          f"{loop_n} instances per point ({per_loop * 1e3:.2f} ms CPU per "
          f"instance-point); EXTRAPOLATED to {instances} instances: "
          f"{per_loop * points:.1f} s CPU")
    print(f"          loop successes on its subset: {succ}")
    ratio = per_loop / per_batched
    print(f"speed-up (CPU per instance-point, loop / batched): {ratio:.1f}x")
    print(json.dumps({
        "bench": "capacity", "r": r, "m": m, "steps": args.steps, "instances": instances,
        "grid_points": len(res.curve.KN), "batched_wall_s": t_batched,
        "batched_cpu_s": c_batched, "workers": args.workers, "workers_wall_s": t_par,
        "loop_instances": loop_n, "loop_cpu_per_point_ms": per_loop * 1e3,
        "batched_cpu_per_point_ms": per_batched * 1e3, "loop_extrapolated_cpu_s": per_loop * points,
        "ratio": ratio, "c50": res.c50, "ci": [res.ci_low, res.ci_high],
        "successes": list(res.curve.successes), "KN": list(res.curve.KN)}))


if __name__ == "__main__":
    main()
