"""The quick spec end to end under each runner, with the time split into phases.

For each runner — ``local1`` (in-process, torch on every core), ``local2`` (two worker
processes, one thread each), ``ray`` (a local Ray instance with 2 CPUs, one task per run) —
``lorank sweep SPEC`` runs in a subprocess with a fresh store and a fresh feature cache (a new
temporary folder: ``--store`` there, the features beside it, ``LORANK_CACHE_DIR`` there too),
``HF_HUB_OFFLINE=1`` and ``LORANK_DATA_DIR`` (default ``../shared/data``). The wall time is
measured around the subprocess; then the store is read and the time inside the runs is split
using what each method records (seconds, summed over runs):

* features — linearized ``features_s`` (encoder, split, classifier, train/dev NTK Jacobians) and
  lora ``features_s`` (encoder, split, classifier, frozen-prefix pass over train/dev/test);
* training — linearized ``train_s`` + ``kernel_s`` of each vectorised call (counted once, on the
  run with ``computed_here``), lora ``train_s`` (GD over the lr grid, dev evaluations included),
  and the cstar runs' whole ``run_s`` (GD/LM solves on Gaussian features: no features, no test);
* test — linearized ``test_s`` (streamed test Jacobians/JVPs, once per vectorised call) and lora
  ``test_s`` (test metrics, real-vs-linearized gap);
* other in runs — the runs' ``wall_s`` minus the three above (selection, metric assembly);
* outside runs — slots × wall − Σ run ``wall_s``: process start and imports, spec validation,
  store writes, Ray start/stop and worker start, and slots left idle (load imbalance at the end).

With two slots (``local2``, ``ray``) the sums are worker-seconds and the percentages are of the
capacity 2 × wall. Usage::

    python benchmarks/bench_quick_spec.py [--runners local1,local2,ray] [--quick]
                                          [--spec sweeps/quick.yaml] [--json-out FILE]

``--quick``: a reduced spec (SST-2, seed 13, ranks 1 and 4, 60 linearized steps, one lora run,
one small C* estimate; about a minute per runner) for smoke tests; ``--tasks sst2`` restricts
the spec's grid to some tasks (C* runs kept). ``--json-out`` merges this
invocation's results into FILE (so runners measured in separate invocations can be compared) and
the comparison table covers every runner in it. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RUNNERS: dict[str, tuple[list[str], int]] = {  # name -> (sweep args, slots)
    "local1": ([], 1),
    "local2": (["--workers", "2"], 2),
    "ray": (["--backend", "ray", "--workers", "2"], 2),
}
PHASES = ("features", "train", "test", "other", "outside")
LABELS = {
    "features": "features (encoder, data, train/dev NTK Jacobians; lora prefix pass)",
    "train": "training (vectorised GD + kernel baseline; lora GD; C* solves)",
    "test": "test-time evaluation (streamed test Jacobians/JVPs; lora test + gap)",
    "other": "other inside runs (selection, metrics)",
    "outside": "outside runs (start-up, imports, store, Ray, idle slots)",
}


def quick_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The reduced smoke-test version of the quick spec (all three methods, a few runs)."""
    spec = json.loads(json.dumps(spec))
    spec["name"] = spec["name"] + "-smoke"
    spec["base"].update(steps=60, eval_interval=20, test_cap=100)
    spec["grid"].update(task=["sst2"], seed=[13], rank=[1, 4])
    spec["methods"]["lora"].update(steps=10, eval_interval=5, test_cap=50, lrs=[0.1],
                                   only={"rank": [1], "task": ["sst2"], "seed": [13]})
    spec["include"] = [{"method": "cstar", "task": "gaussian", "model": "gaussian", "rank": 1,
                        "seed": 0, "steps": 300,
                        "options": {"m": 12, "n": 12, "solver": "gd", "instances": 20}}]
    return spec


