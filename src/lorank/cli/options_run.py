"""Click options shared by the commands that train on a task at several ranks and seeds
(``lorank train``, ``lorank pl``, ``lorank predict-rank``): one definition, one help text; and
the table output the commands share (:func:`wide_console`, :func:`pm`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import click

from lorank.errors import check_positive_int


def experiment_options(ranks: str = "1,2,4,8,12,16", own_data: bool = False
                       ) -> Callable[[Any], Any]:
    """Add --task --model --head --targets --layers --ranks --seeds --shots --max-length --dtype
    --data-dir (``--ranks`` defaults to ``ranks``); with ``own_data``, --task becomes optional
    and the own-data options (:func:`lorank.cli.options_data.own_data_options`) are added."""
    options = [
        click.option("--task", required=not own_data,
                     help="Registered task (sst2, qnli, mrpc, rte, mnli)"
                          + (", or one lending its labels and words to --data." if own_data
                             else ".")),
        click.option("--model", default="minilm", show_default=True,
                     help="Bundled name (minilm, mpnet), local folder or hub id."),
        click.option("--head", default="verbalizer", show_default=True,
                     help="verbalizer, prompt, probe or pair."),
        click.option("--targets", default="query,value", show_default=True),
        click.option("--layers", default="last", show_default=True,
                     help="all, last, or comma-separated layer indices."),
        click.option("--ranks", default=ranks, show_default=True),
        click.option("--seeds", default="13,21,42,87,100", show_default=True,
                     help="LM-BFF split seeds (also the LoRA init seeds)."),
        click.option("--shots", "k", default=16, show_default=True, type=int,
                     help="Examples per class in train and in dev"
                          + (" (with --dev-data: the files' own)." if own_data else ".")),
        click.option("--max-length", default=128, show_default=True, type=int),
        click.option("--dtype", default="float32", show_default=True,
                     type=click.Choice(["float32", "float64"])),
        click.option("--data-dir", default=None,
                     help="Data directory (default: $LORANK_DATA_DIR)."),
    ]

    def decorate(f: Any) -> Any:
        if own_data:  # listed after the options above in --help
            from lorank.cli.options_data import own_data_options

            f = own_data_options(f)
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def wide_console(width: int) -> Any:
    """A rich Console at least ``width`` columns wide, so that a command's table keeps its
    columns in a narrow or captured terminal."""
    from rich.console import Console

    console = Console()
    console.width = max(console.width, width)
    return console


def pm(pair: Any, fmt: str = ".4f") -> str:
    """A ``(mean, std)`` pair as ``"0.8125 ± 0.0100"`` (``fmt`` for both); ``"-"`` when the mean
    is missing or not finite."""
    mean, std = pair
    return "-" if mean is None or not math.isfinite(mean) else f"{mean:{fmt}} ± {std:{fmt}}"


def set_threads(threads: int | None) -> None:
    """``--threads``: torch CPU threads (LorankError if < 1; None keeps torch's default)."""
    if threads is not None:
        import torch

        torch.set_num_threads(check_positive_int("--threads", threads))


def grid_kwargs(task: str, ranks: str, seeds: str, targets: str, layers: str, lrs: str,
                lr_mults: str) -> dict[str, Any]:
    """Parsed task/grid/learning-rate options as config keyword arguments (``lrs="auto"`` → None).
    An unknown task is a one-line error here, before any model is loaded."""
    from lorank.cli.parsers import parse_floats, parse_ints, parse_list, parse_seeds
    from lorank.data.tasks import get_task
    from lorank.models.lora_shape import AdapterConfig

    get_task(task)
    adapter = AdapterConfig(ranks=tuple(parse_ints(ranks, "ranks")),
                            targets=tuple(parse_list(targets, "targets")),
                            layers=layers)
    return dict(task=task, adapter=adapter,
                seeds=tuple(parse_seeds(seeds)),
                lrs=None if str(lrs).strip() == "auto" else tuple(
                    parse_floats(lrs, "learning rates")),
                lr_mults=tuple(parse_floats(lr_mults, "lr multipliers")))
