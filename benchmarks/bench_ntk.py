"""NTK engine benchmark: Jacobian throughput (fast path vs per-example autograd loop) and the
peak memory of streamed test-time prediction as the test set grows.

    python benchmarks/bench_ntk.py [--quick] [--model minilm] [--n 32] [--seq 64] [--loop-n 32]
                                   [--memory-prefixes 250,1000,5463] [--data-dir DIR]
                                   [--threads 1]

``--quick``: 8 examples (4 in the autograd loop) and QNLI prefixes 100,200. The last stdout line
is JSON (for run.py).

Prints the ratios side by side. The memory part runs each prefix of QNLI's test split in a fresh
subprocess and reports its peak RSS (ru_maxrss), next to what materialising J would take.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch


def padded_inputs(clf, texts, seq):
    """Encode and pad every row to exactly ``seq`` tokens (mask 0 on padding)."""
    enc = clf.encode(texts, max_length=seq)
    T = enc["input_ids"].shape[1]
    pad_id = clf.tokenizer.pad_token_id or 0
    out = {}
    for k, v in enc.items():
        fill = pad_id if k == "input_ids" else 0
        out[k] = torch.cat([v, torch.full((v.shape[0], seq - T), fill, dtype=v.dtype)], 1)
    return out


def naive_loop(clf, inputs, names):
    """Research-code style: per example and logit, a fresh forward and ``backward()`` through a
    model whose every weight requires grad, then read the adapted matrices' ``.grad``."""
    params = dict(clf.named_parameters())
    rows = []
    for i in range(inputs["input_ids"].shape[0]):
        x = {k: v[i:i + 1] for k, v in inputs.items()}
        per_logit = []
        for k in range(clf.K):
            clf.zero_grad(set_to_none=True)
            clf(x)[0, k].backward()
            per_logit.append(torch.cat([params[n].grad.flatten() for n in names]))
        rows.append(torch.stack(per_logit))
    return torch.stack(rows)


def jacobian_bench(args) -> dict:
    from lorank.data.load import load_task
    from lorank.models import build_classifier, load_encoder
    from lorank.ntk import compute_features

    data = load_task("sst2", k=16, seed=42, data_dir=args.data_dir)
    enc = load_encoder(args.model)
    clf = build_classifier(enc, data.task, "verbalizer")
    texts = list(data.train.text_a)[: args.n]
    inputs = padded_inputs(clf, texts, args.seq)
    labels = list(data.train.labels)[: args.n]
    compute_features(clf, {k: v[:2] for k, v in inputs.items()}, labels[:2], method="outer")
    res = {}
    for name, layers, method, n in [
        ("all layers, outer", "all", "outer", args.n),
        ("all layers, vmap_jacrev", "all", "vmap_jacrev", args.n),
        ("all layers, autograd loop", "all", "autograd_loop", args.loop_n),
        ("last layer, outer", "last", "outer", args.n),
        ("last layer, vmap_jacrev (full backprop)", "last", "vmap_jacrev", args.n),
        ("last layer, vmap_jacrev_truncated", "last", "vmap_jacrev_truncated", args.n),
    ]:
        sub = {k: v[:n] for k, v in inputs.items()}
        t0 = time.perf_counter()
        f = compute_features(clf, sub, labels[:n], layers=layers, method=method,
                             memory_budget_mb=args.memory_mb)
        dt = time.perf_counter() - t0
        res[name] = {"examples": n, "seconds": dt, "per_example_s": dt / n, "P": f.P,
                     "chunk": f.meta["chunk_size"]}
        extra = ""
        if f.factors is not None:
            numbers = sum(x.X.numel() + x.Delta.numel() for x in f.factors.values())
            res[name]["factor_ratio"] = f.J.numel() / numbers
            extra = f"; factors {numbers * 4 / 2**20:.1f} MB vs J {f.J.numel() * 4 / 2**20:.1f} MB"
        print(f"  {name:42s} {n:3d} ex  {dt:7.2f} s  ({dt / n * 1e3:7.1f} ms/ex, "
              f"P = {f.P:,}{extra})", flush=True)
    names = list(clf.adapted_parameters(("query", "value"), "all"))
    sub = {k: v[:args.loop_n] for k, v in inputs.items()}
    t0 = time.perf_counter()
    naive_loop(clf, sub, names)
    dt = time.perf_counter() - t0
    name = "all layers, naive loop (all weights require grad)"
    res[name] = {"examples": args.loop_n, "seconds": dt, "per_example_s": dt / args.loop_n}
    print(f"  {name:42s} {args.loop_n:3d} ex  {dt:7.2f} s  ({dt / args.loop_n * 1e3:7.1f} ms/ex)")
    pe = {k: v["per_example_s"] for k, v in res.items()}
    loop = pe["all layers, autograd loop"]
    ratios = {
        "ratio_outer_vs_loop": loop / pe["all layers, outer"],
        "ratio_outer_vs_naive_loop": pe[name] / pe["all layers, outer"],
        "ratio_fast_vs_loop": loop / pe["all layers, vmap_jacrev"],
        "ratio_truncated_vs_full": pe["last layer, vmap_jacrev (full backprop)"]
        / pe["last layer, vmap_jacrev_truncated"],
        "ratio_outer_vs_truncated_last": pe["last layer, vmap_jacrev_truncated"]
        / pe["last layer, outer"],
    }
    print(f"  speed-up outer vs autograd loop (all layers):       "
          f"{ratios['ratio_outer_vs_loop']:.1f}x")
    print(f"  speed-up outer vs naive loop (all layers):          "
          f"{ratios['ratio_outer_vs_naive_loop']:.1f}x")
    print(f"  speed-up vmap_jacrev vs autograd loop (all layers): "
          f"{ratios['ratio_fast_vs_loop']:.1f}x")
    print(f"  speed-up truncated vs full backprop (last layer):   "
          f"{ratios['ratio_truncated_vs_full']:.1f}x")
    print(f"  speed-up outer vs vmap_jacrev_truncated (last layer): "
          f"{ratios['ratio_outer_vs_truncated_last']:.1f}x")
    res.update(ratios)
    return res


