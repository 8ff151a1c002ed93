"""Click options shared by the commands that train on a task at several ranks and seeds
(``lorank train``, ``lorank pl``, ``lorank predict-rank``): one definition, one help text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


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


def set_threads(threads: int | None) -> None:
    """``--threads``: torch CPU threads (LorankError if < 1; None keeps torch's default)."""
    from lorank.errors import LorankError

    if threads is None:
        return
    if threads < 1:
        raise LorankError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def grid_kwargs(task: str, ranks: str, seeds: str, targets: str, layers: str, lrs: str,
                lr_mults: str) -> dict[str, Any]:
    """Parsed task/grid/learning-rate options as config keyword arguments (``lrs="auto"`` → None).
    An unknown task is a one-line error here, before any model is loaded."""
    from lorank.cli.checks import check_seeds
    from lorank.cli.parsers import parse_floats, parse_ints, parse_layers, parse_list
    from lorank.data.tasks import get_task
    from lorank.models.lora_shape import AdapterConfig

    get_task(task)
    adapter = AdapterConfig(ranks=tuple(parse_ints(ranks, "ranks")),
                            targets=tuple(parse_list(targets, "targets")),
                            layers=parse_layers(layers))
    return dict(task=task, adapter=adapter,
                seeds=tuple(check_seeds(parse_ints(seeds, "seeds"))),
                lrs=None if str(lrs).strip() == "auto" else tuple(
                    parse_floats(lrs, "learning rates")),
                lr_mults=tuple(parse_floats(lr_mults, "lr multipliers")))
