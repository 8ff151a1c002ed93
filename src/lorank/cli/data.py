"""``lorank data``: inspect few-shot data sets and the task registry.

    lorank data show --task sst2 --k 16 --seed 42 [--data-dir DIR] [--json]
    lorank data show --data reviews.csv --text-a text --label stars --labels neg,pos --k 8
    lorank data tasks [--json]
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from lorank.cli.options_data import data_options, dataset_from_options, pop_data_options
from lorank.data.dataset import FewShotData
from lorank.data.tasks import REGISTRY, TaskSpec


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _data_table(data: FewShotData) -> Table:
    """Rows per split: size, examples per label, majority-class rate, file."""
    table = Table(title=f"{data.task.name}: K={data.K}, N={data.N}, k={data.k}, "
                        f"seed={data.seed}")
    table.add_column("split")
    table.add_column("rows", justify="right")
    for label in data.task.labels:
        table.add_column(label, justify="right")
    table.add_column("majority rate", justify="right")
    summary = data.summary()["splits"]
    for name, info in summary.items():
        rate = info["majority_rate"]
        table.add_row(name, str(info["rows"]), *(str(c) for c in info["per_label"].values()),
                      "-" if rate is None else f"{rate:.3f}")
    return table


@click.group(name="data")
def command() -> None:
    """Inspect few-shot data sets (LM-BFF folders, pools, hub, your own files)."""


@command.command(name="show")
@data_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def show(as_json: bool, **kw: Any) -> None:
    """Counts, label balance and majority rate of each split of a data set."""
    data = dataset_from_options(**pop_data_options(kw))
    if as_json:
        click.echo(json.dumps(data.summary(), indent=2))
        return
    console = _console()
    console.print(_data_table(data))
    console.print(f"source: {data.source}")
    if data.meta:
        console.print("meta: " + ", ".join(f"{k}={v}" for k, v in data.meta.items()))


def _task_record(spec: TaskSpec) -> dict[str, Any]:
    return {
        "name": spec.name, "aliases": list(spec.aliases), "K": spec.K,
        "labels": list(spec.labels), "text_fields": list(spec.text_fields),
        "metrics": list(spec.metrics), "template": spec.template,
        "label_words": list(spec.label_words),
        "label_descriptions": list(spec.label_descriptions), "version": spec.version,
        "fingerprint": spec.fingerprint,
        "hub": f"{spec.hub.path}/{spec.hub.name}" if spec.hub else None,
    }


@command.command(name="tasks")
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
def tasks(as_json: bool) -> None:
    """The registered tasks: labels, template, label words, verbaliser."""
    records = [_task_record(spec) for spec in REGISTRY]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    table = Table(title="registered tasks")
    for column in ("task", "K", "labels", "metrics", "template", "label words"):
        table.add_column(column)
    for r in records:
        table.add_row(r["name"], str(r["K"]), ", ".join(r["labels"]), ", ".join(r["metrics"]),
                      r["template"], ", ".join(r["label_words"]))
    _console().print(table)