def only_tasks(spec: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    """The spec restricted to ``tasks`` (grid and per-method ``only``; C* entries kept)."""
    spec = json.loads(json.dumps(spec))
    spec["name"] = spec["name"] + "-" + "-".join(tasks)
    spec["grid"]["task"] = [t for t in spec["grid"]["task"] if t in tasks]
    for name, over in list(spec.get("methods", {}).items()):
        only = over.get("only", {})
        if "task" in only:
            only["task"] = [t for t in only["task"] if t in tasks]
            if not only["task"]:
                spec["grid"]["method"] = [m for m in spec["grid"]["method"] if m != name]
                del spec["methods"][name]
    return spec


def run_sweep(name: str, spec: Path, data_dir: str, timeout: float) -> dict[str, Any]:
    """``lorank sweep`` under runner ``name`` in a fresh folder; wall time and the split."""
    args, slots = RUNNERS[name]
    tmp = Path(tempfile.mkdtemp(prefix=f"lorank-bench-{name}-"))
    try:
        store = tmp / "results.sqlite"
        env = dict(os.environ, LORANK_DATA_DIR=data_dir, HF_HUB_OFFLINE="1",
                   LORANK_CACHE_DIR=str(tmp / "cache"), RAY_USAGE_STATS_ENABLED="0")
        cmd = [sys.executable, "-m", "lorank.cli.main", "sweep", str(spec), "--store",
               str(store), "--no-progress", *args]
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=timeout)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{name}: lorank sweep exited {proc.returncode}: "
                             f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        from lorank.experiments.store import ResultStore

        with ResultStore(store) as results:
            records = results.query()
        out = split(records, wall, slots)
        out.update(runner=name, args=" ".join(args) or "(in-process)", load_before=load0,
                   load_after=os.getloadavg(), summary=proc.stdout.strip().splitlines()[-1])
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def split(records: list[Any], wall: float, slots: int) -> dict[str, Any]:
    """Seconds per phase (see the module doc), per method and in total, from stored runs."""
    methods: dict[str, dict[str, float]] = {}
    counts = {"runs": len(records), "done": 0, "linearized_calls": 0, "feature_loads": 0}
    # feature_loads: linearized runs that loaded data + train/dev features (not memoised)
    in_runs = 0.0
    for rec in records:
        counts["done"] += rec.status == "done"
        m, t = rec.metrics or {}, rec.timings or {}
        run_wall = float(t.get("wall_s", 0.0))
        in_runs += run_wall
        row = methods.setdefault(rec.method, dict.fromkeys(("features", "train", "test",
                                                            "in_runs", "runs"), 0.0))
        row["in_runs"] += run_wall
        row["runs"] += 1
        if rec.method == "linearized":
            row["features"] += m.get("features_s", 0.0)
            counts["feature_loads"] += m.get("features_s", 0.0) > 1e-3
            if m.get("computed_here"):
                counts["linearized_calls"] += 1
                row["train"] += m["train_s"] + m.get("kernel_s", 0.0)
                row["test"] += m["test_s"]
        elif rec.method == "lora":
            row["features"] += m.get("features_s", 0.0)
            row["train"] += m.get("train_s", 0.0)
            row["test"] += m.get("test_s", 0.0)
        else:  # cstar (and any method without a split): all of it is solving
            row["train"] += float(t.get("run_s", run_wall))
    phases = {p: sum(row[p] for row in methods.values()) for p in ("features", "train", "test")}
    phases["other"] = in_runs - sum(phases.values())
    phases["outside"] = slots * wall - in_runs
    return {"wall_s": wall, "slots": slots, "in_runs_s": in_runs, "phases": phases,
            "methods": methods, "counts": counts}


