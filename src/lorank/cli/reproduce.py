"""``lorank reproduce``: the paper's evidence end to end — prescriptions, sweep, C*, report.

1. the rank prescriptions (Sard exact/rounded, manifold, CE) of every task × encoder of the spec,
   printed and saved as ``OUT/prescriptions.json``;
2. the sweep (``quick`` by default, ``--full`` for the paper-scale grid), stored in
   ``OUT/results.sqlite`` — re-running resumes it (finished runs are skipped);
3. the report (:mod:`lorank.report`) into ``OUT/report/``; the last line is a one-line summary.

Everything is validated first (spec, methods, data, the output folders), so bad input exits 2
having written nothing. ``OUT`` must be new, empty or an earlier ``reproduce`` output (lorank's
marker, :mod:`lorank.atomic`); ``OUT/report`` is replaced only when lorank wrote it. A run that
fails is stored ``failed`` and the rest go on; the report lists it in "Runs that did not
finish", and the exit status is 1 unless every run of the spec is done in the store (0).

Ctrl-C/SIGINT (exit 130) and SIGTERM (exit 143) stop the sweep cleanly (finished runs stored,
in-flight runs marked interrupted; :mod:`lorank.experiments.signals`); run it again to resume.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from lorank.errors import LorankError, check_positive_int

SPECS = Path(__file__).resolve().parents[1] / "experiments" / "specs"


def prescriptions(spec) -> list[dict]:
    """K, N (k-shot) and every rank rule for each (task, model, targets, layers) of the spec."""
    from lorank.data import get_task
    from lorank.models.arch import adapted_matrices
    from lorank.models.bundled import load_config
    from lorank.models.lora_shape import layers_json
    from lorank.theory import prescribe

    seen, rows = set(), []
    for c in spec.runs:
        if c.method not in ("linearized", "lora"):
            continue
        layers = layers_json(c.layers)
        key = (c.task, c.model, tuple(c.targets), str(layers), c.k)
        if key in seen:
            continue
        seen.add(key)
        K = get_task(c.task).K
        shapes = [m.shape for m in adapted_matrices(load_config(c.model), list(c.targets),
                                                    layers)]
        p = prescribe(K, c.k * K, shapes)
        rows.append({"task": c.task, "model": c.model, "targets": list(c.targets),
                     "layers": layers, **p.to_dict()})
    return rows


def _print_prescriptions(rows: list[dict]) -> None:
    from rich.table import Table

    from lorank.cli.options_run import wide_console

    table = Table(title="Rank prescriptions (C* = 1.35; K logits, N = k·K examples)",
                  title_justify="left")
    for col in ("task", "model", "K", "N", "matrices", "Sard exact", "Sard rounded",
                "manifold per-matrix", "manifold total", "CE (PL)"):
        table.add_column(col, justify="left" if col in ("task", "model") else "right")
    for r in rows:
        table.add_row(r["task"], r["model"], str(r["K"]), str(r["N"]), str(len(r["shapes"])),
                      str(r["sard_exact"]), str(r["sard_rounded"]),
                      str(r["manifold_per_matrix"]), str(r["manifold_total"]), str(r["ce"]))
    wide_console(110).print(table)


def _write_json(path: Path, data) -> None:
    from lorank.atomic import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def _preflight(spec, data_dir: str | None) -> None:
    """Fail before any work when the data cannot be reached (one line, exit 2)."""
    from lorank.data import load_task

    first = next((c for c in spec.runs if c.method in ("linearized", "lora")), None)
    if first is not None:
        load_task(first.task, k=first.k, seed=first.seed, data_dir=data_dir, test_max=1)


@click.command("reproduce")
@click.option("--out", "out_dir", default="lorank-out", show_default=True,
              help="Output folder: results.sqlite, prescriptions.json, report/.")
@click.option("--data-dir", envvar="LORANK_DATA_DIR",
              help="LM-BFF data directory (env LORANK_DATA_DIR); without it, the HF hub.")
@click.option("--full", is_flag=True, help="The paper-scale grid (sweeps/paper.yaml): meant "
              "for a GPU or a Ray cluster.")
@click.option("--spec", "spec_path", help="Another sweep spec instead of quick/paper.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local",
              show_default=True)
@click.option("--workers", type=int, default=1, show_default=True,
              help="Local process-pool size.")
@click.option("--ray-address", help="Ray cluster address (backend ray; default: local Ray).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--retry-failed", is_flag=True, help="Run again the runs stored as failed.")
@click.option("--no-progress", is_flag=True,
              help="No progress bars (lorank's, and transformers' per-model loading bars).")
def command(out_dir, data_dir, full, spec_path, backend, workers, ray_address, device,
            retry_failed, no_progress) -> None:
    """Prescriptions, the quick (or --full) sweep, C*, and the report — resumable.

    Writes OUT/reproduce.json: this invocation's start, end and wall time (sweep and report
    included), the sweep's own time and the spec — what the README's main-job time is read from.
    """
    started, t0 = datetime.now(UTC), time.perf_counter()
    from lorank.atomic import check_out_dir, ensure_owned_dir
    from lorank.cli.sweep import run_until_stopped
    from lorank.experiments import load_spec
    from lorank.experiments.runners import validate_configs
    from lorank.experiments.sweep import run_sweep
    from lorank.report.build import build_report
    from lorank.report.failures import unfinished_runs

    check_positive_int("--workers", workers)
    if spec_path and full:
        raise LorankError("give either --spec or --full, not both")
    spec = load_spec(spec_path or SPECS / ("paper.yaml" if full else "quick.yaml"))
    if data_dir and not Path(data_dir).is_dir():
        raise LorankError(f"data directory {data_dir!r} does not exist")
    validate_configs(spec.runs)
    out = Path(out_dir)
    store = out / "results.sqlite"
    check_out_dir(out, "reproduce", what="--out folder")
    check_out_dir(out / "report", "report", protect=[store], what="report folder")
    _preflight(spec, data_dir)
    rows = prescriptions(spec)
    ensure_owned_dir(out, "reproduce")
    _print_prescriptions(rows)
    _write_json(out / "prescriptions.json", rows)
    click.echo(f"sweep {spec.name!r}: {len(spec.runs)} runs -> {store} (re-run to resume)")
    summary = run_until_stopped(
        lambda: run_sweep(spec, progress=not no_progress, backend=backend, workers=workers,
                          store=store, data_dir=data_dir, address=ray_address,
                          retry_failed=retry_failed, device=device),
        no_progress=no_progress,
        resume="finished runs are stored; run the same command to resume")
    click.echo(summary.line())
    run_ids = [c.run_id for c in spec.runs]
    try:
        paths = build_report(store, out / "report", sweep=spec.name,
                             title=f"lorank reproduce — {spec.name}", run_ids=run_ids,
                             margin=spec.report.margin)
        report = f"report: {paths.html}"
    except LorankError as exc:  # e.g. no run finished: nothing to tabulate
        report = f"no report ({exc})"
    click.echo(report)
    _write_json(out / "reproduce.json", {
        "spec": spec.name, "runs": len(spec.runs), "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(), "wall_s": time.perf_counter() - t0,
        "sweep_s": summary.elapsed_s, "resumed": summary.skipped > 0})
    left = unfinished_runs(store, spec.name, run_ids)
    if left:
        failed = sum(r.status == "failed" for r in left)
        click.echo(f"reproduce: {len(spec.runs) - len(left)} of {len(spec.runs)} runs done, "
                   f"{len(left)} did not finish ({failed} failed; listed in the report's \"Runs "
                   f"that did not finish\"; `lorank runs --store {store} --status failed` "
                   "shows why; the same command with --retry-failed reruns them)", err=True)
        sys.exit(1)
    click.echo(f"reproduce: all {len(spec.runs)} runs done in {summary.elapsed_s:.0f} s; "
               f"{report}")
