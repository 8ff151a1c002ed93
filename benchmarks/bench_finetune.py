"""Benchmark real LoRA fine-tuning (lorank.finetune) on CPU.

1. Cached prefix vs full forward: 16-shot SST-2 (seed 42), MiniLM, verbaliser head, r = 1 LoRA
   on the last layer's query/value, full-batch steps. Both paths train the same adapter from the
   same init; the script checks the loss curves agree and prints the time ratio.
2. Steps per second for all-layer LoRA (query/value of every layer, r = 1, full batch of 32)
   on MiniLM and MPNet.

Usage: LORANK_DATA_DIR=../shared/data python benchmarks/bench_finetune.py [--quick]
       [--threads 1] [--steps 30] [--all-steps 3] [--skip-mpnet]

``--quick``: 5 steps, 2 all-layer steps, MiniLM only. The last stdout line is JSON (for run.py).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _setup(model: str, layers: str, cache: bool):
    from lorank.data import load_task
    from lorank.finetune.adapter import attach_lora
    from lorank.finetune.run import prepare_data
    from lorank.models import build_classifier, load_encoder
    from lorank.models.lora_shape import AdapterConfig

    data = load_task("sst2", k=16, seed=42)
    clf = build_classifier(load_encoder(model), data.task, "verbalizer")
    adapter = attach_lora(clf, AdapterConfig(ranks=(1,), layers=layers, init="gaussian"),
                          seed=42)
    t0 = time.perf_counter()
    prep = prepare_data(clf, data, adapter.start if cache else None)
    return adapter, prep, time.perf_counter() - t0


def _train(adapter, prep, steps: int):
    from lorank.finetune.config import LoraTraining
    from lorank.finetune.train import fit

    s = LoraTraining(lr=1e-2, steps=steps, optimizer="sgd", eval_every=10 ** 6)
    res = fit(adapter, prep.train, prep.dev, s)
    return res


def bench_prefix(steps: int) -> dict:
    rows = {}
    for cache in (True, False):
        adapter, prep, t_prep = _setup("minilm", "last", cache)
        res = _train(adapter, prep, steps)
        rows[cache] = (t_prep, res)
        print(f"{'cached prefix' if cache else 'full forward '}: prepare {t_prep:6.2f} s, "
              f"{steps} steps {res.wall_s:7.2f} s ({steps / res.wall_s:7.2f} steps/s), "
              f"final loss {res.losses[-1]:.6f}")
    (tc, rc), (tf, rf) = rows[True], rows[False]
    diff = max(abs(a - b) for a, b in zip(rc.losses, rf.losses, strict=True))
    print(f"max |loss difference| over the curve: {diff:.2e}")
    print(f"speed-up of the training loop: {rf.wall_s / rc.wall_s:.1f}x; "
          f"including the one-off prefix pass: {(tf + rf.wall_s) / (tc + rc.wall_s):.1f}x")
    return {"steps": steps, "cached_s": rc.wall_s, "full_s": rf.wall_s, "prefix_prepare_s": tc,
            "full_prepare_s": tf, "ratio": rf.wall_s / rc.wall_s, "max_loss_diff": diff}


def bench_all_layers(model: str, steps: int) -> dict:
    """Time bare optimiser steps (forward + backward + update), no dev evaluation."""
    from lorank.finetune.train import loss_fn

    adapter, prep, _ = _setup(model, "all", cache=False)
    params = list(adapter.parameters().values())
    opt = torch.optim.SGD(params, lr=1e-2)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = loss_fn(prep.train.logits(adapter.clf), prep.train.y, "ce")
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    T = prep.train.x["input_ids"].shape[1]
    print(f"{model}: all-layer q,v LoRA r=1 ({adapter.num_parameters():,} params), full batch "
          f"{len(prep.train)} x length {T}, {steps} steps: {sum(times) / steps:.2f} s/step "
          f"({steps / sum(times):.3f} steps/s; first step {times[0]:.2f} s)")
    return {"model": model, "params": adapter.num_parameters(), "steps": steps,
            "s_per_step": sum(times) / steps, "first_step_s": times[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--all-steps", type=int, default=3)
    ap.add_argument("--skip-mpnet", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.all_steps, args.skip_mpnet = 5, 2, True
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    out = {"bench": "finetune", "threads": args.threads, "prefix": bench_prefix(args.steps),
           "all_layers": [bench_all_layers("minilm", args.all_steps)]}
    if not args.skip_mpnet:
        out["all_layers"].append(bench_all_layers("mpnet", max(1, args.all_steps - 1)))
    out["ratio"] = out["prefix"]["ratio"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
