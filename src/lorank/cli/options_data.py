"""Reusable click options that select a few-shot data set, and the functions that load it.

Two groups of options, each defined once here:

* :func:`own_data_options` — a user's own files (``--data`` and friends), turned into one
  :class:`~lorank.data.DataSource` by :func:`source_from_options`; ``train``, ``zeroshot``,
  ``ntk``, ``prescribe`` and ``data show`` all take them;
* :func:`data_options` — a registered task (``--task --data-dir --shots --seed --source
  --test-max``) plus the own-data options, for ``lorank data show``::

    @click.command()
    @data_options
    def command(**kw):
        data = dataset_from_options(**pop_data_options(kw))   # FewShotData

Registered task:  ``--task sst2 --shots 16 --seed 42 [--data-dir DIR] [--source auto]``
Own file (pool):  ``--data my.csv --columns label,text --label-words 0=terrible,1=great``
                  (``--shots`` per class drawn for train and for dev; the rest is the test split)
Own files:        ``--data train.csv --dev-data dev.csv [--test-data test.csv]``

Commands that run over several seeds load every seed's data with :func:`load_datasets` before
any model is loaded, so a bad file or option fails in a second, and print what was inferred
(the label set and its order) or dropped (rows with an empty text) on stderr.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import click

from lorank.data.dataset import FewShotData
from lorank.data.load import ENV_DATA_DIR, SOURCES, Source, load_task, resolve_data_dir
from lorank.data.source import DataSource, describe_data, load_source
from lorank.errors import LorankError

F = TypeVar("F", bound=Callable[..., Any])

#: Python parameter names added by :func:`own_data_options` (the keywords of
#: :func:`source_from_options`).
OWN_DATA_OPTION_NAMES: tuple[str, ...] = (
    "data", "dev_data", "test_data", "columns", "text_a", "text_b", "label", "labels",
    "label_words", "metric", "data_format", "empty_text", "data_name",
)
#: Python parameter names added by :func:`data_options` (the keywords of dataset_from_options).
DATA_OPTION_NAMES: tuple[str, ...] = (
    "task", "data_dir", "shots", "seed", "source", "test_max", *OWN_DATA_OPTION_NAMES,
)
DEFAULT_SHOTS = 16
DEFAULT_SEED = 42

_OWN_OPTIONS = (
    click.option("--data", "data", default=None, metavar="FILE",
                 help="Your own labelled CSV/TSV/JSONL file: a pool that --shots examples per "
                      "class are drawn from for train and for dev (LM-BFF; the rest is the "
                      "test split), or the training file when --dev-data is given."),
    click.option("--dev-data", "dev_data", default=None, metavar="FILE",
                 help="Explicit dev file for --data (then --data is used unsampled)."),
    click.option("--test-data", "test_data", default=None, metavar="FILE",
                 help="Test file for --data (default: the pool rows not drawn; none with "
                      "--dev-data)."),
    click.option("--columns", "columns", default=None, metavar="A,B,...",
                 help="The files have no header row: the names of their fields in order, "
                      "e.g. label,text."),
    click.option("--text-a", "text_a", default=None, metavar="COL",
                 help="Column of the (first) text (default: text)."),
    click.option("--text-b", "text_b", default=None, metavar="COL",
                 help="Column of the second text (sentence-pair data)."),
    click.option("--label", "label", default=None, metavar="COL",
                 help="Column of the label (default: label)."),
    click.option("--labels", "labels", default=None, metavar="A,B,...",
                 help="The label set in index order (default: read from --data; numeric "
                      "order for integer labels, else sorted)."),
    click.option("--label-words", "label_words", default=None, metavar="L=W,...",
                 help="A word per label for the verbalizer and prompt heads, e.g. "
                      "0=terrible,1=great (default: the labels themselves)."),
    click.option("--metric", "metric", type=click.Choice(["accuracy", "f1"]), default=None,
                 help="Primary metric of your task, used for dev selection and reports "
                      "(f1: binary F1 of the second label; default accuracy)."),
    click.option("--data-format", "data_format", type=click.Choice(["tsv", "csv", "jsonl"]),
                 default=None, help="Format of the --data files (default: from the suffix)."),
    click.option("--empty-text", "empty_text", type=click.Choice(["drop", "error"]),
                 default="drop", show_default=True,
                 help="Rows whose text is empty: drop them (the count is printed) or stop."),
    click.option("--data-name", "data_name", default=None, metavar="NAME",
                 help="Name of your task in tables and stores (default: the file's stem)."),
)

_TASK_OPTIONS = (
    click.option("--task", "task", default=None, metavar="NAME",
                 help="Registered task (sst2, qnli, mrpc, rte, mnli; aliases accepted)."),
    click.option("--data-dir", "data_dir", default=None, envvar=ENV_DATA_DIR,
                 show_envvar=True, metavar="DIR",
                 help="Folder with k-shot/<TASK>/<k>-<seed>/ and pool/<TASK>.jsonl."),
    click.option("--k", "--shots", "shots", type=int, default=None, metavar="K",
                 help=f"Examples per class in train and dev (default {DEFAULT_SHOTS}; with "
                      "--dev-data: the files' own)."),
    click.option("--seed", "seed", type=click.IntRange(0, 2**32 - 1), default=DEFAULT_SEED,
                 show_default=True,
                 help="LM-BFF split seed (13, 21, 42, 87, 100)."),
    click.option("--source", "source", type=click.Choice(SOURCES), default="auto",
                 show_default=True,
                 help="lmbff folder, pool resampling, hub, or auto (folder > pool > hub)."),
    click.option("--test-max", "test_max", type=int, default=None, metavar="N",
                 help="Cap the test split at N rows (seed-42 shuffle, as Malladi et al.)."),
)


def _decorate(func: F, options: Sequence[Callable[[F], F]]) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def own_data_options(func: F) -> F:
    """Decorator adding the own-data options (see :data:`OWN_DATA_OPTION_NAMES`)."""
    return _decorate(func, _OWN_OPTIONS)


def data_options(func: F) -> F:
    """Decorator adding the data-selection options (see :data:`DATA_OPTION_NAMES`)."""
    return _decorate(func, (*_TASK_OPTIONS, *_OWN_OPTIONS))


def pop_data_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the data options from a command's ``kwargs`` and return them."""
    return {name: kwargs.pop(name) for name in DATA_OPTION_NAMES if name in kwargs}


