"""``lorank head`` (alias ``lorank zeroshot``): a classification head at W0, before any LoRA.

Zero-shot heads (verbalizer, prompt) need no data but the test split: their numbers are zero-shot.
Fitted heads (probe, pair) fit a few numbers on each seed's k-shot train split (C chosen on its
dev split): their numbers are a *head at W0, fitted on train*, never called zero-shot. The data is a
registered task (``--task``) or your own files (``--data``, :mod:`lorank.cli.options_data`).
Reports the test accuracy, mean ± std over the LM-BFF seeds, next to the majority-class rate of
the test split.
"""

from __future__ import annotations

import json
from typing import Any

import click

from lorank.cli.options_data import (
    echo_notes,
    given,
    load_datasets,
    own_data_options,
    source_from_options,
)
from lorank.cli.options_run import wide_console
from lorank.cli.parsers import parse_seeds
from lorank.errors import LorankError, check_choice


def render(result: dict) -> None:
    """Print one result as a short rich table."""
    from rich.table import Table

    table = Table(title=f"{result['head']} head on {result['task']} — {result['model']}, "
                        f"{result['what']} ({result['test_rows']} test rows)",
                  title_justify="left")
    f1 = result.get("metric") == "f1"
    table.add_column("seed", justify="right")
    if f1:
        table.add_column("test F1", justify="right")
    table.add_column("test accuracy", justify="right")
    table.add_column("C (dev-selected)", justify="right")
    for row in result["per_seed"]:
        c = "-" if "C" not in row else f"{row['C']:g}"
        table.add_row(str(row["seed"]), *([f"{row['f1']:.4f}"] if f1 else []),
                      f"{row['accuracy']:.4f}", c)
    console = wide_console(100)
    console.print(table)
    console.print(f"mean ± std: {result['mean']:.4f} ± {result['std']:.4f}   "
                  f"majority-class rate: {result['majority_rate']:.4f}   "
                  f"margin: {result['mean'] - result['majority_rate']:+.4f}")
    if f1:
        console.print(f"F1 (the task's metric): {result['f1_mean']:.4f} ± {result['f1_std']:.4f}"
                      f"   always-positive F1: {result['f1_always_positive']:.4f}")


@click.command("head")
@click.option("--model", default="minilm", show_default=True,
              help="Bundled name (minilm, mpnet), local folder or hub id.")
@click.option("--task", default=None,
              help="Registered task (sst2, qnli, mrpc, rte, mnli), or one lending its labels "
                   "and words to --data.")
@click.option("--head", default="verbalizer", show_default=True,
              help="verbalizer, prompt, probe or pair.")
@click.option("--data-dir", default=None, help="Data directory (default: $LORANK_DATA_DIR).")
@click.option("--seeds", default="13,21,42,87,100", show_default=True,
              help="Comma-separated LM-BFF split seeds.")
@click.option("--shots", "k", default=16, show_default=True, type=int,
              help="Examples per class in train (k; with --dev-data: the files' own).")
@click.option("--test-max", default=None, type=int,
              help="Cap the test split at this many rows (seed-42 shuffle).")
@click.option("--tau", default=None, type=float, help="Verbaliser temperature (default 0.05).")
@click.option("--pair-features", default=None,
              help="Pair head features, comma-separated among cos, align (default: both).")
@click.option("--max-length", default=128, show_default=True, type=int,
              help="Maximum tokens per sequence.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@own_data_options
def command(model: str, task: str | None, head: str, data_dir: str | None, seeds: str, k: int,
            test_max: int | None, tau: float | None, pair_features: str | None, max_length: int,
            as_json: bool, **own: Any) -> None:
    """A head at W0 (zero-shot, or fitted on train) over seeds vs the majority rate."""
    from lorank.models.factory import HEADS

    source = source_from_options(task=task if own["data"] else None, **own)
    check_choice("--head", head, HEADS)
    if tau is not None and head != "verbalizer":
        raise LorankError("--tau applies to the verbalizer head only")
    if pair_features is not None and head != "pair":
        raise LorankError("--pair-features applies to the pair head only")
    seed_list = parse_seeds(seeds)
    datasets = load_datasets(task, source, seeds=seed_list, shots=k if given("k") else None,
                             data_dir=data_dir, test_max=test_max)
    first = datasets[seed_list[0]]
    spec = first.task
    if head == "pair" and not spec.is_pair:
        raise LorankError(f"the pair head needs a sentence-pair task; {spec.name} has one "
                          "text per row (use --head verbalizer or probe)")
    if first.test is None:
        raise LorankError(f"{spec.name} has no test split: give one with --test-data FILE")
    echo_notes(source, first)

    from transformers.utils import logging as hf_logging

    from lorank.models.encoder import load_encoder
    from lorank.models.evaluate import evaluate_head

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    enc = load_encoder(model)
    head_kw: dict = {} if tau is None else {"tau": tau}
    if pair_features is not None:
        head_kw["features"] = tuple(f.strip() for f in pair_features.split(",") if f.strip())
    result = evaluate_head(enc, spec, head, seed_list, data_dir=data_dir, test_max=test_max,
                           k=k, max_length=max_length, load_data=datasets.__getitem__,
                           **head_kw)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        render(result)