def print_runner(res: dict[str, Any]) -> None:
    cap = res["slots"] * res["wall_s"]
    c = res["counts"]
    print(f"\n== {res['runner']} ({res['args']}; {res['slots']} slot(s)): wall "
          f"{res['wall_s']:.1f} s = {res['wall_s'] / 60:.1f} min; {c['done']}/{c['runs']} runs "
          f"done; {c['linearized_calls']} vectorised linearized calls, {c['feature_loads']} "
          f"linearized feature loads; load avg {res['load_before'][0]:.2f} -> "
          f"{res['load_after'][0]:.2f}")
    print(f"   {res['summary']}")
    print(f"   {'phase':<72} {'worker-s':>9} {'% slots×wall':>13}")
    for p in PHASES:
        print(f"   {LABELS[p]:<72} {res['phases'][p]:9.1f} {100 * res['phases'][p] / cap:12.1f}%")
    print(f"   {'by method':<24} {'runs':>5} {'features':>9} {'train':>9} {'test':>9} "
          f"{'in runs':>9}")
    for name, row in sorted(res["methods"].items()):
        print(f"   {name:<24} {int(row['runs']):5d} {row['features']:9.1f} {row['train']:9.1f} "
              f"{row['test']:9.1f} {row['in_runs']:9.1f}")


def print_comparison(results: dict[str, dict[str, Any]]) -> None:
    base = results.get("local1", {}).get("wall_s")
    print("\n== comparison (phase columns in worker-seconds)")
    print(f"   {'runner':<8} {'wall min':>9} {'vs local1':>10} {'features':>9} {'train':>9} "
          f"{'test':>9} {'other':>8} {'outside':>9}")
    for name in [n for n in RUNNERS if n in results]:
        res = results[name]
        ratio = f"{base / res['wall_s']:.2f}x" if base else "n/a"
        ph = res["phases"]
        print(f"   {name:<8} {res['wall_s'] / 60:9.1f} {ratio:>10} {ph['features']:9.1f} "
              f"{ph['train']:9.1f} {ph['test']:9.1f} {ph['other']:8.1f} {ph['outside']:9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runners", default=",".join(RUNNERS))
    ap.add_argument("--quick", action="store_true", help="reduced spec (smoke test)")
    ap.add_argument("--spec", default=str(ROOT / "sweeps" / "quick.yaml"))
    ap.add_argument("--tasks", default=None,
                    help="comma-separated tasks: restrict the spec to them (e.g. sst2)")
    ap.add_argument("--data-dir", default=os.environ.get("LORANK_DATA_DIR",
                                                         str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per runner")
    ap.add_argument("--json-out", default=None, help="merge results into this JSON file")
    args = ap.parse_args()
    names = [x.strip() for x in args.runners.split(",") if x.strip()]
    unknown = [x for x in names if x not in RUNNERS]
    if unknown or not names:
        sys.exit(f"unknown runner(s): {', '.join(unknown) or '(none)'}; "
                 f"choose from {', '.join(RUNNERS)}")
    spec = yaml.safe_load(Path(args.spec).read_text())
    if args.tasks:
        spec = only_tasks(spec, [t.strip() for t in args.tasks.split(",") if t.strip()])
    with tempfile.TemporaryDirectory(prefix="lorank-bench-spec-") as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(yaml.safe_dump(quick_spec(spec) if args.quick else spec))
        print(f"spec {args.spec}{' (reduced: --quick)' if args.quick else ''}"
              f"{f' (tasks: {args.tasks})' if args.tasks else ''}; data "
              f"{args.data_dir}; {os.cpu_count()} cores", flush=True)
        results = {}
        for name in names:
            results[name] = run_sweep(name, path, args.data_dir, args.timeout)
            print_runner(results[name])
            sys.stdout.flush()
    if args.json_out:
        out = Path(args.json_out)
        merged = json.loads(out.read_text()) if out.exists() else {}
        merged.update(results)
        tmp_out = out.with_name(out.name + ".tmp")
        tmp_out.write_text(json.dumps(merged, indent=1))
        os.replace(tmp_out, out)
        results = merged
    print_comparison(results)
    print(json.dumps({"quick": args.quick, "spec": Path(args.spec).name, "tasks": args.tasks,
                      "runners": results}))


if __name__ == "__main__":
    main()
