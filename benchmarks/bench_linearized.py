"""Linearized-LoRA sweep benchmark: R ranks x S seeds trained in ONE vectorised run on the
per-token Jacobian factors (lorank's fast path) versus the same runs trained one configuration at
a time on dense Jacobians J (the research-code way), side by side, full-batch GD (issue #4).
The two other corners (dense batched, factored one at a time) are timed too, so the speed-up
splits into what batching gives and what the factored representation gives.

    python benchmarks/bench_linearized.py [--quick] [--ranks 1,2,4,8,12,16] [--seeds 5]
        [--steps 1000] [--batched-steps 40] [--baseline-steps 40] [--lrs 0.05]
        [--features real|synthetic] [--data-dir DIR] [--tokens 24]
        [--N 32] [--K 2] [--m 384] [--n 384] [--blocks 2] [--device cpu] [--one-split]

Features: ``real`` (default when a data directory is set) = MiniLM verbaliser, last-layer q,v,
16-shot SST-2 train/dev of each seed, computed with the OUTER method (J and factors);
``synthetic`` = Gaussian factors with ``--tokens`` tokens per example on average and the same
shapes (N = 32, K = 2, two 384x384 blocks: P = 294,912). Every path runs a few steps (dev
evaluation every 50 steps, as in ``lorank train``) and is scaled to ``--steps`` (the per-step
cost is constant). The last stdout line is JSON (for run.py).

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

from lorank.linearized import LinearizedTraining, RunSpec, train_linearized
from lorank.ntk import Block, Features
from lorank.ntk.jacobian import TokenFactors


def synthetic(N, K, m, n, blocks, seed, device, dtype, tokens):
    """Gaussian per-token factors (1..2·tokens tokens per example) and the J they define."""
    gen = torch.Generator().manual_seed(seed)
    bl = [Block(f"w{i}", 0, "query" if i % 2 == 0 else "value", m, n) for i in range(blocks)]
    counts = torch.randint(1, 2 * tokens, (N,), generator=gen)
    ex = torch.repeat_interleave(torch.arange(N), counts)
    fac = {b.name: TokenFactors(ex, torch.randn(len(ex), n, generator=gen) / n ** 0.5,
                                torch.randn(K, len(ex), m, generator=gen) / m ** 0.5)
           for b in bl}
    J = torch.cat([fac[b.name].dense(N).flatten(2) for b in bl], dim=-1)
    f0 = torch.randn(N, K, generator=gen)
    y = torch.arange(N) % K
    return Features(J, f0, y, bl, {}, fac).to(dtype, device)


def real(seeds, data_dir, device, dtype):
    """MiniLM verbaliser, last-layer q,v features of SST-2 16-shot train and dev per seed."""
    from lorank.data.load import load_task
    from lorank.models import build_classifier, load_encoder
    from lorank.ntk.pipeline import split_features

    enc = load_encoder("minilm")
    train, dev = [], []
    for s in seeds:
        data = load_task("sst2", k=16, seed=s, data_dir=data_dir)
        clf = build_classifier(enc, data.task, "verbalizer", train=data.train, dev=data.dev)
        for split, out in ((data.train, train), (data.dev, dev)):
            f, _, _ = split_features(clf, split, layers="last", use_cache=False, seed=s)
            out.append(f.to(dtype, device))
    return train, dev


def timed(feats, runs, steps, dev, engine, device, one_by_one):
    """Seconds for ``steps`` steps of ``runs``: one vectorised call, or one call per run."""
    settings = LinearizedTraining(steps=steps, eval_every=50, engine=engine)
    sync(device)
    t0 = time.perf_counter()
    if one_by_one:
        for run in runs:
            res = train_linearized([feats[run.group]], [RunSpec(run.rank, run.seed, run.lr, 0)],
                                   settings, [dev[run.group]])
    else:
        res = train_linearized(feats, runs, settings, dev)
    sync(device)
    assert res.engine == engine
    return time.perf_counter() - t0, res


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
    p.add_argument("--features", choices=["real", "synthetic"], default=None)
    p.add_argument("--data-dir", default=os.environ.get("LORANK_DATA_DIR"))
    p.add_argument("--tokens", type=int, default=24,
                   help="synthetic: mean tokens per example (real SST-2 prompts: ~22)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # Equal measured steps for every path, so the fixed per-call costs (the extra forward at
    # t = T, dev evaluations at 0 and T, init) weigh the same in all scaled times.
    Tb = args.batched_steps or (8 if args.quick else 40)
    T1 = args.baseline_steps or Tb
    dtype = getattr(torch, args.dtype)
    ranks = [int(r) for r in args.ranks.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    seeds = [13, 21, 42, 87, 100, 1, 2, 3, 4, 5][: args.seeds]
    groups = 1 if args.one_split else len(seeds)
    kind = args.features or ("real" if args.data_dir else "synthetic")
    if kind == "real":
        feats, dev = real(seeds[:groups], args.data_dir, args.device, dtype)
    else:
        feats = [synthetic(args.N, args.K, args.m, args.n, args.blocks, s, args.device, dtype,
                           args.tokens) for s in seeds[:groups]]
        dev = [synthetic(args.N, args.K, args.m, args.n, args.blocks, s + 1000, args.device,
                         dtype, args.tokens) for s in seeds[:groups]]
    runs = [RunSpec(r, s, lr, 0 if args.one_split else g) for g, s in enumerate(seeds)
            for r in ranks for lr in lrs]
    per_set = len(runs) // groups
    tokens = [fac.T for f in feats for fac in f.factors.values()]
    print(f"{len(runs)} runs ({len(ranks)} ranks x {len(seeds)} seeds x {len(lrs)} lrs, "
          f"{groups} feature set(s), {per_set} configurations per set), {kind} features: "
          f"N={feats[0].N}, K={feats[0].K}, P={feats[0].P:,}, kept tokens per matrix "
          f"{min(tokens)}..{max(tokens)}; {args.device}, {args.dtype}, "
          f"{torch.get_num_threads()} threads", flush=True)
    for engine in ("dense", "factored"):  # warm-up
        train_linearized(feats, runs[:2], LinearizedTraining(steps=3, engine=engine), dev)
    scale_b, scale_1 = args.steps / Tb, args.steps / T1
    t = {}
    res = {}
    for engine in ("factored", "dense"):
        dt, res[engine] = timed(feats, runs, Tb, dev, engine, args.device, False)
        t[(engine, "batched")] = dt * scale_b
        dt, _ = timed(feats, runs, T1, dev, engine, args.device, True)
        t[(engine, "one by one")] = dt * scale_1
    diff = max(abs(a.loss[-1] - b.loss[-1]) for a, b in zip(
        res["factored"].trajectories, res["dense"].trajectories, strict=True))
    fast, base = t[("factored", "batched")], t[("dense", "one by one")]
    ratio = base / fast
    for (engine, how), sec in t.items():
        tag = {"factored batched": "  <- lorank's fast path",
               "dense one by one": "  <- baseline (research code)"}.get(f"{engine} {how}", "")
        print(f"  {engine:8s} {how:10s}: {sec:8.1f} s for {args.steps} steps x {len(runs)} runs "
              f"({sec / args.steps * 1e3:7.1f} ms/step){tag}")
    print(f"  speed-up fast path vs baseline: {ratio:.1f}x  = batching "
          f"{t[('factored', 'one by one')] / fast:.1f}x (factored) x representation "
          f"{base / t[('factored', 'one by one')]:.1f}x (one by one); dense batched vs dense "
          f"one by one {base / t[('dense', 'batched')]:.1f}x")
    print(f"  max |final train loss, factored - dense| over the {len(runs)} runs: {diff:.1e}")
    result = {"bench": "linearized", "runs": len(runs), "feature_sets": groups,
              "per_set": per_set, "steps": args.steps, "features": kind,
              "seconds": {f"{e} {h}": v for (e, h), v in t.items()},
              "batched_s": fast, "one_by_one_s": base, "ratio": ratio,
              "ratio_dense_batched": base / t[("dense", "batched")],
              "measured_steps": [Tb, T1], "max_loss_diff": diff,
              "device": args.device, "threads": torch.get_num_threads(), "P": feats[0].P,
              "tokens": [min(tokens), max(tokens)],
              "scenario": "one split" if args.one_split else f"{groups} data seeds",
              "lrs": lrs}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
