"""Benchmark the batched real-LoRA trainer (lorank.finetune.batched, issue #21) against peft.

Setting (issue #21): MiniLM, verbaliser head, SST-2 16-shot, LM-BFF seeds 13/21/42/87/100 (32
train and 32 dev rows each, batch = the full 32), max_length 64, LoRA on query+value, init
fan_in, s = 1 (the sweep method's settings), full-batch GD, ranks 1/2/4/8/12/16 × 5 seeds ×
lrs 0.01/0.03/0.1 = C = 90 configurations, 300 steps, dev evaluation every 25 steps (13 in all).
Both sides use the cached frozen prefix.

Timed in this one single-threaded process (CPU seconds: robust to other jobs on a shared
machine; wall seconds beside them; ratios are of CPU time):

1. fast path: ``train_batched`` for all 90 configurations (``--steps`` of the 300; with fewer,
   the time per batched step and per dev evaluation are extrapolated to 300 steps + 13 evals);
2. baseline: peft one configuration at a time (``fit``, cached prefix) on a sample of
   (seed, rank) pairs, ``--baseline-steps`` each; per configuration 300 steps + 13 dev
   evaluations extrapolated from its measured step and evaluation; each sampled pair stands for
   its 3 learning rates (the lr does not change a GD step's cost), unsampled ranks take the mean
   of their seed;
3. corners, a few steps each, extrapolated: batched without length buckets (batching alone),
   one configuration per vmapped call with buckets (buckets alone), and the design not kept
   (configurations folded into the batch axis with batched-matmul LoRA hooks, instead of vmap);
4. all-layer q,v: fast path and baseline for ``--all-steps`` steps, extrapolated the same way;
5. peak resident memory of each phase (sampled every 20 ms);
6. ``--tasks``: one C = 90 batched step on other tasks (pair head on pair tasks), for planning.

Usage: LORANK_DATA_DIR=../shared/data python benchmarks/bench_lora_batched.py [--quick]
       [--steps 300] [--baseline-steps 5] [--all-steps 2] [--tasks sst2,qnli,mrpc,rte,mnli]

``--quick``: one seed (C = 18: 6 ranks × 3 lrs; the baseline and the ratios per configuration
are unchanged in kind), 3 fast-path steps, 2 baseline steps on 2 sampled ranks, 1 step per
corner and for all layers, all extrapolated to 300 steps. The last stdout line is JSON (for
run.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import time
from dataclasses import replace

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SEEDS = (13, 21, 42, 87, 100)
RANKS = (1, 2, 4, 8, 12, 16)
LRS = (0.01, 0.03, 0.1)
EVAL_EVERY = 25


class PeakRSS:
    """Context: the peak resident set size (MiB) of this process while the block runs."""

    def __enter__(self) -> PeakRSS:
        self.peak = self.start = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _rss() -> float:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


class Clock:
    """Context: wall and CPU seconds of the block."""

    def __enter__(self) -> Clock:
        self._t = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t[0]
        self.cpu = time.process_time() - self._t[1]


def problems(task: str, layers: str, seeds=SEEDS):
    """{seed: Problem} on one MiniLM encoder (test split dropped: training only)."""
    from lorank.data import load_task
    from lorank.finetune.batched import Problem
    from lorank.finetune.run import prepare_data
    from lorank.models import build_classifier, load_encoder
    from lorank.models.factory import FITTED_HEADS

    enc = load_encoder("minilm")
    out = {}
    for seed in seeds:
        data = replace(load_task(task, k=16, seed=seed), test=None)
        head = "verbalizer" if not data.task.is_pair else "pair"
        fitted = {"train": data.train, "dev": data.dev} if head in FITTED_HEADS else {}
        clf = build_classifier(enc, data.task, head, **fitted)
        start = min(m.layer for m in clf.adapted_matrices(("query", "value"), layers))
        out[seed] = Problem(clf, prepare_data(clf, data, start, 64))
    return out


def token_counts(probs: dict) -> dict:
    """Per seed: real train tokens, padded tokens (what peft runs) and length-bucketed tokens
    (what the fast path runs, default BatchedSettings)."""
    import numpy as np

    from lorank.finetune.batched import BatchedSettings, plan_rows
    from lorank.finetune.buckets import row_lengths

    out = {}
    for seed, p in probs.items():
        x, towers = p.data.train.x, p.clf.towers
        lengths = row_lengths(x, towers)
        plan = plan_rows(lengths, np.arange(len(lengths)), BatchedSettings().max_buckets)
        out[seed] = {"real": int(lengths.sum()),
                     "padded": sum(int(x[f"{t}attention_mask"].numel()) for t in towers),
                     "buckets": sum(b.tokens for b in plan)}
    return out


def lora_settings(r: int, layers: str):
    from lorank.models.lora_shape import AdapterConfig

    return AdapterConfig(ranks=(r,), alpha=1.0, scaling="none", targets=("query", "value"),
                        layers=layers, init="fan_in")


def train_settings(lr: float, steps: int, seed: int):
    from lorank.finetune.config import LoraTraining

    return LoraTraining(lr=lr, steps=steps, optimizer="gd", eval_every=EVAL_EVERY, seed=seed)


def configurations(probs: dict, layers: str, steps: int) -> list:
    from lorank.finetune.batched import Configuration

    return [Configuration(seed, lora_settings(r, layers), train_settings(lr, steps, seed))
            for seed in probs for r in RANKS for lr in LRS]


def n_evals(steps: int) -> int:
    return 1 + sum(1 for t in range(1, steps + 1) if t % EVAL_EVERY == 0 or t == steps)


def batched(probs: dict, layers: str, steps: int, target: int, settings=None) -> dict:
    """One train_batched call for every configuration; times extrapolated to ``target``
    steps."""
    from lorank.finetune.batched import train_batched

    configs = configurations(probs, layers, steps)
    with PeakRSS() as mem:
        fit = train_batched(probs, configs, settings)
    train_cpu = fit.cpu_s - fit.eval_cpu_s - fit.init_s
    train_wall = fit.wall_s - fit.eval_s - fit.init_s
    step_cpu, step_wall = train_cpu / fit.steps, train_wall / fit.steps
    eval_cpu, eval_wall = fit.eval_cpu_s / fit.evals, fit.eval_s / fit.evals
    k = n_evals(target)
    return {"C": len(configs), "steps": fit.steps, "evals": fit.evals, "init_s": fit.init_s,
            "step_cpu_s": step_cpu, "step_wall_s": step_wall,
            "eval_cpu_s": eval_cpu, "eval_wall_s": eval_wall,
            "total_cpu_s": fit.init_s + target * step_cpu + k * eval_cpu,
            "total_wall_s": fit.init_s + target * step_wall + k * eval_wall,
            "measured_cpu_s": fit.cpu_s, "measured_wall_s": fit.wall_s,
            "peak_rss_mb": mem.peak, "rss_before_mb": mem.start,
            "final_loss_mean": sum(f.losses[-1] for f in fit.fits) / len(fit.fits)}


def baseline(probs: dict, layers: str, steps: int, target: int, ranks) -> dict:
    """peft one configuration at a time on (seed, rank) samples, extrapolated to every
    configuration (6 ranks × 3 lrs per seed)."""
    from lorank.finetune.adapter import attach_lora
    from lorank.finetune.inputs import predict
    from lorank.finetune.train import evaluation, fit

    per_seed: dict[int, list[tuple[float, float]]] = {}
    rows = []
    for seed, problem in probs.items():
        for r in ranks:
            adapter = attach_lora(problem.clf, lora_settings(r, layers), seed=seed)
            try:
                with Clock() as ce:
                    evaluation(predict(problem.clf, problem.data.dev), problem.data.dev.y, "ce", 0)
                s = replace(train_settings(0.03, steps, seed), eval_every=steps)
                with Clock() as cf:
                    fit(adapter, problem.data.train, problem.data.dev, s)
            finally:
                adapter.detach()
            step_cpu = max(cf.cpu - 2 * ce.cpu, 0.0) / steps
            step_wall = max(cf.wall - 2 * ce.wall, 0.0) / steps
            k = n_evals(target)
            cost = (target * step_cpu + k * ce.cpu, target * step_wall + k * ce.wall)
            per_seed.setdefault(seed, []).append(cost)
            rows.append({"seed": seed, "r": r, "step_cpu_s": step_cpu, "step_wall_s": step_wall,
                         "eval_cpu_s": ce.cpu, "eval_wall_s": ce.wall})
    total_cpu = sum(len(RANKS) * len(LRS) * sum(c for c, _ in v) / len(v)
                    for v in per_seed.values())
    total_wall = sum(len(RANKS) * len(LRS) * sum(w for _, w in v) / len(v)
                     for v in per_seed.values())
    step_cpu = sum(x["step_cpu_s"] for x in rows) / len(rows)
    return {"sampled": len(rows), "steps": steps, "step_cpu_s": step_cpu,
            "step_wall_s": sum(x["step_wall_s"] for x in rows) / len(rows),
            "eval_cpu_s": sum(x["eval_cpu_s"] for x in rows) / len(rows),
            "total_cpu_s": total_cpu, "total_wall_s": total_wall, "samples": rows}


# ----- the design not kept: configurations folded into the batch axis -----------------------


@contextlib.contextmanager
def folded_hooks(base_model, paths):
    """Hooks for a batch of C·b rows (configuration-major): x viewed as (C, b·T, n), the LoRA
    term as two batched matmuls with A (C, R, n), B (C, m, R)."""
    slot = {}

    def make(path):
        def hook(module, inputs, output):
            factors = slot.get(path)
            if factors is None:
                return output
            A, B, s = factors
            x = inputs[0].reshape(A.shape[0], -1, inputs[0].shape[-1])
            d = torch.bmm(torch.bmm(x, A.transpose(1, 2)), B.transpose(1, 2)) * s[:, None, None]
            return output + d.view_as(output)
        return hook

    handles = [base_model.get_submodule(p).register_forward_hook(make(p)) for p in paths]
    try:
        yield slot
    finally:
        for h in handles:
            h.remove()
        slot.clear()


def folded_logits(clf, x, start, slot, A, B, s):
    """The rows repeated C times (no sharing of the frozen projections), one ordinary forward."""
    C = int(s.shape[0])
    xs = {k: (v.unsqueeze(0).expand(C, *v.shape).reshape(C * v.shape[0], *v.shape[1:])
              if torch.is_tensor(v) else v) for k, v in x.items()}
    slot.update({p: (A[p], B[p], s) for p in A})
    try:
        out = clf.logits_from(xs, start)
    finally:
        slot.clear()
    return out.view(C, -1, out.shape[-1])


@contextlib.contextmanager
def folded_design():
    import lorank.finetune.batched as bt

    old = bt.stacked_logits, bt.lora_hooks
    bt.stacked_logits, bt.lora_hooks = folded_logits, folded_hooks
    try:
        yield
    finally:
        bt.stacked_logits, bt.lora_hooks = old


def fmt(d: dict, what: str) -> str:
    return (f"{what}: {d['step_cpu_s']:.2f} s CPU per batched step ({d['step_wall_s']:.2f} s "
            f"wall), eval {d['eval_cpu_s']:.2f} s CPU; ({d['steps']} steps measured)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("LORANK_BENCH_THREADS",
                                                                      1)))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--target", type=int, default=300)
    ap.add_argument("--baseline-steps", type=int, default=5)
    ap.add_argument("--corner-steps", type=int, default=3)
    ap.add_argument("--all-steps", type=int, default=2)
    ap.add_argument("--tasks", default="")
    args = ap.parse_args()
    base_ranks, seeds = RANKS, SEEDS
    if args.quick:
        args.steps, args.baseline_steps, args.corner_steps, args.all_steps = 3, 2, 1, 1
        base_ranks, seeds = (1, 16), (42,)
    torch.set_num_threads(args.threads)
    from lorank.finetune.batched import BatchedSettings

    C = len(seeds) * len(RANKS) * len(LRS)
    print(f"torch {torch.__version__}, {args.threads} thread(s); C = {len(seeds)} seed(s) x "
          f"{len(RANKS)} ranks x {len(LRS)} lrs = {C}; target {args.target} steps, dev every "
          f"{EVAL_EVERY}", flush=True)
    out: dict = {"bench": "lora_batched", "threads": args.threads, "target_steps": args.target,
                 "quick": args.quick, "C": C}
    with PeakRSS() as mem:
        last = problems("sst2", "last", seeds)
    out["rss_after_setup_mb"] = mem.peak
    out["tokens"] = tokens = token_counts(last)
    print("SST-2 train tokens per seed, real / padded (peft) / in length buckets (fast path): "
          + ", ".join(f"{s}: {t['real']}/{t['padded']}/{t['buckets']}" for s, t in
                      tokens.items()), flush=True)
    padded = sum(t["padded"] for t in tokens.values())
    bucketed = sum(t["buckets"] for t in tokens.values())
    print(f"  tokens the upper layers process per configuration-step: {padded / bucketed:.2f}x "
          "fewer with buckets", flush=True)

    fast = batched(last, "last", args.steps, args.target)
    print(fmt(fast, "last-layer q,v, fast path (vmap + length buckets)"), flush=True)
    print(f"  per configuration-step {fast['step_cpu_s'] / C * 1000:.1f} ms CPU; "
          f"{args.target} steps: {fast['total_cpu_s']:.0f} s CPU ({fast['total_wall_s']:.0f} s "
          f"wall){' extrapolated' if args.steps != args.target else ''}; peak RSS "
          f"{fast['peak_rss_mb']:.0f} MiB (before {fast['rss_before_mb']:.0f} MiB)", flush=True)
    base = baseline(last, "last", args.baseline_steps, args.target, base_ranks)
    print(f"baseline, peft one at a time: {base['step_cpu_s'] * 1000:.0f} ms CPU per step, eval "
          f"{base['eval_cpu_s'] * 1000:.0f} ms ({base['sampled']} sampled configurations x "
          f"{args.baseline_steps} steps); {C} x {args.target} steps: "
          f"{base['total_cpu_s']:.0f} s CPU extrapolated",
          flush=True)
    ratio = base["total_cpu_s"] / fast["total_cpu_s"]
    print(f"speed-up, last-layer q,v: {ratio:.2f}x (CPU time; wall "
          f"{base['total_wall_s'] / fast['total_wall_s']:.2f}x)", flush=True)
    out.update(last_layer={"fast": fast, "baseline": base}, ratio=ratio)

    corners = {}
    for name, settings, ctx in (
            ("batching alone (no length buckets)", BatchedSettings(max_buckets=1),
             contextlib.nullcontext()),
            ("buckets alone (one configuration per call)", BatchedSettings(max_rows=1),
             contextlib.nullcontext()),
            ("folded design (no vmap), with buckets", BatchedSettings(), folded_design())):
        with ctx:
            d = batched(last, "last", args.corner_steps, args.target, settings)
        corners[name] = d
        print(fmt(d, name) + f" -> {base['total_cpu_s'] / d['total_cpu_s']:.2f}x vs baseline",
              flush=True)
    out["corners"] = corners

    allp = problems("sst2", "all", seeds)
    fast_all = batched(allp, "all", args.all_steps, args.target)
    print(fmt(fast_all, "all-layer q,v, fast path"), flush=True)
    base_all = baseline(allp, "all", args.all_steps, args.target, (1,))
    ratio_all = base_all["total_cpu_s"] / fast_all["total_cpu_s"]
    print(f"all-layer baseline: {base_all['step_cpu_s']:.2f} s CPU per step; speed-up "
          f"{ratio_all:.2f}x (CPU; wall {base_all['total_wall_s'] / fast_all['total_wall_s']:.2f}"
          f"x); fast-path peak RSS {fast_all['peak_rss_mb']:.0f} MiB", flush=True)
    out.update(all_layers={"fast": fast_all, "baseline": base_all}, ratio_all=ratio_all)
    del allp

    per_task = {}
    for task in [t for t in args.tasks.split(",") if t.strip()]:
        d = batched(problems(task, "last", seeds), "last", 1, args.target)
        per_task[task] = d
        print(f"{task}: one C = {C} batched step {d['step_cpu_s']:.2f} s CPU "
              f"({d['step_wall_s']:.2f} s wall), dev eval {d['eval_cpu_s']:.2f} s; "
              f"{args.target} steps + evals ≈ {d['total_cpu_s'] / 60:.1f} min CPU", flush=True)
    if per_task:
        out["per_task"] = per_task
    print(json.dumps(out))


if __name__ == "__main__":
    main()
