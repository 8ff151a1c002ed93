"""``lorank pl``: PL ratios and training-loss convergence of linearized LoRA on real features.

Prints, per rank, the final training loss (mean ± std over seeds), the fraction of seeds whose
loss gap L_t − L_inf fell below ``--threshold``, the median step at which it did, and the
minimum PL ratios μ = ‖∇L‖²/(L − L_inf) and κ = ‖∇L‖/(L − L_inf) over all trajectories
(:mod:`lorank.linearized.pl_real`).
"""

from __future__ import annotations

import math
from typing import Any

import click

from lorank.cli.options_run import experiment_options, grid_kwargs, set_threads, wide_console


def _num(x: float, fmt: str = ".3g") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, fmt)


def render(result: Any, title: str) -> None:
    """Print the per-rank PL table with rich."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("rank", "loss", "L0 (mean)", "final train loss", "below thr.", "steps to thr.",
                "min μ", "min μ above thr.", "min κ", "lrs", "all-lr diverged"):
        table.add_column(col, justify="right")
    for row in result.table():
        mean, std = row["final_loss"]
        table.add_row(str(row["rank"]), row["loss"], _num(row["L0"][0]),
                      f"{_num(mean)} ± {_num(std)}", f"{row['below_threshold']:.2f}",
                      _num(row["steps_to_threshold"], "g"), _num(row["mu_min"]),
                      _num(row["mu_min_above"]), _num(row["kappa_min"]),
                      ",".join(_num(x) for x in row["lrs"]), str(row["seeds_all_diverged"]))
    wide_console(140).print(table)


@click.command("pl")
@experiment_options(ranks="1,12")
@click.option("--loss", default="ce", show_default=True, type=click.Choice(["ce", "mse"]))
@click.option("--mse-target", default="onehot", show_default=True,
              type=click.Choice(["onehot", "pm1"]))
@click.option("--steps", default=1000, show_default=True, type=int)
@click.option("--lrs", default="auto", show_default=True,
              help="auto (multiples of the kernel step η0, see --lr-mults) or numbers.")
@click.option("--lr-mults", default="0.3,1,3,10,30", show_default=True,
              help="Relative grid used by --lrs auto.")
@click.option("--threshold", default=1e-2, show_default=True, type=float)
@click.option("--threads", default=None, type=int, help="torch CPU threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def command(task: str, ranks: str, seeds: str, targets: str, layers: str, lrs: str,
            lr_mults: str, threads: int | None, as_json: bool, **opts: Any) -> None:
    """Measure PL ratios and loss convergence of linearized LoRA per rank on a real task."""
    from lorank.linearized.pl_real import PLConfig, run_pl

    set_threads(threads)
    cfg = PLConfig(**grid_kwargs(task, ranks, seeds, targets, layers, lrs, lr_mults), **opts)
    result = run_pl(cfg)
    if as_json:
        click.echo(result.to_json())
        return
    render(result, f"PL on {task} — {cfg.model}, {cfg.head} head, {cfg.loss}, {cfg.steps} GD "
                   f"steps, threshold {cfg.threshold:g} on L − L_inf ({len(cfg.seeds)} seeds)")
