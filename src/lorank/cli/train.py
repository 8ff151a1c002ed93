"""``lorank train``: a rank sweep on one task; prints a per-rank table (mean ± std over seeds).

Modes plug in through :data:`RUNNERS` (mode name -> function(options dict) -> result). A result
must provide ``table()`` (rows with ``rank``, ``metric``, and (mean, std) pairs under
``zero_shot``, ``kernel``, ``selected``, ``final``, plus ``selected_lr``/``selected_step`` lists)
and ``to_dict()`` / ``to_json()``. ``linearized`` is built in; the peft runner adds ``lora``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import click

from lorank.cli.checks import check_seeds, check_train_options
from lorank.cli.options_data import (
    echo_notes,
    given,
    load_datasets,
    pop_own_data_options,
    source_from_options,
)
from lorank.cli.options_run import experiment_options
from lorank.cli.parsers import parse_floats, parse_ints, parse_layers, parse_list
from lorank.errors import LorankError


def _tqdm_progress(enabled: bool) -> Callable[[str, int], Callable[[int], None]] | None:
    if not enabled:
        return None
    from lorank.progress import bar as progress_bar

    def factory(stage: str, total: int) -> Callable[[int], None]:
        bar = progress_bar(total, stage)

        def update(done: int) -> None:
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        return update

    return factory


def seed_data(opts: dict[str, Any], seed: int) -> Any:
    """The few-shot data of ``seed``: loaded by the command before any model (``datasets``),
    else the registered task's split (runners called directly, without the command)."""
    if opts.get("datasets") is not None:
        return opts["datasets"][seed]
    from lorank.data.load import load_task

    return load_task(opts["task"], k=opts["k"], seed=seed, data_dir=opts["data_dir"],
                     test_max=opts["test_max"])


def run_linearized(opts: dict[str, Any]) -> Any:
    """The ``linearized`` mode: :func:`lorank.linearized.experiment.run_linearized_sweep`."""
    from lorank.linearized.experiment import DEFAULT_LRS, SweepConfig, run_linearized_sweep

    cfg = SweepConfig(
        task=opts["task"], model=opts["model"], head=opts["head"],
        targets=tuple(opts["targets"]), layers=opts["layers"] if isinstance(
            opts["layers"], str) else tuple(opts["layers"]),
        ranks=tuple(opts["ranks"]), seeds=tuple(opts["seeds"]),
        lrs=tuple(opts["lrs"] or DEFAULT_LRS), lr_unit=opts.get("lr_unit", "eta0"), k=opts["k"],
        steps=opts["steps"],
        eval_every=opts["eval_every"], loss=opts["loss"], scaling=opts["scaling"],
        alpha=opts["alpha"], weight_decay=opts["weight_decay"], optimizer=opts["optimizer"],
        batch_size=opts["batch_size"], test_max=opts["test_max"], max_length=opts["max_length"],
        dtype=opts["dtype"], device=opts["device"], memory_budget_mb=opts["memory_mb"],
        data_dir=opts["data_dir"], use_cache=not opts["no_cache"], engine=opts["engine"],
        data=opts.get("data"))
    return run_linearized_sweep(cfg, _tqdm_progress(opts["progress"]),
                                load_data=lambda seed: seed_data(opts, seed))


def _lazy(name: str) -> Callable[[dict[str, Any]], Any]:
    """A runner imported from :mod:`lorank.cli.train_lora` on first use (peft is heavy)."""

    def run(opts: dict[str, Any]) -> Any:
        import importlib

        return getattr(importlib.import_module("lorank.cli.train_lora"), name)(opts)

    return run


#: mode -> runner(options) -> result with table()/to_json() (and optionally render(title)).
RUNNERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "linearized": run_linearized, "lora": _lazy("run_lora"), "both": _lazy("run_both")}


def _fmt(pair: Any) -> str:
    mean, std = pair
    return "-" if mean is None or not math.isfinite(mean) else f"{mean:.4f} ± {std:.4f}"