def pop_own_data_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the own-data options from a command's ``kwargs`` and return them."""
    return {name: kwargs.pop(name) for name in OWN_DATA_OPTION_NAMES if name in kwargs}


def _origin(name: str) -> click.core.ParameterSource | None:
    """Where the current command's parameter ``name`` got its value (None: no such one)."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None or name not in ctx.params else ctx.get_parameter_source(name)


def given(name: str) -> bool:
    """Whether the option with parameter name ``name`` was given on the command line (or by
    its environment variable), not left at its default."""
    return _origin(name) not in (click.core.ParameterSource.DEFAULT, None)


def source_from_options(
    *,
    data: str | None = None,
    dev_data: str | None = None,
    test_data: str | None = None,
    columns: str | None = None,
    text_a: str | None = None,
    text_b: str | None = None,
    label: str | None = None,
    labels: str | None = None,
    label_words: str | None = None,
    metric: str | None = None,
    data_format: str | None = None,
    empty_text: str = "drop",
    data_name: str | None = None,
    task: str | None = None,
) -> DataSource | None:
    """The :class:`DataSource` of the own-data options (validated, no file read), or None
    without ``--data`` (LorankError if another own-data option was given then). ``task``: a
    registered task lending its labels, template and label words to ``--data``."""
    if data is None:
        flags = (("--dev-data", dev_data), ("--test-data", test_data), ("--columns", columns),
                 ("--text-a", text_a), ("--text-b", text_b), ("--label", label),
                 ("--labels", labels), ("--label-words", label_words), ("--metric", metric),
                 ("--data-format", data_format), ("--data-name", data_name),
                 ("--empty-text", None if empty_text == "drop" else empty_text))
        extra = [flag for flag, value in flags if value]
        if extra:
            raise LorankError(f"{', '.join(extra)} only apply with --data FILE")
        return None
    return DataSource(train=data, dev=dev_data, test=test_data, columns=columns,
                      text_a=text_a or "text", text_b=text_b, label=label or "label",
                      labels=labels, label_words=label_words, metric=metric,
                      data_format=data_format, empty_text=empty_text, name=data_name, task=task)


def echo_lines(lines: Sequence[str]) -> None:
    """Print notes on stderr, one ``lorank: ...`` line each (stdout stays for results)."""
    for line in lines:
        click.echo(f"lorank: {line}", err=True)


def echo_notes(source: DataSource | None, data: FewShotData) -> None:
    """Print on stderr what loading ``source`` inferred or dropped (nothing for a task)."""
    if source is not None:
        echo_lines(describe_data(source, data))


def load_datasets(
    task: str | None,
    source: DataSource | None,
    *,
    seeds: Sequence[int],
    shots: int | None = None,
    data_dir: str | None = None,
    test_max: int | None = None,
    quiet: bool = True,
) -> dict[int, FewShotData]:
    """Every seed's few-shot data, loaded (and so checked) before any model is.

    ``source`` (own files) wins over ``task`` (a registered task, or the task lending its spec
    to the source). ``shots``: examples per class (None: 16; with explicit own files, the
    files' own). Prints :func:`echo_notes` unless ``quiet`` (commands print them themselves
    once their own checks passed, so that an error stays one line).
    """
    if source is None and task is None:
        raise LorankError("choose the data: --task NAME (e.g. sst2) or --data FILE (your own "
                          "CSV/TSV/JSONL)")
    out: dict[int, FewShotData] = {}
    for seed in seeds:
        if source is not None and not source.sampled and out:
            out[seed] = next(iter(out.values()))  # explicit files: the same data every seed
        elif source is not None:
            k = shots if shots is not None or not source.sampled else DEFAULT_SHOTS
            out[seed] = load_source(source, k=k, seed=seed, test_max=test_max)
        else:
            out[seed] = load_task(cast(str, task), k=shots or DEFAULT_SHOTS, seed=seed,
                                  data_dir=data_dir, test_max=test_max)
    if not quiet and out:
        echo_notes(source, out[next(iter(out))])
    return out


def dataset_from_options(
    *,
    task: str | None = None,
    data_dir: str | None = None,
    shots: int | None = None,
    seed: int | None = DEFAULT_SEED,
    source: str = "auto",
    test_max: int | None = None,
    k: int | None = None,
    **own: Any,
) -> FewShotData:
    """FewShotData from the values of :func:`data_options`.

    ``--data`` loads a user's file (:func:`~lorank.data.load_source`; ``--task`` then lends a
    registered task's labels/template); otherwise ``--task`` loads a registered task
    (:func:`~lorank.data.load_task`). ``k`` is accepted as a synonym of ``shots`` and
    ``seed=None`` means the default seed 42. Raises LorankError on inconsistent flags.
    """
    if k is not None and shots is not None and k != shots:
        raise LorankError(f"conflicting shot counts k={k} and shots={shots}")
    shots = shots if shots is not None else k
    seed = DEFAULT_SEED if seed is None else seed
    own_source = source_from_options(task=task, **own)
    if own_source is None and task is not None:
        # a data dir click took from LORANK_DATA_DIR is named as such in the error message
        from_env = _origin("data_dir") == click.core.ParameterSource.ENVIRONMENT
        directory = resolve_data_dir(None if from_env else data_dir)
        return load_task(task, k=DEFAULT_SHOTS if shots is None else shots, seed=seed,
                         data_dir=directory, source=cast(Source, source), test_max=test_max)
    if own_source is not None and source != "auto":
        raise LorankError("--source applies to --task data, not to --data files")
    return load_datasets(None, own_source, seeds=[seed], shots=shots, test_max=test_max,
                         quiet=False)[seed]
