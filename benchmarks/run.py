"""Run every lorank benchmark and rewrite docs/benchmarks.md with what was measured.

    python benchmarks/run.py [--quick] [--only capacity,linearized,...] [--out docs/benchmarks.md]
                             [--timeout 1800]

Each benchmark script runs in its own subprocess (torch threads = 1 unless a script is about
threading) and prints a JSON object as its last stdout line; this script parses it, renders one
section per benchmark (measured ratio next to its target), and writes the Markdown file
atomically (temp file + os.replace), with the machine description (CPU model, cores, RAM, load
average before and after, torch version), the date and the git commit (+ dirty flag).
``--quick`` (all five in well under 20 minutes on 2 cores) passes ``--quick`` to every script;
the full mode uses each script's defaults. Opt-in (only with ``--only``): ``quick_spec``, the
quick sweep spec end to end under the local (1 and 2 workers) and Ray runners
(``bench_quick_spec.py``; ~1 min per runner with ``--quick``, 10+ min per runner in full).
``benchmarks/history.md`` (earlier measurements) is appended as an appendix.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
ORDER = ("capacity", "linearized", "ntk", "finetune", "lora_batched", "sweep")
OPTIONAL = ("quick_spec",)  # long: run only when named in --only
TARGETS = {"capacity": "≥ 20× and < 60 s wall on 2 cores (issue #5)",
           "linearized": "≥ 10× (issue #4)", "ntk": "≥ 10× vs a per-example loop (issue #4)",
           "finetune": "—", "lora_batched": "≥ 10× (issue #21)", "sweep": "—",
           "quick_spec": "—"}


def machine() -> dict:
    """CPU model, cores, RAM, load average, torch version and threads of this machine."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = math.nan
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = int(line.split()[1]) / 2**20
    except OSError:
        pass
    torch_info = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__, torch.get_num_threads())"],
        capture_output=True, text=True).stdout.split()
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": ram,
            "torch": torch_info[0] if torch_info else "?",
            "torch_default_threads": torch_info[1] if len(torch_info) > 1 else "?",
            "python": platform.python_version(), "load": os.getloadavg()}


