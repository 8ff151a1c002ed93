"""Linearized-LoRA sweep benchmark: R ranks x S seeds trained in ONE vectorised run versus the
same runs trained one at a time (same engine, C = 1), side by side, full-batch GD (issue #4).

    python benchmarks/bench_linearized.py [--quick] [--ranks 1,2,4,8,12,16] [--seeds 5]
        [--steps 1000] [--batched-steps 40] [--baseline-steps 40] [--lrs 0.05]
        [--N 32] [--K 2] [--m 384] [--n 384] [--blocks 2] [--device cpu] [--one-split]

Features are Gaussian with the shapes of MiniLM's last-layer q,v on 16-shot SST-2 (N = 32,
K = 2, two 384x384 blocks: P = 294,912); per-step cost does not depend on the values. Both paths
run a few steps (dev evaluation every 50 steps, as in ``lorank train``) and are scaled to
``--steps`` (the per-step cost is constant). The last stdout line is JSON (for run.py).

Scenarios: by default the S seeds are LM-BFF data seeds (S feature sets, R configurations per
set); ``--one-split`` trains them as init seeds on one split (one feature set, R·S per set);
``--lrs 0.01,0.03,0.1`` adds the learning-rate grid of ``lorank train`` (R·L per set).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from lorank.linearized import RunSpec, TrainSettings, train_linearized
from lorank.ntk import Block, Features


def features(N, K, m, n, blocks, seed, device, dtype):
    gen = torch.Generator().manual_seed(seed)
    bl = [Block(f"w{i}", 0, "query" if i % 2 == 0 else "value", m, n) for i in range(blocks)]
    P = blocks * m * n
    J = (torch.randn(N, K, P, generator=gen) / (m * n) ** 0.5).to(device=device, dtype=dtype)
    f0 = torch.randn(N, K, generator=gen).to(device=device, dtype=dtype)
    y = (torch.arange(N) % K).to(device)
    return Features(J, f0, y, bl)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="few measured steps (about 1 minute)")
    p.add_argument("--ranks", default="1,2,4,8,12,16")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--lrs", default="0.05")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batched-steps", type=int, default=None)
    p.add_argument("--baseline-steps", type=int, default=None)
    p.add_argument("--N", type=int, default=32)
    p.add_argument("--K", type=int, default=2)
    p.add_argument("--m", type=int, default=384)
    p.add_argument("--n", type=int, default=384)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int,
                   default=int(os.environ.get("LORANK_BENCH_THREADS", "1")))
    p.add_argument("--json", default=None)
    p.add_argument("--one-split", action="store_true",
                   help="seeds are LoRA init seeds on ONE data split (one shared feature set) "
                        "instead of S LM-BFF data splits")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # Equal measured steps for both paths, so the fixed per-call costs (the extra forward at
    # t = T, dev evaluations at 0 and T, init) weigh the same in both scaled times.
    Tb = args.batched_steps or (8 if args.quick else 40)
    T1 = args.baseline_steps or Tb
    dtype = getattr(torch, args.dtype)
    ranks = [int(r) for r in args.ranks.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    seeds = [13, 21, 42, 87, 100, 1, 2, 3, 4, 5][: args.seeds]
    groups = 1 if args.one_split else len(seeds)
    feats = [features(args.N, args.K, args.m, args.n, args.blocks, s, args.device, dtype)
             for s in seeds[:groups]]
    dev = [features(args.N, args.K, args.m, args.n, args.blocks, s + 1000, args.device, dtype)
           for s in seeds[:groups]]
    runs = [RunSpec(r, s, lr, 0 if args.one_split else g) for g, s in enumerate(seeds)
            for r in ranks for lr in lrs]
    per_set = len(runs) // groups
    print(f"{len(runs)} runs ({len(ranks)} ranks x {len(seeds)} seeds x {len(lrs)} lrs, "
          f"{groups} feature set(s), {per_set} configurations per set), N={args.N}, "
          f"K={args.K}, P={feats[0].P:,}, {args.device}, {args.dtype}, "
          f"{torch.get_num_threads()} threads", flush=True)
    train_linearized(feats, runs[:2], TrainSettings(steps=3), dev)  # warm-up
    sync(args.device)
    t0 = time.perf_counter()
    batched = train_linearized(feats, runs, TrainSettings(steps=Tb, eval_every=50), dev)
    sync(args.device)
    t_batched = (time.perf_counter() - t0) * args.steps / Tb
    base = TrainSettings(steps=T1, eval_every=50)
    t0 = time.perf_counter()
    for run in runs:
        train_linearized([feats[run.group]], [RunSpec(run.rank, run.seed, run.lr, 0)], base,
                         [dev[run.group]])
    sync(args.device)
    t_one = (time.perf_counter() - t0) * args.steps / T1
    finals = [t.loss[-1] for t in batched.trajectories]
    ratio = t_one / t_batched
    print(f"  batched (one vectorised run): {t_batched:8.1f} s for {args.steps} steps "
          f"({t_batched / args.steps * 1e3:.1f} ms/step for all runs; measured {Tb} steps)")
    print(f"  one run at a time:            {t_one:8.1f} s for {args.steps} steps x {len(runs)} "
          f"runs (measured {T1} steps per run, scaled)")
    print(f"  speed-up: {ratio:.1f}x  (bound on a memory-bound CPU ~ configurations per feature "
          f"set = {per_set}; final train CE range {min(finals):.3g}..{max(finals):.3g})")
    result = {"bench": "linearized", "runs": len(runs), "feature_sets": groups,
              "per_set": per_set, "steps": args.steps, "batched_s": t_batched,
              "one_by_one_s": t_one, "ratio": ratio, "measured_steps": [Tb, T1],
              "device": args.device, "threads": torch.get_num_threads(), "P": feats[0].P,
              "scenario": "one split" if args.one_split else f"{groups} data seeds",
              "lrs": lrs}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