CHILD = r"""
import json, resource, sys, time, torch
from lorank.data.load import load_task
from lorank.models import build_classifier, load_encoder
from lorank.ntk import blocks_of, stream_linearized_logits
n, model, data_dir, budget = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
data = load_task("qnli", k=16, seed=42, data_dir=data_dir)
clf = build_classifier(load_encoder(model), data.task, "verbalizer")
test = data.test.subset(range(n))
inputs = clf.encode(test, max_length=128)
blocks = blocks_of(clf, ("query", "value"), "last")
P = sum(b.size for b in blocks)
D = torch.randn(P, 60) * 1e-3
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
f0, out = stream_linearized_logits(clf, inputs, blocks, D, memory_budget_mb=budget)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "seconds": dt, "peak_rss_mb": peak / 1024,
                  "rss_before_mb": base / 1024, "P": P,
                  "materialised_J_mb": n * 2 * P * 4 / 2**20}))
"""


def memory_bench(args) -> list[dict]:
    rows = []
    for n in [int(x) for x in args.memory_prefixes.split(",")]:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), args.model, args.data_dir,
                              str(args.memory_mb), str(args.threads)],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  QNLI test prefix {n:5d}: peak RSS {row['peak_rss_mb']:7.0f} MB (before "
              f"streaming {row['rss_before_mb']:6.0f} MB), {row['seconds']:6.1f} s; "
              f"materialised J would be {row['materialised_J_mb']:7.0f} MB", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int,
                   default=int(os.environ.get("LORANK_BENCH_THREADS", "1")))
    p.add_argument("--model", default="minilm")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--loop-n", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--memory-mb", type=float, default=512.0)
    p.add_argument("--memory-prefixes", default="250,1000,5463",
                   help="QNLI test prefixes (5463 = the whole test split)")
    p.add_argument("--data-dir", default=os.environ.get("LORANK_DATA_DIR"))
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--json", default=None, help="write results to this file")
    args = p.parse_args()
    if args.quick:
        args.n, args.loop_n, args.memory_prefixes = 8, 4, "100,200"
    if not args.data_dir:
        sys.exit("set --data-dir or LORANK_DATA_DIR")
    torch.set_num_threads(args.threads)
    print(f"Jacobians: {args.n} examples x 2 logits, seq len {args.seq}, {args.model}, "
          f"{torch.get_num_threads()} threads")
    result = {"jacobians": jacobian_bench(args)}
    if not args.skip_memory:
        print("Streamed test-time prediction (MiniLM last-layer q,v; 60 updates at once):")
        result["memory"] = memory_bench(args)
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    jac = result["jacobians"]
    print(json.dumps({"bench": "ntk", "threads": args.threads, "n": args.n, "loop_n": args.loop_n,
                      "seq": args.seq, "ratio_outer_vs_loop": jac["ratio_outer_vs_loop"],
                      "ratio_outer_vs_naive_loop": jac["ratio_outer_vs_naive_loop"],
                      "ratio_fast_vs_loop": jac["ratio_fast_vs_loop"],
                      "ratio_truncated_vs_full": jac["ratio_truncated_vs_full"],
                      "per_example_s": {k: v["per_example_s"] for k, v in jac.items()
                                        if isinstance(v, dict)},
                      "memory": result.get("memory", [])}))


if __name__ == "__main__":
    main()