def git_commit() -> str:
    """Short HEAD hash, with ``-dirty`` when the working tree has changes."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def run_bench(name: str, quick: bool, timeout: float) -> dict:
    """Run benchmarks/bench_<name>.py; its parsed JSON last line plus wall time and log tail."""
    cmd = [sys.executable, str(BENCH / f"bench_{name}.py")] + (["--quick"] if quick else [])
    env = dict(os.environ, LORANK_BENCH_THREADS=os.environ.get("LORANK_BENCH_THREADS", "1"))
    env.setdefault("LORANK_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=ROOT)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = -1, exc.stdout or "", f"timed out after {timeout:.0f} s"
        out = out.decode() if isinstance(out, bytes) else out
    wall = time.perf_counter() - t0
    lines = [x for x in out.strip().splitlines() if x.strip()]
    data = None
    if rc == 0 and lines:
        try:
            data = json.loads(lines[-1])
        except json.JSONDecodeError:
            data = None
    log = "\n".join(lines[:-1] if data is not None else lines)
    print(log + (f"\n{err.strip()[-2000:]}" if data is None else ""), flush=True)
    return {"name": name, "rc": rc, "wall_s": wall, "data": data, "log": log,
            "error": None if data is not None else (err.strip().splitlines() or ["no output"])[-1],
            "cmd": " ".join(["python", f"benchmarks/bench_{name}.py", *cmd[2:]])}


def _f(x, fmt=".1f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def summary_row(res: dict) -> str:
    """One line of the summary table: benchmark, ratio, target."""
    d, name = res["data"], res["name"]
    if d is None:
        return f"| {name} | failed: {res['error']} | {TARGETS[name]} | {res['wall_s']:.0f} s |"
    what = {
        "capacity": lambda: (f"{_f(d['ratio'])}× CPU, compiled vs a loop over single instances; "
                             f"{_f(d['compiled_threads_wall_s'], '.0f')} s wall on "
                             f"{d['threads_wall']} threads, {_f(d['compiled_wall_s'], '.0f')} s "
                             f"on 1, for {d['instances']} instances × {d['grid_points']} points"),
        "linearized": lambda: (f"{_f(d['ratio'])}× factored batched vs dense one at a time "
                               f"(dense batched: {_f(d.get('ratio_dense_batched'))}×; "
                               f"{d['runs']} runs, {d['feature_sets']} feature sets, "
                               f"{d['per_set']} per set, {d.get('features', '?')} features, "
                               f"{d['threads']} thread(s))"),
        "ntk": lambda: (f"{_f(d.get('ratio_outer_vs_loop'))}× outer vs autograd loop, "
                        f"{_f(d.get('ratio_outer_vs_naive_loop'))}× vs a naive all-weights "
                        f"loop; {_f(d['ratio_fast_vs_loop'])}× vmap_jacrev vs autograd loop; "
                        f"{_f(d['ratio_truncated_vs_full'])}× truncated vs full backprop"),
        "finetune": lambda: f"{_f(d['ratio'])}× cached prefix vs full forward",
        "lora_batched": lambda: (
            f"{_f(d['ratio'])}× batched vs peft one configuration at a time, last-layer q,v "
            f"(all-layer {_f(d['ratio_all'])}×); C = {d['C']}, CPU time, "
            f"{'extrapolated from a few steps' if d['quick'] else '300 steps'}; peak RSS "
            f"{_f(d['last_layer']['fast']['peak_rss_mb'], '.0f')} MiB"),
        "sweep": lambda: (f"{_f(d['ratio'])}× grouped prepare (ideal {d['ideal_ratio']}×); "
                          f"{_f(d['ms_per_run'], '.2f')} ms store overhead per run"),
        "quick_spec": lambda: ("wall " + ", ".join(
            f"{k} {_f(v['wall_s'] / 60)} min" for k, v in d["runners"].items())
            + (" (reduced spec)" if d["quick"] else " (sweeps/quick.yaml)")),
    }[name]()
    return f"| {name} | {what} | {TARGETS[name]} | {res['wall_s']:.0f} s |"


NOTES = {
    "capacity": (
        "Fast path = the compiled backend (`backend=\"numba\"`, lorank.capacity.compiled): "
        "each instance's whole T-step loop runs in one compiled kernel, so its sensing matrices "
        "(KN·m·n floats, ≤ 320 KB) stay in L2 for all T steps and no step pays Python/dispatch; "
        "instances run in parallel on threads. The batched torch path is bounded by the two "
        "passes over G per step: a chunk large enough to amortise the ~0.3 ms of dispatch per step "
        "no longer fits in L2 (~60 µs per instance-step at KN = 70), so it reached only 5–7× over "
        "the loop. The compiled step (two passes with 4-row register blocking, ~10 µs per "
        "instance-step at KN = 70, float32) agrees with the torch solver to rounding (tested in "
        "float64). A one-pass r = 1 variant (G_i a, G_i^T b, G_i v, G_i^T u together) was tried "
        "and is slower (18 vs 13 µs: length-32 reductions)."),
    "linearized": (
        "Fast path = the factored engine (per-token Jacobian factors from the OUTER method, all "
        "configurations of a feature group in four GEMMs per matrix and step, J never read); "
        "baseline = one configuration at a time on dense J, as research code trains. The four "
        "corners are timed so the speed-up splits into representation × batching. The dense "
        "engine streams Φ = J (N·K × P, 75 MB per feature set) twice per step, so on a CPU its "
        "batching gain is bounded by the configurations sharing a feature set (6 here); the "
        "factored step costs ≈ 4·(Σ r)·T·(n + K·m) multiply-adds on cache-resident factors "
        "(T ≈ 800 kept tokens per matrix for 32 SST-2 prompts), which is why it wins most at "
        "small ranks and short prompts (`auto` compares the two counts). On one thread the "
        "factored GEMMs run near the core's peak (~80 GFLOP/s measured in the profile), so the "
        "remaining time is elementwise work on (T, K, Σ r) products."),
    "lora_batched": (
        "Fast path = `lorank.finetune.batched.train_batched`: the adapted layers of every "
        "configuration of a cohort (configurations seeing the same rows) run under one "
        "`torch.func.vmap`, factors zero-padded to the largest rank, rows in length buckets; "
        "baseline = peft `fit()` one configuration at a time; both with the cached prefix. FLOP "
        "accounting, last-layer q,v on MiniLM (H = 384, I = 1536): per token and configuration "
        "a step costs H² + 2HI multiply-adds forward (attention output and FFN) plus as many "
        "backward (input gradients down to q and v), and 3H² more for W_q h, W_k h, W_v h — "
        "which the batched path computes once per cohort, peft once per configuration. Above "
        "the adapted matrices every configuration's activations differ, so nothing else can be "
        "shared: the ceiling on a CPU is (padded / bucketed tokens) × (5H² + 4HI)/(2H² + 4HI) "
        "≈ 2.1 × 1.17 ≈ 2.4 at equal GEMM efficiency; the one-at-a-time step already runs its "
        "GEMMs at ≈ 70 GFLOP/s, the core's rate (batching alone, without buckets: ≈ 1×). "
        "Buckets cut the work into ~8 small calls per configuration; batching them recovers "
        "the GEMM sizes (buckets alone ≈ 1.5×, both ≈ 2.1–2.6×). The ≥ 10× target needs an "
        "accelerator, where a one-configuration step is launch-bound. All layers: every "
        "configuration back-propagates through all six blocks and only layer 0's projections "
        "are shared, so the gain is the padding alone."),
    "ntk": (
        "On a CPU every method is compute-bound on the same GEMMs (forward + K backward passes of "
        "a 6-layer encoder), so batching examples gains little: OUTER does one batched forward "
        "and K batched backward passes without the per-example weight-gradient GEMMs and returns "
        "factors 11× smaller than J; the per-example loop is lorank's efficient reference "
        "(one forward shared by the K backward passes, only the adapted matrices "
        "differentiated). The naive loop (fresh forward per logit, every weight requires grad, "
        "as research code does) is the second baseline. The ≥ 10× target needs an accelerator, "
        "where a per-example loop is launch-bound: `benchmarks/gpu.sh` measures it."),
}


def render(results: list[dict], info: dict, quick: bool, started: str, load_end) -> str:
    """The Markdown text of docs/benchmarks.md."""
    L = ["# Benchmarks", "",
         f"Generated by `python benchmarks/run.py{' --quick' if quick else ''}` on {started} "
         f"(commit `{info['commit']}`). Every benchmark runs its fast path and its baseline side "
         "by side in one process, so the **ratios** are the result; absolute times depend on "
         "the load.", "",
         "## Machine", "",
         f"- CPU: {info['cpu']}, {info['cores']} cores; RAM {_f(info['ram_gib'])} GiB",
         f"- Python {info['python']}, torch {info['torch']} (default threads "
         f"{info['torch_default_threads']}; benchmarks run with 1 thread unless stated)",
         f"- load average (1, 5, 15 min) at start: "
         f"{', '.join(f'{x:.2f}' for x in info['load'])}; at end: "
         f"{', '.join(f'{x:.2f}' for x in load_end)} (other jobs shared the machine when the "
         "load exceeds the core count)",
         f"- mode: {'quick (reduced sizes, see each section)' if quick else 'full (defaults)'}",
         "", "## Summary", "",
         "| benchmark | measured | target | wall |", "|---|---|---|---|"]
    L += [summary_row(r) for r in results]
    for res in results:
        L += ["", f"## {res['name']}", "", f"Command: `{res['cmd']}`", ""]
        if res["data"] is None:
            L += [f"**Failed** (exit {res['rc']}): {res['error']}", ""]
        L += ["```", res["log"].strip() or "(no output)", "```"]
        if res["name"] in NOTES:
            L += ["", NOTES[res["name"]]]
        if res["data"] is not None:
            L += ["", "<details><summary>JSON</summary>", "", "```json",
                  json.dumps(res["data"], indent=1), "```", "", "</details>"]
    hist = BENCH / "history.md"
    if hist.exists():
        L += ["", "# Appendix: earlier measurements", "", hist.read_text().strip()]
    return "\n".join(L) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(ORDER))
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per benchmark (default 600 quick, 7200 full)")
    args = ap.parse_args()
    names = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in names if x not in ORDER + OPTIONAL]
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(unknown)}; choose from "
                 f"{', '.join(ORDER + OPTIONAL)}")
    timeout = args.timeout or (600 if args.quick else 7200)
    info = machine() | {"commit": git_commit()}
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    results = [run_bench(name, args.quick, timeout) for name in names]
    write_atomic(Path(args.out), render(results, info, args.quick, started, os.getloadavg()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
