"""Benchmark: the C* estimator (compiled and batched torch) vs a loop over single instances.

Setting (issue #5): r = 1, m = n = 32 (d = 63), GD with the Hessian step, T = 1000 steps,
tol 1e-8, 200 instances per grid point, the default ratio grid (10 KN values).

* fast path: :func:`lorank.capacity.estimate_c_star` with ``backend="numba"`` (each instance's
  step loop compiled, instances spread over threads), on 1 thread (CPU time, the ratio) and on
  ``--threads-wall`` threads (the wall time on 2 cores);
* the batched torch path (``backend="torch"``: chunks of 32 instances, one batched solve per
  chunk, 1 thread), the previous fast path;
* baseline: the same instances solved one at a time by the torch solver (``solve_gd`` on a batch
  of one). Looping over all 2,000 instance-points would take many minutes, so the baseline runs
  the first ``--loop-instances`` instances of every grid point and is extrapolated by its CPU
  time per GD step times the steps all instances take (counted in an untimed compiled pass; the
  output says so). Extrapolating per instance-point instead is noisier: a handful of instances
  per point stop earlier or later than the average.

The speed-up compares CPU times, which is robust to other jobs sharing the machine.
The compiled kernel is compiled (or loaded from numba's cache) before anything is timed. The last
stdout line is JSON (for run.py).

Run: ``python benchmarks/bench_capacity.py [--quick] [--instances 200] [--loop-instances 6]
[--threads-wall 2] [--no-torch-batched]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lorank.capacity.estimator import DEFAULT_RATIOS, CStarConfig, estimate_c_star, sweep_KN
from lorank.capacity.problems import gaussian_batch
from lorank.capacity.solvers import solve, solve_gd
from lorank.theory import manifold_dim


def loop_baseline(r, m, n, steps, tol, instances, seed=0
                  ) -> tuple[float, float, list[int], int]:
    """Wall s, CPU s, successes and GD steps taken of solving ``instances`` per grid point one
    at a time (the torch solver on a batch of one)."""
    KNs = sweep_KN(manifold_dim(r, m, n), DEFAULT_RATIOS)
    t0, c0 = time.perf_counter(), time.process_time()
    succ, taken = [], 0
    for KN in KNs:
        batch = gaussian_batch(r, m, n, KN, instances, seed)
        ok = 0
        for i in range(instances):
            res = solve_gd(batch.select([i]), steps=steps, tol=tol, backend="torch")
            ok += int(res.success[0])
            taken += int(res.steps[0])
        succ.append(ok)
    return time.perf_counter() - t0, time.process_time() - c0, succ, taken


def steps_of_all(r, m, n, steps, tol, instances, seed=0) -> int:
    """GD steps taken by all instances of the sweep (untimed; the compiled solver, whose stop
    steps equal the torch solver's up to float32 rounding at the tolerance)."""
    return sum(int(solve(gaussian_batch(r, m, n, KN, instances, seed), "gd", backend="numba",
                         steps=steps, tol=tol).steps.sum())
               for KN in sweep_KN(manifold_dim(r, m, n), DEFAULT_RATIOS))


def _timed(threads: int, **kw):
    torch.set_num_threads(threads)
    t0, c0 = time.perf_counter(), time.process_time()
    res = estimate_c_star(CStarConfig(**kw))
    return res, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="100 instances per point, 3 looped (about a minute; 32 instances "
                         "gave ratios within ±20 %% of the full run, too noisy for the target)")
    ap.add_argument("--threads-wall", type=int, default=2,
                    help="threads of the compiled run timed for wall time")
    ap.add_argument("--instances", type=int, default=None)
    ap.add_argument("--loop-instances", type=int, default=None)
    ap.add_argument("--no-torch-batched", action="store_true",
                    help="skip the batched torch run (the slowest part of the benchmark)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--m", type=int, default=32)
    args = ap.parse_args()
    instances = args.instances or (100 if args.quick else 200)
    loop_n = args.loop_instances or (3 if args.quick else 6)
    r, m, n, tol = 1, args.m, args.m, 1e-8
    print(f"r={r} m=n={m} d={manifold_dim(r, m, n)} GD(hessian) T={args.steps} tol={tol:g}, "
          f"{instances} instances x {len(DEFAULT_RATIOS)} ratios; float32", flush=True)
    common = dict(r=r, m=m, n=n, solver="gd", steps=args.steps, tol=tol, instances=instances,
                  seed=0)
    t0 = time.perf_counter()
    solve_gd(gaussian_batch(1, 4, 4, 3, 1, 0), steps=2, backend="numba")
    print(f"numba kernel compiled or loaded from cache: {time.perf_counter() - t0:.1f} s")

    res, t_c, c_c = _timed(1, backend="numba", **common)
    points = instances * len(res.curve.KN)
    per_c = c_c / points
    print(f"compiled, 1 thread : {t_c:7.1f} s wall, {c_c:7.1f} s CPU "
          f"({per_c * 1e3:.2f} ms CPU per instance-point); "
          f"C50 = {res.c50:.4f} [{res.ci_low:.4f}, {res.ci_high:.4f}]")
    print(f"          success counts {list(res.curve.successes)} at KN {list(res.curve.KN)}",
          flush=True)
    par, t_w, c_w = _timed(args.threads_wall, backend="numba", **common)
    print(f"compiled, {args.threads_wall} threads: {t_w:7.1f} s wall, {c_w:7.1f} s CPU "
          f"(same curve: {par.curve == res.curve})", flush=True)
    t_b = c_b = None
    if not args.no_torch_batched:
        tb, t_b, c_b = _timed(1, backend="torch", **common)
        print(f"torch batched      : {t_b:7.1f} s wall, {c_b:7.1f} s CPU "
              f"({c_b / points * 1e3:.2f} ms CPU per instance-point); successes "
              f"{list(tb.curve.successes)}", flush=True)

    torch.set_num_threads(1)
    t_loop, c_loop, succ, loop_steps = loop_baseline(r, m, n, args.steps, tol, loop_n)
    per_loop = c_loop / (loop_n * len(res.curve.KN))
    total_steps = steps_of_all(r, m, n, args.steps, tol, instances)
    loop_est = c_loop / loop_steps * total_steps  # the loop over every instance, per GD step
    print(f"loop (torch, one instance at a time): {t_loop:7.1f} s wall, {c_loop:7.1f} s CPU for "
          f"the first {loop_n} instances per point ({loop_steps} GD steps, "
          f"{c_loop / loop_steps * 1e3:.3f} ms CPU per step; {per_loop * 1e3:.2f} ms per "
          f"instance-point)")
    print(f"          loop successes on its subset: {succ}")
    print(f"          EXTRAPOLATED to all {points} instance-points: {loop_est:.1f} s CPU "
          f"(per GD step x the {total_steps} steps they take; per instance-point: "
          f"{per_loop * points:.1f} s — noisier, the subset's stop steps are not the average)")
    ratio = loop_est / c_c
    print(f"speed-up, compiled vs loop (CPU): {ratio:.1f}x; wall on {args.threads_wall} "
          f"threads vs the loop's extrapolated wall: {loop_est / t_w:.1f}x")
    if c_b is not None:
        print(f"speed-up, torch batched vs loop: {loop_est / c_b:.1f}x; compiled vs "
              f"torch batched: {c_b / c_c:.1f}x")
    print(json.dumps({
        "bench": "capacity", "r": r, "m": m, "steps": args.steps, "instances": instances,
        "grid_points": len(res.curve.KN), "compiled_wall_s": t_c, "compiled_cpu_s": c_c,
        "threads_wall": args.threads_wall, "compiled_threads_wall_s": t_w,
        "torch_batched_wall_s": t_b, "torch_batched_cpu_s": c_b,
        "loop_instances": loop_n, "loop_cpu_per_point_ms": per_loop * 1e3,
        "loop_steps": loop_steps, "loop_cpu_per_step_ms": c_loop / loop_steps * 1e3,
        "total_steps": total_steps, "compiled_cpu_per_point_ms": per_c * 1e3,
        "loop_extrapolated_cpu_s": loop_est,
        "loop_extrapolated_per_point_cpu_s": per_loop * points,
        "ratio": ratio, "wall_ratio": loop_est / t_w, "c50": res.c50,
        "ci": [res.ci_low, res.ci_high], "successes": list(res.curve.successes),
        "KN": list(res.curve.KN)}))


if __name__ == "__main__":
    main()
