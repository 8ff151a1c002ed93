"""``lorank cstar``: measure the C* phase transition d/(KN) for an explicit solver and budget.

Sweeps KN around d = r(m+n) − r², solves many random instances per point (batched), fits the 50 %
success ratio with a bootstrap CI (:mod:`lorank.capacity.estimator`). ``--plot`` draws the success
curves for several step budgets (``--budgets``).
"""

from __future__ import annotations

import json

import click

from lorank.cli.parsers import parse_floats
from lorank.errors import LorankError, check_choice, check_positive_int, check_positive_ints


def parse_budgets(text: str) -> list[int]:
    """Parse ``"300,1000,3000"`` into step budgets (positive integers)."""
    vals = parse_floats(text, "--budgets")
    if any(v != int(v) for v in vals):
        raise LorankError(f"--budgets must be positive integers, got {text!r}")
    return sorted({int(v) for v in vals})


def _summary(res) -> str:
    unit = "d/(KN), d = r(m+n)-r^2" if res.count == "manifold" else "r(r+1)/2/(KN) (Sard count)"
    if res.bracketed:
        c50 = f"C50 = {res.c50:.4g}  [{res.ci_low:.4g}, {res.ci_high:.4g}] ({res.ci_level:.0%} CI)"
    else:
        c50 = "C50 not bracketed by the ratio grid (success rate never crosses 1/2)"
    return (f"{c50}  in units of {unit}; solver={res.solver} ({res.step_rule}), T={res.steps}, "
            f"tol={res.tol:g}, loss={res.loss}, r={res.r}, m={res.m}, n={res.n}, "
            f"{res.instances} instances/point, seed={res.seed}, backend={res.backend}, "
            f"{res.wall_s:.1f} s"
            + (f"; {res.failed} instances failed numerically (counted as unsuccessful): "
               f"{res.failures[0]}" if res.failed else ""))


@click.command(name="cstar")
@click.option("--r", "r", default=1, type=int, show_default=True, help="LoRA rank.")
@click.option("--m", "m", default=24, type=int, show_default=True, help="Rows of the matrix.")
@click.option("--n", "n", default=24, type=int, show_default=True, help="Columns of the matrix.")
@click.option("--solver", default="gd", show_default=True, help="gd or lm (Levenberg-Marquardt).")
@click.option("--steps", default=None, type=int,
              help="Step budget T [default: 1000 for gd, 200 for lm].")
@click.option("--tol", default=None, type=float,
              help="Success threshold on loss/initial loss [default: 1e-8 mse, 1e-3 ce].")
@click.option("--loss", default="mse", show_default=True, help="mse or ce (±1 labels).")
@click.option("--count", default="manifold", show_default=True,
              help="Ratio units: manifold (r(m+n)-r^2) or sard (r(r+1)/2).")
@click.option("--instances", default=100, type=int, show_default=True,
              help="Random instances per grid point.")
@click.option("--ratios", default=None, help="Grid of d/(KN) ratios, e.g. 0.8,0.9,1,1.2.")
@click.option("--seed", default=0, type=int, show_default=True)
@click.option("--step-rule", default="hessian", show_default=True,
              help="GD step: hessian (1/|lambda_max| by power iteration) or bound.")
@click.option("--features", default=None, help=".npy feature pool (P, m, n) or (P, m*n).")
@click.option("--boot", default=500, type=int, show_default=True, help="Bootstrap replicates.")
@click.option("--threads", default=None, type=int,
              help="torch threads, also the numba backend's threads (default: torch's).")
@click.option("--backend", default="auto", show_default=True,
              help="Solver implementation: auto (numba for GD with the hessian step), torch, "
                   "numba.")
@click.option("--json", "as_json", is_flag=True, help="Print the result record(s) as JSON.")
@click.option("--plot", default=None, help="Write success curves to this .png/.pdf/.svg.")
@click.option("--budgets", default=None, help="Step budgets for --plot, e.g. 300,1000,3000.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(r, m, n, solver, steps, tol, loss, count, instances, ratios, seed, step_rule,
            features, boot, threads, backend, as_json, plot, budgets, quiet) -> None:
    """Estimate C*: the 50% success ratio d/(KN) of rank-r fitting of random targets."""
    from lorank.capacity.estimator import (
        COUNTS,
        DEFAULT_RATIOS,
        CStarConfig,
        estimate_c_star,
    )
    from lorank.capacity.losses import check_loss
    from lorank.capacity.plot import check_plot_path, plot_success_curves
    from lorank.capacity.problems import check_problem, load_features
    from lorank.capacity.solvers import STEP_RULES, check_solver, resolve_backend
    from lorank.cli.checks import check_seeds
    from lorank.cli.options_run import set_threads

    check_seeds([seed], "--seed")
    check_problem(r, m, n)
    check_solver(solver)
    check_loss(loss)
    check_choice("--count", count, COUNTS)
    check_choice("--step-rule", step_rule, STEP_RULES)
    resolve_backend(backend, solver, step_rule)
    if steps is not None:
        check_positive_int("--steps", steps)
    if tol is not None and not (0 < tol < 1):
        raise LorankError(f"--tol must be in (0, 1), got {tol}")
    check_positive_ints(**{"--instances": instances, "--boot": boot})
    set_threads(threads)
    if budgets is not None and plot is None:
        raise LorankError("--budgets needs --plot")
    grid = parse_floats(ratios, "--ratios") if ratios else list(DEFAULT_RATIOS)
    plot_path = check_plot_path(plot) if plot else None
    budget_list = parse_budgets(budgets) if budgets else [steps]
    pool = load_features(features, m, n) if features else None
    from lorank.progress import bar as progress_bar

    configs = [CStarConfig(r=r, m=m, n=n, solver=solver, steps=budget, tol=tol, loss=loss,
                           count=count, ratios=tuple(grid), instances=instances, seed=seed,
                           step_rule=step_rule, n_boot=boot, backend=backend)
               for budget in budget_list]
    total = sum(config.progress_total() for config in configs)
    results = []
    with progress_bar(total, "cstar", enabled=not quiet, unit="chunk") as bar:
        for config in configs:
            results.append(estimate_c_star(config, features=pool, features_name=features,
                                           progress=bar.update))
    if plot_path is not None:
        plot_success_curves(results, plot_path)
    if as_json:
        out = [res.to_dict() for res in results]
        click.echo(json.dumps(out[0] if len(out) == 1 else out, indent=2))
        return
    for res in results:
        click.echo(_summary(res))
        rows = zip(res.curve.ratios, res.curve.KN, res.curve.successes, res.curve.counts,
                   strict=True)
        for x, kn, k, c in rows:
            click.echo(f"  ratio {x:8.4g}  KN {kn:5d}  success {k:4d}/{c}")
    if plot_path is not None:
        click.echo(f"wrote {plot_path}")
