"""NTK-engine throughput on a roberta-large-sized encoder (random init, no download), for a GPU.

Run by ``benchmarks/gpu.sh``. Sections (each skipped if the time budget is spent):
  1. Jacobians: 32 examples x 2 logits, seq len 128, q,v of all 24 layers (P = 50.3 M) with
     the outer method and vmap_jacrev, vs the per-example autograd loop on a few examples;
     last layer truncated.
  2. Streamed test-time prediction: 1,000 examples, last-layer q,v, 60 updates at once.
  3. Linearized sweep: 6 ranks x 5 seeds x 1,000 GD steps (last-layer q,v, P = 2.1 M, 40
     tokens per example) in one vectorised run of the factored engine, and of the dense engine,
     vs the same runs one at a time on J (measured on 50 steps per run, scaled).
Prints one summary block at the end and writes $OUT/gpu_ntk.json when $OUT is set.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

BUDGET_S = float(os.environ.get("LORANK_GPU_BUDGET_S", 240))
T0 = time.perf_counter()


def left() -> float:
    return BUDGET_S - (time.perf_counter() - T0)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t


def large_classifier(device, dtype):
    from transformers import AutoModel

    from lorank.models.arch import arch_spec
    from lorank.models.encoder import Encoder
    from lorank.models.factory import build_classifier
    from lorank.models.tiny import build_large_config, tiny_config, tiny_tokenizer

    if os.environ.get("LORANK_GPU_SMOKE"):  # CPU smoke test of this script: a tiny config
        config = tiny_config("roberta", vocab_size=len(tiny_tokenizer()))
    else:
        config = build_large_config("roberta")
    torch.manual_seed(0)
    model = AutoModel.from_config(config, attn_implementation="eager").to(device, dtype).eval()
    enc = Encoder(model, tiny_tokenizer(), config, arch_spec("roberta"), "roberta-large-random",
                  "random-init")
    return build_classifier(enc, "sst2", "verbalizer")


def texts(n, words, seed):
    import random

    rng = random.Random(seed)
    vocab = ["the", "a", "movie", "film", "was", "great", "terrible", "good", "bad", "story",
             "plot", "actor", "fun", "boring"]
    return [" ".join(rng.choice(vocab) for _ in range(words)) for _ in range(n)]


def main() -> None:
    from lorank.linearized import LinearizedTraining, RunSpec, train_linearized
    from lorank.ntk import Block, Features, blocks_of, compute_features, stream_linearized_logits

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float32
    summary: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
    clf, t_build = timed(lambda: large_classifier(device, dtype))
    summary["build_s"] = t_build
    print(f"built {clf.num_layers}-layer classifier on {summary['device']} in {t_build:.1f} s",
          flush=True)
    x = clf.encode(texts(32, 120, 0), max_length=128)
    labels = [i % 2 for i in range(32)]
    budget = float(os.environ.get("LORANK_GPU_MEMORY_MB", 40000))
    # 1. Jacobians
    if left() > 60:
        f, dt_outer = timed(lambda: compute_features(clf, x, labels, layers="all",
                                                     method="outer", memory_budget_mb=budget))
        del f
        f, dt = timed(lambda: compute_features(clf, x, labels, layers="all",
                                               method="vmap_jacrev", memory_budget_mb=budget))
        P_all = f.P
        del f
        sub = {k: v[:4] for k, v in x.items()}
        _, dt_loop = timed(lambda: compute_features(clf, sub, labels[:4], layers="all",
                                                    method="autograd_loop",
                                                    memory_budget_mb=budget))
        _, dt_last = timed(lambda: compute_features(clf, x, labels, layers="last",
                                                    memory_budget_mb=budget))
        _, dt_last_full = timed(lambda: compute_features(clf, x, labels, layers="last",
                                                         method="vmap_jacrev",
                                                         memory_budget_mb=budget))
        summary["jacobian"] = {
            "P_all": P_all, "vmap_all_s_per_32": dt, "loop_all_s_per_ex": dt_loop / 4,
            "ratio_vmap_vs_loop": (dt_loop / 4) / (dt / 32),
            "outer_all_s_per_32": dt_outer, "ratio_outer_vs_loop": (dt_loop / 4) / (dt_outer / 32),
            "last_truncated_s_per_32": dt_last, "last_full_s_per_32": dt_last_full,
            "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}
        print(json.dumps(summary["jacobian"]), flush=True)
    # 2. streamed prediction
    blocks = blocks_of(clf, ("query", "value"), "last")
    P = sum(b.size for b in blocks)
    if left() > 45:
        xt = clf.encode(texts(1000, 40, 1), max_length=64)
        D = torch.randn(P, 60, device=device, dtype=dtype) * 1e-3
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _, dt = timed(lambda: stream_linearized_logits(clf, xt, blocks, D,
                                                       memory_budget_mb=4000))
        summary["stream"] = {"examples": 1000, "seconds": dt, "examples_per_s": 1000 / dt,
                             "peak_gb": torch.cuda.max_memory_allocated() / 2**30
                             if device == "cuda" else None}
        print(json.dumps(summary["stream"]), flush=True)
    # 3. sweep
    if left() > 30:
        from lorank.ntk.jacobian import TokenFactors

        gen = torch.Generator().manual_seed(0)
        bl = [Block(b.name, b.layer, b.target, b.m, b.n) for b in blocks]
        ex = torch.arange(32).repeat_interleave(40)

        def synthetic():
            fac = {b.name: TokenFactors(ex, torch.randn(len(ex), b.n, generator=gen) / 32,
                                        torch.randn(2, len(ex), b.m, generator=gen) / 32)
                   for b in bl}
            J = torch.cat([fac[b.name].dense(32).flatten(2) for b in bl], dim=-1)
            return Features(J, torch.randn(32, 2, generator=gen), torch.arange(32) % 2, bl,
                            {}, fac).to(dtype, device)

        feats = [synthetic() for _ in range(5)]
        runs = [RunSpec(r, s, 0.05, g) for g, s in enumerate([13, 21, 42, 87, 100])
                for r in (1, 2, 4, 8, 12, 16)]
        res = {}
        for engine in ("factored", "dense"):
            settings = LinearizedTraining(steps=1000, engine=engine)
            train_linearized(feats, runs[:2], LinearizedTraining(steps=3, engine=engine), feats)
            _, res[engine] = timed(lambda s=settings: train_linearized(feats, runs, s, feats))
        steps_one = 50

        def one_by_one():
            for run in runs:
                train_linearized([feats[run.group]], [RunSpec(run.rank, run.seed, run.lr)],
                                 LinearizedTraining(steps=steps_one, engine="dense"),
                                 [feats[run.group]])

        _, t_1 = timed(one_by_one)
        t_1 *= 1000 / steps_one
        summary["sweep"] = {"runs": len(runs), "steps": 1000, "P": P,
                            "batched_s": res["factored"], "dense_batched_s": res["dense"],
                            "one_by_one_s_scaled": t_1, "ratio": t_1 / res["factored"],
                            "ratio_dense_batched": t_1 / res["dense"]}
        print(json.dumps(summary["sweep"]), flush=True)
    summary["total_s"] = time.perf_counter() - T0
    print("\n=== lorank NTK engine on", summary["device"], "===")
    j, s, w = summary.get("jacobian"), summary.get("stream"), summary.get("sweep")
    if j:
        print(f"Jacobians, all 24 layers q,v (P={j['P_all']:,}), 32 ex x 2 logits: outer "
              f"{j['outer_all_s_per_32']:.2f} s ({j['ratio_outer_vs_loop']:.1f}x), vmap "
              f"{j['vmap_all_s_per_32']:.2f} s; autograd loop {j['loop_all_s_per_ex']:.2f} s/ex "
              f"-> {j['ratio_vmap_vs_loop']:.1f}x; last layer truncated "
              f"{j['last_truncated_s_per_32']:.3f} s vs full {j['last_full_s_per_32']:.3f} s")
    if s:
        print(f"Streamed prediction: {s['examples_per_s']:.0f} examples/s (60 updates), peak "
              f"{s['peak_gb']} GB")
    if w:
        print(f"Sweep 30 runs x 1000 steps: factored batched {w['batched_s']:.1f} s, dense "
              f"batched {w['dense_batched_s']:.1f} s vs one-by-one on J "
              f"{w['one_by_one_s_scaled']:.1f} s -> {w['ratio']:.1f}x "
              f"(dense batched {w['ratio_dense_batched']:.1f}x)")
    print(f"total {summary['total_s']:.0f} s")
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "gpu_ntk.json"), "w") as fh:
            json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
