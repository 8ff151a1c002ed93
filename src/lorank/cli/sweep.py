"""``lorank sweep SPEC``: run every run of a sweep spec into its results store.

Runs already ``done`` in the store are skipped, ``failed`` ones are retried only with
``--retry-failed``; a killed or interrupted sweep resumes where it stopped. Exit status: 0 when
every run is done, 1 when some run failed, 2 on bad input, 130 when stopped by Ctrl-C/SIGINT and
143 when stopped by SIGTERM (:mod:`lorank.experiments.signals`: both stop cleanly, even when the
process inherited SIGINT as ignored, as background jobs of a non-interactive shell do).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from lorank.errors import LorankError, check_choice, check_positive_int

if TYPE_CHECKING:
    from lorank.experiments.runners import SweepSummary


def run_until_stopped(run: Callable[[], SweepSummary], *, no_progress: bool,
                      resume: str) -> SweepSummary:
    """``run()`` (a :func:`~lorank.experiments.sweep.run_sweep` call) with progress bars unless
    ``no_progress``, stopped cleanly by Ctrl-C/SIGINT or SIGTERM: then one line on stderr (what
    was done, then ``resume``) and exit with the signal's status."""
    from lorank.experiments.runners import SweepInterrupted
    from lorank.experiments.signals import stop_on_signals
    from lorank.progress import library_progress

    with stop_on_signals() as stop, library_progress(not no_progress):
        try:
            return run()
        except KeyboardInterrupt as exc:  # SweepInterrupted, or before any run was claimed
            done = (f": {exc.summary.line()}" if isinstance(exc, SweepInterrupted)
                    else " before any run started")
            click.echo(f"interrupted ({stop.name}){done}; {resume}", err=True)
            sys.exit(stop.exit_code)


def _check_workers(ctx: click.Context, param: click.Parameter, value: int) -> int:
    return check_positive_int("--workers", value)


@click.command("sweep")
@click.argument("spec", type=str)
@click.option("--backend", default="local", show_default=True, metavar="local|ray",
              help="local: this machine (in-process, or a process pool with --workers); "
                   "ray: one Ray task per run.")
@click.option("--workers", type=int, default=1, show_default=True, callback=_check_workers,
              help="local: worker processes; ray without --ray-address: CPUs of the local "
                   "Ray instance.")
@click.option("--retry-failed", is_flag=True, help="Run again the runs stored as failed.")
@click.option("--store", type=str, default=None, help="Results store (overrides the spec's).")
@click.option("--data-dir", type=str, default=None,
              help="Few-shot data root (else the spec's data_dir, else $LORANK_DATA_DIR).")
@click.option("--ray-address", type=str, default=None,
              help="Join an existing Ray cluster (auto, host:6379, ray://host:10001).")
@click.option("--device", type=str, default="cpu", show_default=True,
              help="Device for the runs (cpu, cuda, cuda:0).")
@click.option("--dry-run", is_flag=True, help="Validate and list the expansion; run nothing.")
@click.option("--no-progress", is_flag=True,
              help="No progress bars (lorank's, and transformers' per-model loading bars).")
def command(spec: str, backend: str, workers: int, retry_failed: bool, store: str | None,
            data_dir: str | None, ray_address: str | None, device: str, dry_run: bool,
            no_progress: bool) -> int:
    """Run a sweep SPEC (YAML/TOML) into its results store, resuming where it stopped."""
    from lorank.experiments.runners import group_runs, validate_configs
    from lorank.experiments.spec import load_spec

    check_choice("--backend", backend, ("local", "ray"))
    if ray_address and backend != "ray":
        raise LorankError("--ray-address needs --backend ray")
    sweep = load_spec(spec)
    if dry_run:
        click.echo(f"{sweep.name}: {len(sweep.runs)} runs in {len(group_runs(sweep.runs))} "
                   f"feature groups; store: {store or sweep.store}")
        blocked = []
        for method in sorted({c.method for c in sweep.runs}):
            runs = [c for c in sweep.runs if c.method == method]
            try:
                validate_configs(runs)
                state = "ready"
            except LorankError as exc:
                state = f"not runnable: {exc}"
                blocked.append(f"{method}: {exc}")
            click.echo(f"  {method}: {len(runs)} runs, {len(group_runs(runs))} groups; {state}")
        if blocked:
            raise LorankError(f"{len(blocked)} method(s) of {sweep.name!r} cannot run "
                              f"({blocked[0]}); fix the spec before running it")
        return 0
    from lorank.experiments.sweep import run_sweep

    summary = run_until_stopped(
        lambda: run_sweep(sweep, progress=not no_progress, backend=backend, workers=workers,
                          store=store, data_dir=data_dir, address=ray_address,
                          retry_failed=retry_failed, device=device),
        no_progress=no_progress, resume="rerun the same command to resume")
    for run_id, error in summary.failures[:10]:
        click.echo(f"failed {run_id[:12]}: {error}", err=True)
    click.echo(summary.line())
    if summary.not_done:
        click.echo(f"{summary.not_done} of {summary.total} runs did not finish; see `lorank runs "
                   "--status failed`, rerun with --retry-failed", err=True)
        return 1
    return 0
