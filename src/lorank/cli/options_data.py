"""Reusable click options that select a few-shot data set, and the function that loads it.

Any command gets the same data flags with one decorator and turns them into
:class:`~lorank.data.FewShotData` with one call::

    @click.command()
    @data_options
    def command(**kw):
        data_kw = pop_data_options(kw)          # remove the data flags from kw
        data = dataset_from_options(**data_kw)  # FewShotData (LorankError on bad input)

Registered task:  ``--task sst2 --shots 16 --seed 42 [--data-dir DIR] [--source auto]``
Own file:         ``--data my.csv --text-a review --label stars --labels neg,pos``
                  (``--text-b`` for pairs; ``--dev-data`` / ``--test-data`` for explicit files)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from lorank.data.custom import load_custom
from lorank.data.dataset import FewShotData
from lorank.data.load import ENV_DATA_DIR, SOURCES, Source, load_task, resolve_data_dir
from lorank.errors import LorankError

F = TypeVar("F", bound=Callable[..., Any])

#: Python parameter names added by :func:`data_options` (the keywords of dataset_from_options).
DATA_OPTION_NAMES: tuple[str, ...] = (
    "task", "data_dir", "shots", "seed", "source", "test_max", "data", "dev_data", "test_data",
    "text_a", "text_b", "label", "labels", "data_format",
)
DEFAULT_SHOTS = 16
DEFAULT_SEED = 42

_OPTIONS = (
    click.option("--task", "task", default=None, metavar="NAME",
                 help="Registered task (sst2, qnli, mrpc, rte, mnli; aliases accepted)."),
    click.option("--data-dir", "data_dir", default=None, envvar=ENV_DATA_DIR,
                 show_envvar=True, metavar="DIR",
                 help="Folder with k-shot/<TASK>/<k>-<seed>/ and pool/<TASK>.jsonl."),
    click.option("--k", "--shots", "shots", type=int, default=None, metavar="K",
                 help=f"Examples per class in train and dev (default {DEFAULT_SHOTS})."),
    click.option("--seed", "seed", type=click.IntRange(0, 2**32 - 1), default=DEFAULT_SEED,
                 show_default=True,
                 help="LM-BFF split seed (13, 21, 42, 87, 100)."),
    click.option("--source", "source", type=click.Choice(SOURCES), default="auto",
                 show_default=True,
                 help="lmbff folder, pool resampling, hub, or auto (folder > pool > hub)."),
    click.option("--test-max", "test_max", type=int, default=None, metavar="N",
                 help="Cap the test split at N rows (seed-42 shuffle, as Malladi et al.)."),
    click.option("--data", "data", default=None, metavar="FILE",
                 help="Your own CSV/TSV/JSONL file (train; sampled into train/dev unless "
                      "--dev-data is given)."),
    click.option("--dev-data", "dev_data", default=None, metavar="FILE",
                 help="Explicit dev file for --data (then --data is used unsampled)."),
    click.option("--test-data", "test_data", default=None, metavar="FILE",
                 help="Test file for --data (optional)."),
    click.option("--text-a", "text_a", default=None, metavar="COL",
                 help="Column of the (first) text in --data."),
    click.option("--text-b", "text_b", default=None, metavar="COL",
                 help="Column of the second text (sentence-pair data)."),
    click.option("--label", "label", default=None, metavar="COL",
                 help="Column of the label in --data."),
    click.option("--labels", "labels", default=None, metavar="A,B,...",
                 help="Declared label set of --data, in order (label index = position)."),
    click.option("--data-format", "data_format", type=click.Choice(["tsv", "csv", "jsonl"]),
                 default=None, help="Format of --data files (default: from the suffix)."),
)


def data_options(func: F) -> F:
    """Decorator adding the data-selection options (see :data:`DATA_OPTION_NAMES`)."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def pop_data_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the data options from a command's ``kwargs`` and return them."""
    return {name: kwargs.pop(name) for name in DATA_OPTION_NAMES if name in kwargs}


def _data_dir_from_env() -> bool:
    """Whether click took ``--data-dir`` from LORANK_DATA_DIR (for the error message)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or "data_dir" not in ctx.params:
        return False
    return ctx.get_parameter_source("data_dir") == click.core.ParameterSource.ENVIRONMENT


def dataset_from_options(
    *,
    task: str | None = None,
    data_dir: str | None = None,
    shots: int | None = None,
    seed: int | None = DEFAULT_SEED,
    source: str = "auto",
    test_max: int | None = None,
    data: str | None = None,
    dev_data: str | None = None,
    test_data: str | None = None,
    text_a: str | None = None,
    text_b: str | None = None,
    label: str | None = None,
    labels: str | None = None,
    data_format: str | None = None,
    k: int | None = None,
) -> FewShotData:
    """FewShotData from the values of :func:`data_options`.

    ``--data`` loads a user's file (:func:`~lorank.data.load_custom`; ``--task`` then lends a
    registered task's labels/template); otherwise ``--task`` loads a registered task
    (:func:`~lorank.data.load_task`). ``k`` is accepted as a synonym of ``shots`` and
    ``seed=None`` means the default seed 42. Raises LorankError on inconsistent flags.
    """
    if k is not None and shots is not None and k != shots:
        raise LorankError(f"conflicting shot counts k={k} and shots={shots}")
    shots = shots if shots is not None else k
    seed = DEFAULT_SEED if seed is None else seed
    if data is None:
        given = [f for f, v in (("--dev-data", dev_data), ("--test-data", test_data),
                                ("--text-a", text_a), ("--text-b", text_b), ("--label", label),
                                ("--labels", labels), ("--data-format", data_format)) if v]
        if given:
            raise LorankError(f"{', '.join(given)} only apply with --data FILE")
        if task is None:
            raise LorankError("choose the data: --task NAME (e.g. sst2) or --data FILE with "
                              "--text-a COL --label COL --labels A,B")
        directory = resolve_data_dir(None if _data_dir_from_env() else data_dir)
        return load_task(task, k=DEFAULT_SHOTS if shots is None else shots, seed=seed,
                         data_dir=directory, source=cast(Source, source), test_max=test_max)
    if source != "auto":
        raise LorankError("--source applies to --task data, not to --data files")
    if not text_a or not label:
        missing = [f for f, v in (("--text-a", text_a), ("--label", label)) if not v]
        raise LorankError(f"--data needs {' and '.join(missing)} (the column names)")
    return load_custom(data, dev_data, test_data, text_a=text_a, text_b=text_b, label=label,
                       labels=labels, k=shots, seed=seed, task=task, fmt=data_format,
                       test_max=test_max)
