"""``lorank train``: a rank sweep on one task; prints a per-rank table (mean ± std over seeds).

The command builds one typed :class:`TrainJob` — the validated
:class:`~lorank.linearized.experiment.SweepConfig` (task, classifier, adapter, rank × seed ×
learning-rate grid, optimisation; the same record for both engines), every seed's few-shot
data, the real-LoRA engine and whether to show progress — and passes it whole to the mode's
runner. Modes plug in through :data:`RUNNERS` (mode name -> function(TrainJob) -> result). A
result must provide ``table()`` (rows with ``rank``, ``metric``, and (mean, std) pairs under
``w0``, ``kernel``, ``selected``, ``final``, plus ``selected_lr``/``selected_step`` lists) and
``to_dict()`` / ``to_json()``. ``linearized`` is built in; the peft runners add ``lora`` and
``both``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from lorank.cli.checks import check_positive_ranks, check_train_options
from lorank.cli.options_data import (
    echo_notes,
    given,
    load_datasets,
    pop_own_data_options,
    source_from_options,
)
from lorank.cli.options_run import experiment_options, pm, wide_console
from lorank.cli.parsers import parse_floats, parse_ints, parse_list, parse_seeds
from lorank.errors import check_choice, check_number, check_positive_ints

if TYPE_CHECKING:
    from lorank.data.load import FewShotData
    from lorank.linearized.experiment import SweepConfig

LORA_ENGINES = ("batched", "sequential")


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


@dataclass(frozen=True)
class TrainJob:
    """Everything ``lorank train`` runs, typed and validated, passed whole to a mode's runner.

    Attributes:
        sweep: the sweep (task or own data, classifier, adapter, rank × seed × lr grid and
            optimisation): one record for the linearized and the real engine.
        datasets: seed → few-shot data, loaded by the command before any model (bad files fail
            first); ``None``: each seed's registered-task split is loaded when needed.
        lora_engine: real LoRA (modes ``lora``/``both``): ``batched`` (every seed × rank × lr
            in one vectorised program) or ``sequential`` (peft, one at a time; same numbers).
        progress: show progress bars.
    """

    sweep: SweepConfig
    datasets: Mapping[int, FewShotData] | None = None
    lora_engine: str = "batched"
    progress: bool = True

    def __post_init__(self) -> None:
        check_choice("lora engine", self.lora_engine, LORA_ENGINES)

    def data(self, seed: int) -> FewShotData:
        """The few-shot data of ``seed`` (the loaded one, else the registered task's split)."""
        if self.datasets is not None:
            return self.datasets[seed]
        from lorank.data.load import load_task

        cfg = self.sweep
        return load_task(cfg.task, k=cfg.k, seed=seed, data_dir=cfg.data_dir,
                         test_max=cfg.test_max)


def run_linearized(job: TrainJob) -> Any:
    """The ``linearized`` mode: :func:`lorank.linearized.experiment.run_linearized_sweep`."""
    from lorank.linearized.experiment import run_linearized_sweep

    return run_linearized_sweep(job.sweep, _tqdm_progress(job.progress), load_data=job.data)


def _lazy(name: str) -> Callable[[TrainJob], Any]:
    """A runner imported from :mod:`lorank.cli.train_lora` on first use (peft is heavy)."""

    def run(job: TrainJob) -> Any:
        import importlib

        return getattr(importlib.import_module("lorank.cli.train_lora"), name)(job)

    return run


#: mode -> runner(job) -> result with table()/to_json() (and optionally render(title)).
RUNNERS: dict[str, Callable[[TrainJob], Any]] = {
    "linearized": run_linearized, "lora": _lazy("run_lora"), "both": _lazy("run_both")}


def render_table(rows: list[dict[str, Any]], title: str) -> None:
    """Print the per-rank table with rich."""
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
        table.add_row(str(row["rank"]), pm(row["w0"]), pm(row["kernel"]),
                      pm(row["selected"]), pm(row["final"]), lrs, steps,
                      f"{row.get('moved', 0)}/{row['n_seeds']}")
    wide_console(120).print(table)


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
            as_json: bool, no_progress: bool, lora_engine: str, memory_mb: float,
            no_cache: bool, **opts: Any) -> None:
    """Train LoRA at several ranks × seeds (× learning rates) and compare test accuracy.

    The data: a registered task (--task) or your own file (--data, see `lorank data show`).
    """
    own = pop_own_data_options(opts)
    source = source_from_options(task=opts["task"] if own["data"] else None, **own)
    check_choice("--mode", mode, RUNNERS)
    check_positive_ints(**{"--steps": opts["steps"], "--eval-every": opts["eval_every"]})
    check_number("--memory-mb", memory_mb, low=0)
    seed_list = parse_seeds(seeds)
    rank_list = check_positive_ranks(parse_ints(ranks, "ranks"))
    # before any model loads: seeds, every seed's data (bad files fail here), then the task,
    # the ranks against the model's config (config.json only) and the feature cache folder
    datasets = load_datasets(opts["task"], source, seeds=seed_list,
                             shots=opts["k"] if given("k") else None, data_dir=opts["data_dir"],
                             test_max=opts["test_max"])
    first = datasets[seed_list[0]]
    if source is not None:
        opts.update(data=source.pin(labels=first.task.labels), task=source.name,
                    k=first.k or opts["k"])
        echo_notes(source, first)
    job = TrainJob(sweep=sweep_config(opts, ranks=rank_list, seeds=seed_list, lrs=lrs,
                                      targets=targets, layers=layers, memory_mb=memory_mb,
                                      no_cache=no_cache),
                   datasets=datasets, lora_engine=lora_engine, progress=not no_progress)
    check_train_options(job.sweep, registered_task=source is None)
    from lorank.progress import library_progress

    with library_progress(not no_progress):
        result = RUNNERS[mode](job)
    cfg = job.sweep
    title = f"{mode} LoRA on {cfg.task} — {cfg.model}, {cfg.head} head"
    if as_json:
        click.echo(result.to_json())
        return
    if hasattr(result, "render"):
        result.render(title)
        return
    rows = result.table()
    metric = rows[0]["metric"] if rows else "accuracy"
    render_table(rows, f"{title} (test {metric}, mean ± std over {len(cfg.seeds)} seeds)")


def sweep_config(opts: Mapping[str, Any], *, ranks: list[int], seeds: list[int], lrs: str | None,
                 targets: str, layers: str, memory_mb: float, no_cache: bool) -> SweepConfig:
    """The command's options as the validated sweep record (the one place they are mapped)."""
    from lorank.linearized.experiment import DEFAULT_LRS, SweepConfig
    from lorank.linearized.train import LinearizedTraining
    from lorank.models.lora_shape import AdapterConfig

    train = ("steps", "eval_every", "loss", "weight_decay", "optimizer", "batch_size", "engine")
    fields = ("task", "model", "head", "lr_unit", "k", "test_max", "max_length", "dtype",
              "device", "data_dir", "data")
    adapter = AdapterConfig(ranks=tuple(ranks), alpha=opts.get("alpha"),
                            scaling=opts.get("scaling"), init="fan_in",
                            targets=tuple(parse_list(targets, "targets")),
                            layers=layers)
    return SweepConfig(
        **{name: opts.get(name) for name in fields},
        train=LinearizedTraining(**{name: opts.get(name) for name in train}),
        adapter=adapter, seeds=tuple(seeds),
        lrs=tuple(parse_floats(lrs, "learning rates")) if lrs else DEFAULT_LRS,
        memory_budget_mb=memory_mb, use_cache=not no_cache)
