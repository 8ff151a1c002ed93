"""A user's data source: one typed, validated description of "my own files", passed down whole.

The CLI's own-data options (``--data``, ``--dev-data``, ``--test-data``, ``--columns``,
``--text-a``, ``--text-b``, ``--label``, ``--labels``, ``--label-words``, ``--metric``,
``--data-format``, ``--empty-text``, ``--data-name``) and a sweep spec's ``data:`` entry both
build a :class:`DataSource`; every command and engine loads it with :func:`load_source`. The
spec keys are the field names (``train`` is ``--data``, ``dev`` is ``--dev-data``, ``test`` is
``--test-data``).

Two modes, as in LM-BFF (Gao, Fisch, Chen 2021): a *pool* file (no dev file) from which every
seed draws k training and k dev examples per class (``--shots k``), the undrawn rows being the
test split unless a test file is given; or *explicit* train/dev(/test) files used as they are.

Run identity: :meth:`DataSource.pin` fixes the label set (read from the file when not declared)
and the sha256 of the files' bytes, so a stored run names exactly the data it saw; an edited
file is a new run, and loading a pinned source whose files changed is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorank.data.custom import custom_files, load_custom
from lorank.data.dataset import FewShotData, Split
from lorank.data.readers import EMPTY_TEXT, FORMATS
from lorank.data.tasks import (
    METRICS,
    TaskSpec,
    get_task,
    label_words_for,
    parse_label_words,
    parse_labels,
)
from lorank.errors import LorankError, check_choice

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _names(value: Any, what: str) -> tuple[str, ...]:
    """``"label,text"`` or a list -> ("label", "text"); non-empty, distinct."""
    items = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(x, str) for x in items):
        raise LorankError(f"{what} must be column names, got {value!r}")
    names = tuple(x.strip() for x in items)
    if not names or any(not x for x in names):
        raise LorankError(f"{what} must be non-empty column names, e.g. label,text; got "
                          f"{value!r}")
    if len(set(names)) != len(names):
        raise LorankError(f"{what} repeats a column name: {', '.join(names)}")
    return names


def _path(value: Any, what: str) -> str:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise LorankError(f"{what} must be a file path, got {value!r}")
    return value


@dataclass(frozen=True)
class DataSource:
    """A user's own labelled files and how to read them (immutable, hashable, JSON-able).

    Attributes:
        train: the pool file to sample from (``dev`` None) or the explicit training file.
        dev: explicit dev file (then ``train`` is used unsampled).
        test: test file; None: the undrawn pool rows (pool mode) or no test split.
        columns: field names of a CSV/TSV file without a header row, in order.
        text_a, text_b, label: the text column(s) and the label column.
        labels: the label set in index order; None: read from ``train`` (numeric order for
            integer labels, else string order).
        label_words: (label, word) pairs for the verbaliser ("It is <word>.") and prompt heads.
        metric: ``"accuracy"`` or ``"f1"`` (binary F1 of label index 1), the primary metric
            used for dev selection and reports; None: the task's own (accuracy for a new one).
        data_format: ``"csv"``, ``"tsv"`` or ``"jsonl"``; None: from each file's suffix.
        empty_text: ``"drop"`` rows whose text is empty (counted) or ``"error"``.
        name: the task's name in tables and stores (default: the registered task's, else the
            training file's stem).
        task: a registered task lending its labels, template and label words.
        sha256: content hash of the files, set by :meth:`pin` (part of a run's identity).
    """

    train: str
    dev: str | None = None
    test: str | None = None
    columns: tuple[str, ...] | None = None
    text_a: str = "text"
    text_b: str | None = None
    label: str = "label"
    labels: tuple[str, ...] | None = None
    label_words: tuple[tuple[str, str], ...] | None = None
    metric: str | None = None
    data_format: str | None = None
    empty_text: str = "drop"
    name: str | None = None
    task: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "train", _path(self.train, "the data file (--data)"))
        for key, flag in (("dev", "--dev-data"), ("test", "--test-data")):
            if getattr(self, key) is not None:
                put(self, key, _path(getattr(self, key), f"{flag}"))
        for key, flag in (("text_a", "--text-a"), ("label", "--label"), ("text_b", "--text-b")):
            value = getattr(self, key)
            if value is None and key == "text_b":
                continue
            if not isinstance(value, str) or not value.strip():
                raise LorankError(f"{flag} must be one column name, got {value!r}")
            put(self, key, value.strip())
        used = [c for c in (self.text_a, self.text_b, self.label) if c is not None]
        if len(set(used)) != len(used):
            raise LorankError(f"--text-a, --text-b and --label must name different columns, "
                              f"got {', '.join(used)}")
        if self.columns is not None:
            put(self, "columns", _names(self.columns, "--columns"))
            if len(self.columns) < 2:
                raise LorankError("--columns needs at least a label and a text column, e.g. "
                                  "--columns label,text")
            missing = [c for c in used if c not in self.columns]
            if missing:
                raise LorankError(f"--columns {','.join(self.columns)} has no column "
                                  f"{missing[0]!r}; name the text and label columns with "
                                  "--text-a and --label")
        if self.labels is not None:
            put(self, "labels", parse_labels(self.labels))
        if self.label_words is not None:
            put(self, "label_words", parse_label_words(self.label_words))
            if self.labels is not None:
                label_words_for(self.labels, self.label_words, "--labels")
        if self.metric is not None:
            check_choice("--metric", self.metric, METRICS)
        if self.data_format is not None:
            check_choice("--data-format", self.data_format, FORMATS)
        check_choice("--empty-text", self.empty_text, EMPTY_TEXT)
        if self.columns is not None and (self.data_format == "jsonl" or any(
                Path(p).suffix.lower() in (".jsonl", ".ndjson", ".json") and self.data_format
                is None for p in self.files().values())):
            raise LorankError("--columns names the fields of CSV/TSV files without a header; "
                              "JSON lines name their fields themselves")
        if self.task is not None:
            spec = get_task(self.task)
            put(self, "task", spec.name)
            if self.name is None:
                put(self, "name", spec.name)
        if self.name is None:
            put(self, "name", Path(self.train).stem or "custom")
        if not isinstance(self.name, str) or not self.name.strip():
            raise LorankError(f"--data-name must be a non-empty name, got {self.name!r}")
        if self.sha256 is not None and not (isinstance(self.sha256, str)
                                            and _HEX64.match(self.sha256)):
            raise LorankError(f"data sha256 must be 64 hex digits, got {self.sha256!r}")

    @property
    def sampled(self) -> bool:
        """Pool mode: train and dev are drawn from ``train`` for every seed (LM-BFF)."""
        return self.dev is None

    def files(self) -> dict[str, str]:
        """The given files by role: ``{"train": ..., "dev": ..., "test": ...}``."""
        return {role: path for role, path in (("train", self.train), ("dev", self.dev),
                                              ("test", self.test)) if path is not None}

    def content_sha256(self) -> str:
        """sha256 over the role and sha256 of the bytes of every given file (LorankError if a
        file is missing)."""
        digests = {}
        for role, path in self.files().items():
            p = Path(path)
            if not p.is_file():
                what = "is a directory, expected a data file" if p.is_dir() else "file not found"
                raise LorankError(f"{path}: {what}")
            digests[role] = hashlib.sha256(p.read_bytes()).hexdigest()
        return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()

    def reader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~lorank.data.custom.load_custom` for this source."""
        return dict(text_a=self.text_a, label=self.label, labels=self.labels,
                    text_b=self.text_b, task=self.task, name=self.name, fmt=self.data_format,
                    columns=self.columns, label_words=self.label_words, metric=self.metric,
                    empty_text=self.empty_text)

    def task_spec(self) -> TaskSpec:
        """The task of this source (reads the training file when the labels are not given)."""
        return custom_files(self.train, **self.reader_kwargs()).spec

    def pin(self, labels: Sequence[str] | None = None) -> DataSource:
        """This source with its label set fixed (``labels``, else read from the training file)
        and the files' sha256 recorded; a source pinned before must still match its files."""
        digest = self.content_sha256()
        if self.sha256 is not None and digest != self.sha256:
            raise LorankError(f"data files of {self.name!r} changed since this run was defined "
                              f"(sha256 {digest[:12]}, expected {self.sha256[:12]}); "
                              "expand the sweep again")
        fixed = tuple(labels) if labels is not None else (self.labels or
                                                          self.task_spec().labels)
        return dataclasses.replace(self, labels=fixed, sha256=digest)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (lists for tuples, a {label: word} mapping for label words)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "label_words" and value is not None:
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "data") -> DataSource:
        """Build from :meth:`to_dict` output or a spec's ``data:`` mapping (unknown keys and
        bad values are LorankErrors naming ``where``)."""
        if isinstance(data, DataSource):
            return data
        if not isinstance(data, Mapping):
            raise LorankError(f"{where}: expected a mapping of data fields (train, columns, "
                              f"label_words, ...), got {type(data).__name__}")
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in allowed:
                raise LorankError(f"{where}.{key}: unknown key; allowed: {', '.join(allowed)}")
        if "train" not in data:
            raise LorankError(f"{where}.train: missing required key (the data file)")
        try:
            return cls(**dict(data))
        except LorankError as exc:
            raise LorankError(f"{where}: {exc}") from None