def render_table(rows: list[dict[str, Any]], title: str) -> None:
    """Print the per-rank table with rich."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    fitted = any(row.get("head_fitted") for row in rows)
    w0 = "head at W0 (fitted on train)" if fitted else "zero-shot"
    relative = any(c is not None for row in rows for c in row.get("selected_lr_mult") or [])
    for col in ("rank", w0, "kernel", "selected", "final",
                "selected lr (×η0)" if relative else "selected lr",
                "selected step", "moved"):
        table.add_column(col, justify="right")
    for row in rows:
        mults = row.get("selected_lr_mult") or [None] * len(row["selected_lr"])
        lrs = ",".join("-" if x is None else (f"{x:g}" if c is None else f"{c:g}")
                       for x, c in zip(row["selected_lr"], mults, strict=True))
        steps = ",".join("-" if x is None else str(x) for x in row["selected_step"])
        table.add_row(str(row["rank"]), _fmt(row["w0"]), _fmt(row["kernel"]),
                      _fmt(row["selected"]), _fmt(row["final"]), lrs, steps,
                      f"{row.get('moved', 0)}/{row['n_seeds']}")
    console = Console()
    console.width = max(console.width, 120)
    console.print(table)


@click.command("train")
@experiment_options(ranks="1,2,4,8,12,16", own_data=True)
@click.option("--mode", default="linearized", show_default=True,
              help="Training mode: " + ", ".join(RUNNERS) + ".")
@click.option("--lrs", default=None, help="Comma-separated learning-rate grid, selected on "
              "dev; in units of the kernel step η0 with --lr-unit eta0 (default 0.1,0.3,1).")
@click.option("--lr-unit", default="eta0", show_default=True,
              type=click.Choice(["eta0", "abs"]),
              help="eta0: --lrs are multiples c of the kernel step η0 = 1/λ_max of the "
                   "loss Hessian at W0 (train features); abs: absolute learning rates.")
@click.option("--steps", default=1000, show_default=True, type=int)
@click.option("--eval-every", default=50, show_default=True, type=int)
@click.option("--loss", default="ce", show_default=True, type=click.Choice(["ce", "mse"]))
@click.option("--scaling", default="none", show_default=True,
              type=click.Choice(["lora", "rslora", "none"]))
@click.option("--alpha", default=1.0, show_default=True, type=float)
@click.option("--weight-decay", default=0.0, show_default=True, type=float)
@click.option("--optimizer", default="gd", show_default=True,
              type=click.Choice(["gd", "sgd", "adam"]))
@click.option("--batch-size", default=None, type=int, help="Mini-batch size for sgd/adam.")
@click.option("--engine", default="auto", show_default=True,
              type=click.Choice(["auto", "dense", "factored"]),
              help="Linearized engine: dense J or per-token factors (same numbers).")
@click.option("--lora-engine", default="batched", show_default=True,
              type=click.Choice(["batched", "sequential"]),
              help="Real LoRA (--mode lora|both): every seed × rank × lr in one vectorised "
                   "program, or peft one configuration at a time (same numbers).")
@click.option("--test-max", default=None, type=int, help="Cap the test split (seed-42 rows).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--memory-mb", default=1024.0, show_default=True, type=float)
@click.option("--no-cache", is_flag=True, help="Do not read or write the feature cache.")
@click.option("--no-progress", is_flag=True,
              help="No progress bars (lorank's, and transformers' per-model loading bars).")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def command(mode: str, ranks: str, seeds: str, lrs: str | None, targets: str, layers: str,
            as_json: bool, no_progress: bool, **opts: Any) -> None:
    """Train LoRA at several ranks × seeds (× learning rates) and compare test accuracy.

    The data: a registered task (--task) or your own file (--data, see `lorank data show`).
    """
    own = pop_own_data_options(opts)
    source = source_from_options(task=opts["task"] if own["data"] else None, **own)
    if mode not in RUNNERS:
        raise LorankError(f"unknown mode {mode!r}; available: {', '.join(RUNNERS)}")
    if opts["steps"] < 1 or opts["eval_every"] < 1:
        raise LorankError("--steps and --eval-every must be >= 1")
    if opts["memory_mb"] <= 0:
        raise LorankError("--memory-mb must be > 0")
    opts.update(ranks=parse_ints(ranks, "ranks"), seeds=parse_ints(seeds, "seeds"),
                lrs=parse_floats(lrs, "learning rates") if lrs else None,
                targets=parse_list(targets, "targets"), layers=parse_layers(layers),
                progress=not no_progress)
    # before any model loads: seeds, every seed's data (bad files fail here), then the task,
    # the ranks against the model's config (config.json only) and the feature cache folder
    check_seeds(opts["seeds"])
    datasets = load_datasets(opts["task"], source, seeds=opts["seeds"],
                             shots=opts["k"] if given("k") else None, data_dir=opts["data_dir"],
                             test_max=opts["test_max"])
    first = datasets[opts["seeds"][0]]
    if source is not None:
        opts.update(data=source.pin(labels=first.task.labels), task=source.name,
                    k=first.k or opts["k"])
        echo_notes(source, first)
    opts["datasets"] = datasets
    check_train_options({**opts, "task": None if source is not None else opts["task"]})
    from lorank.progress import library_progress

    with library_progress(not no_progress):
        result = RUNNERS[mode](opts)
    if as_json:
        click.echo(result.to_json())
        return
    if hasattr(result, "render"):
        result.render(f"{mode} LoRA on {opts['task']} — {opts['model']}, {opts['head']} head")
        return
    rows = result.table()
    metric = rows[0]["metric"] if rows else "accuracy"
    render_table(rows, f"{mode} LoRA on {opts['task']} — {opts['model']}, {opts['head']} head "
                       f"(test {metric}, mean ± std over {len(opts['seeds'])} seeds)")
