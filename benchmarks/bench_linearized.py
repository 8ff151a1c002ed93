"""Linearized-LoRA sweep benchmark: R ranks x S seeds trained in ONE vectorised run versus the
same runs trained one at a time (same engine, C = 1), side by side, full-batch GD.

    python benchmarks/bench_linearized.py [--ranks 1,2,4,8,12,16] [--seeds 5] [--steps 1000]
        [--baseline-steps 50] [--N 32] [--K 2] [--m 384] [--n 384] [--blocks 2] [--device cpu]

Features are Gaussian with the shapes of MiniLM's last-layer q,v on 16-shot SST-2 (N = 32,
K = 2, two 384x384 blocks: P = 294,912); per-step cost does not depend on the values. The
baseline runs ``--baseline-steps`` steps per run for all runs and is scaled to ``--steps`` (the
per-step cost is constant); the batched run does all ``--steps`` unless ``--batched-steps``.
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
    p.add_argument("--ranks", default="1,2,4,8,12,16")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batched-steps", type=int, default=None)
    p.add_argument("--baseline-steps", type=int, default=50)
    p.add_argument("--N", type=int, default=32)
    p.add_argument("--K", type=int, default=2)
    p.add_argument("--m", type=int, default=384)
    p.add_argument("--n", type=int, default=384)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--json", default=None)
    p.add_argument("--one-split", action="store_true",
                   help="seeds are LoRA init seeds on ONE data split (one shared feature set) "
                        "instead of five LM-BFF data splits")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("LORANK_BENCH_THREADS", torch.get_num_threads())))
    dtype = getattr(torch, args.dtype)
    ranks = [int(r) for r in args.ranks.split(",")]
    seeds = [13, 21, 42, 87, 100, 1, 2, 3, 4, 5][: args.seeds]
    feats = [features(args.N, args.K, args.m, args.n, args.blocks, s, args.device, dtype)
             for s in seeds]
    dev = [features(args.N, args.K, args.m, args.n, args.blocks, s + 1000, args.device, dtype)
           for s in seeds]
    runs = [RunSpec(r, s, args.lr, 0 if args.one_split else g) for g, s in enumerate(seeds)
            for r in ranks]
    if args.one_split:
        feats, dev = feats[:1], dev[:1]
    T = args.batched_steps or args.steps
    print(f"{len(runs)} runs ({len(ranks)} ranks x {len(seeds)} seeds, "
          f"{len(feats)} feature set(s)), N={args.N}, K={args.K}, "
          f"P={feats[0].P:,}, {args.device}, {args.dtype}, {torch.get_num_threads()} threads")
    settings = TrainSettings(steps=T, eval_every=50)
    train_linearized(feats, runs[:2], TrainSettings(steps=3), dev)  # warm-up
    sync(args.device)
    t0 = time.perf_counter()
    batched = train_linearized(feats, runs, settings, dev)
    sync(args.device)
    t_batched = (time.perf_counter() - t0) * args.steps / T
    base = TrainSettings(steps=args.baseline_steps, eval_every=50)
    t0 = time.perf_counter()
    for run in runs:
        train_linearized([feats[run.group]], [RunSpec(run.rank, run.seed, run.lr, 0)], base,
                         [dev[run.group]])
    sync(args.device)
    t_one = (time.perf_counter() - t0) * args.steps / args.baseline_steps
    finals = [t.loss[-1] for t in batched.trajectories]
    print(f"  batched (one vectorised run): {t_batched:8.1f} s for {args.steps} steps "
          f"({t_batched / args.steps * 1e3:.1f} ms/step for all runs; measured {T} steps)")
    print(f"  one run at a time:            {t_one:8.1f} s for {args.steps} steps x {len(runs)} "
          f"runs (measured {args.baseline_steps} steps per run, scaled)")
    print(f"  speed-up: {t_one / t_batched:.1f}x    (final train CE range "
          f"{min(finals):.3g}..{max(finals):.3g})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": len(runs), "steps": args.steps, "batched_s": t_batched,
                       "one_by_one_s": t_one, "ratio": t_one / t_batched,
                       "device": args.device, "P": feats[0].P}, fh, indent=1)


if __name__ == "__main__":
    main()