def load_source(source: DataSource, *, k: int | None = None, seed: int = 42,
                test_max: int | None = None) -> FewShotData:
    """Few-shot data of a user's source for one seed.

    Pool mode: LM-BFF draws k (default 16) train and k dev examples per class with ``seed``;
    the test split is the test file, else the undrawn rows. Explicit mode: the files as they
    are (``k`` None, or the k per class train must have). A pinned source checks first that
    its files are unchanged. ``test_max`` caps the test split (seed-42 shuffle).
    """
    if source.sha256 is not None:
        source.pin()
    return load_custom(source.train, source.dev, source.test, k=k, seed=seed,
                       test_max=test_max, **source.reader_kwargs())


def training_file(source: DataSource) -> tuple[TaskSpec, Split, dict[str, list[int]]]:
    """The task and the whole training file as one split (what ``prescribe --data`` counts when
    not asked to sample), with the lines of dropped empty-text rows."""
    files = custom_files(source.train, **source.reader_kwargs())
    dropped: dict[str, list[int]] = {}
    return files.spec, files.read(source.train, "train", dropped), dropped


def describe(source: DataSource, spec: TaskSpec, dropped: Mapping[str, Sequence[int]],
             pool_test_rows: int | None = None, heads: bool = True) -> list[str]:
    """Lines telling the user what was inferred or dropped while reading ``source``: the label
    set and its order when read from the file, the label words when none were given (only with
    ``heads``: when a head will use them), rows dropped for an empty text, and
    ``pool_test_rows`` when the test split is the undrawn rest of the pool."""
    out = []
    if source.labels is None and source.task is None:
        numeric = all(x.lstrip("-").isdigit() for x in spec.labels)
        out.append(f"labels read from {source.train}, in {'numeric' if numeric else 'sorted'} "
                   f"order: {', '.join(spec.labels)} (K = {spec.K}; label index = position; "
                   "--labels sets another order)")
    if heads and source.label_words is None and source.task is None:
        out.append(f"label words: the labels themselves ({', '.join(spec.label_words)}); "
                   "--label-words gives the verbalizer and prompt heads real words")
    for path, lines in dropped.items():
        many = len(lines) != 1
        shown = ", ".join(str(x) for x in lines[:5]) + (", ..." if len(lines) > 5 else "")
        out.append(f"dropped {len(lines)} row{'s' if many else ''} with an empty text from "
                   f"{path} (line{'s' if many else ''} {shown}); --empty-text error refuses "
                   "them")
    if pool_test_rows is not None:
        out.append(f"test split: the {pool_test_rows} rows of {source.train} not drawn for "
                   "train or dev (--test-data gives a test file)" if pool_test_rows else
                   f"no test split: every row of {source.train} went to train or dev "
                   "(--test-data gives a test file)")
    return out


def describe_data(source: DataSource, data: FewShotData) -> list[str]:
    """:func:`describe` for data loaded by :func:`load_source`."""
    pool_test = None
    if data.meta.get("mode") == "sampled" and source.test is None:
        pool_test = len(data.test) if data.test is not None else 0
    return describe(source, data.task, dict(data.meta.get("empty_text_dropped", {})),
                    pool_test)
