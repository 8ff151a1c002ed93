"""Click options shared by the commands that train on a task at several ranks and seeds
(``lorank train``, ``lorank pl``, ``lorank predict-rank``): one definition, one help text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def experiment_options(ranks: str = "1,2,4,8,12,16") -> Callable[[Any], Any]:
    """Add --task --model --head --targets --layers --ranks --seeds --shots --max-length --dtype
    --data-dir (``--ranks`` defaults to ``ranks``)."""
    options = [
        click.option("--task", required=True,
                     help="Registered task (sst2, qnli, mrpc, rte, mnli)."),
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
        click.option("--shots", "k", default=16, show_default=True, type=int),
        click.option("--max-length", default=128, show_default=True, type=int),
        click.option("--dtype", default="float32", show_default=True,
                     type=click.Choice(["float32", "float64"])),
        click.option("--data-dir", default=None,
                     help="Data directory (default: $LORANK_DATA_DIR)."),
    ]

    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate
