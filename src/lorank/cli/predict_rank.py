"""``lorank predict-rank``: the Rademacher-bound rank predictor on a real task.

Trains linearized LoRA at every candidate rank (lr and step selected on dev), evaluates the margin
bound of each solution (bias = train ρ-margin loss, variance = complexity term) and prints the
per-rank bias/variance table and the predicted rank (argmin of the seed-averaged bound, ties to
the smaller rank). ``--validate`` adds the test metric of the same solutions and the measured best
rank (:mod:`lorank.linearized.predict`).
"""

from __future__ import annotations

import math
from typing import Any

import click

from lorank.cli.options_run import experiment_options, grid_kwargs, pm, set_threads, wide_console
from lorank.errors import check_positive_int


def caveats(result: Any) -> list[str]:
    """What the prediction rests on, printed next to it: where the √r comes from and whether
    the bound's values say anything (docs/theory.md, docs/capacity.md)."""
    bounds = [row["bound"][0] for row in result.table() if math.isfinite(row["bound"][0])]
    lo, hi = (min(bounds), max(bounds)) if bounds else (math.nan, math.nan)
    norm = result.config.get("norm", "nuclear")
    out = []
    if norm == "nuclear":
        out.append("the variance term's √r comes from ‖X‖_* ≤ √r·‖X‖_F (the nuclear-norm route "
                   "of the paper's sketch), a property of the bound, not of the rank-r class; "
                   "--norm frobenius drops it")
    if bounds and lo >= 1:
        out.append(f"the bound is vacuous here (mean bound {lo:.3g} to {hi:.3g} ≥ 1; on the "
                   "five real tasks measured it ran from 3.3 to 623, docs/capacity.md): the "
                   "argmin compares √r-weighted norms against train margins, not risks — a "
                   "tie-breaker, not evidence for a rank")
    elif bounds:
        out.append(f"mean bound {lo:.3g} to {hi:.3g}; values ≥ 1 are vacuous (on the five "
                   "real tasks measured they ran from 3.3 to 623, docs/capacity.md)")
    return out


def render(result: Any, title: str) -> None:
    """Print the per-rank bias/variance table and the prediction with rich."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    cols = ["rank", "class rank", "ρ", "bias", "variance", "bound", "‖ΔW‖_F", "train acc"]
    validated = bool(result.test)
    if validated:
        cols.append("test acc")
    for col in cols:
        table.add_column(col, justify="right")
    for row in result.table():
        cells = [str(row["rank"]), str(row["r_class"]), pm(row["rho"], ".3g"),
                 pm(row["bias"], ".3g"), pm(row["variance"], ".3g"), pm(row["bound"], ".3g"),
                 pm(row["frob_norm"], ".3g"), pm(row["train_accuracy"], ".2f")]
        if validated:
            cells.append(pm(row["test_accuracy"]))
        table.add_row(*cells)
    console = wide_console(140)
    console.print(table)
    seeds = ", ".join(f"{s}: r={r}" for s, r in result.per_seed_predictions().items())
    console.print(f"predicted rank: {result.predicted_rank}   (per seed: {seeds})")
    for line in caveats(result):
        console.print(f"  caveat: {line}", highlight=False, soft_wrap=True)
    if validated:
        console.print(f"measured best rank (mean test accuracy): {result.measured_best_rank}")


@click.command("predict-rank")
@experiment_options(ranks="1,2,4,8,12,16")
@click.option("--norm", default="nuclear", show_default=True,
              help="nuclear (variance ∝ √r) or frobenius (rank-free variance).")
@click.option("--rho", default=None, type=float,
              help="Fixed margin ρ > 0 (default: best of a dev-anchored grid, union bound).")
@click.option("--delta", "delta_conf", default=0.05, show_default=True, type=float,
              help="Confidence parameter δ.")
@click.option("--checkpoint", default="selected", show_default=True,
              help="selected (dev-selected step) or final (last step at the selected lr).")
@click.option("--loss", default="ce", show_default=True, type=click.Choice(["ce", "mse"]))
@click.option("--steps", default=400, show_default=True, type=int)
@click.option("--eval-every", default=50, show_default=True, type=int)
@click.option("--lrs", default="auto", show_default=True,
              help="auto (multiples of the kernel step η0, see --lr-mults) or numbers.")
@click.option("--lr-mults", default="0.3,1,3,10,30", show_default=True)
@click.option("--validate", is_flag=True, help="Also measure test accuracy per rank.")
@click.option("--test-max", default=1000, show_default=True, type=int,
              help="Cap the test split (seed-42 rows).")
@click.option("--threads", default=None, type=int, help="torch CPU threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def command(task: str, ranks: str, seeds: str, targets: str, layers: str, lrs: str,
            lr_mults: str, delta_conf: float, threads: int | None, as_json: bool,
            **opts: Any) -> None:
    """Predict the best LoRA rank from a Rademacher bound of trained linearized solutions."""
    from lorank.linearized.predict import PredictConfig, run_predict

    set_threads(threads)
    check_positive_int("--test-max", opts["test_max"])
    cfg = PredictConfig(**grid_kwargs(task, ranks, seeds, targets, layers, lrs, lr_mults),
                        delta=delta_conf, **opts)
    result = run_predict(cfg)
    if as_json:
        import json

        data = json.loads(result.to_json())
        data["caveats"] = caveats(result)
        click.echo(json.dumps(data, indent=1))
        return
    render(result, f"Rademacher rank predictor on {task} — {cfg.model}, {cfg.head} head, "
                   f"{cfg.norm} norm, {cfg.checkpoint} checkpoint ({len(cfg.seeds)} seeds)")
