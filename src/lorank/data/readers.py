"""Read labelled rows from TSV, CSV and JSON-lines files into a :class:`~lorank.data.Split`.

Every problem with a user's file (missing, empty, not UTF-8, ragged rows, unknown column, label
outside the declared set, empty text) becomes one :class:`LorankError` naming the file and, where
there is one, the line: ``data.csv:17: label 'maybe' is not one of the declared labels (neg, pos)``.

TSV files are read with ``csv.QUOTE_NONE`` (GLUE / LM-BFF TSVs contain stray ``"`` characters that
are part of the text); CSV files use standard quoting. A UTF-8 byte-order mark (MRPC's files
start with one) is removed; UTF-16 files with a BOM are decoded too.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lorank.data.dataset import Split
from lorank.data.tasks import label_order, label_string
from lorank.errors import LorankError, check_choice

Format = Literal["tsv", "csv", "jsonl"]
FORMATS: tuple[Format, ...] = ("csv", "tsv", "jsonl")
Record = tuple[int, dict[str, Any]]  # (line number, column -> value)

_SUFFIX_FORMAT: dict[str, Format] = {
    ".tsv": "tsv", ".tab": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".json": "jsonl",
}


def detect_format(path: Path, fmt: str | None = None) -> Format:
    """The file format from ``fmt`` or the suffix (.tsv/.tab, .csv, .jsonl/.ndjson/.json)."""
    if fmt is not None:
        return check_choice("data format", fmt, FORMATS)  # type: ignore[return-value]
    found = _SUFFIX_FORMAT.get(path.suffix.lower())
    if found is None:
        raise LorankError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
                          "use .tsv, .csv or .jsonl")
    return found


def read_text(path: Path) -> str:
    """File contents as text: UTF-8 (BOM removed) or BOM-marked UTF-16; one-line errors."""
    path = Path(path)
    if not path.exists():
        raise LorankError(f"{path}: file not found")
    if path.is_dir():
        raise LorankError(f"{path}: is a directory, expected a data file")
    data = path.read_bytes()
    encoding = "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        byte = data[exc.start : exc.start + 1].hex().upper()
        raise LorankError(f"{path}:{line}: not valid {encoding.upper().replace('-SIG', '')} "
                          f"(byte 0x{byte}); re-save the file as UTF-8") from None
    if not text.strip():
        raise LorankError(f"{path}: file is empty")
    return text


@contextmanager
def _large_fields() -> Iterator[None]:
    """Allow long fields (parse trees in MNLI files) without changing the limit for good."""
    old = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _read_delimited(path: Path, text: str, fmt: Format, columns: Sequence[str] | None = None
                    ) -> tuple[list[str], list[Record]]:
    """Header and records of a TSV (QUOTE_NONE) or CSV (QUOTE_MINIMAL) text; with ``columns``
    the file has no header row and ``columns`` names its fields in order."""
    delimiter, quoting = ("\t", csv.QUOTE_NONE) if fmt == "tsv" else (",", csv.QUOTE_MINIMAL)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting,
                        strict=True)
    header: list[str] | None = list(columns) if columns is not None else None
    records: list[Record] = []
    with _large_fields():
        try:
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if columns is not None and not records and _is_header(row, columns):
                    raise LorankError(f"{path}:{reader.line_num}: the first row "
                                      f"({', '.join(row)}) is a header, but --columns says the "
                                      "file has none; drop --columns, or the header row")
                if header is None:
                    header = [h.strip() for h in row]
                    if len(set(header)) != len(header):
                        raise LorankError(f"{path}:{reader.line_num}: repeated column names in "
                                          f"the header {header}")
                    continue
                if len(row) != len(header):
                    what = ("--columns names" if columns is not None else "the header has")
                    raise LorankError(f"{path}:{reader.line_num}: {len(row)} fields, {what} "
                                      f"{len(header)} (wrong delimiter or a stray tab?)")
                records.append((reader.line_num, dict(zip(header, row, strict=True))))
        except csv.Error as exc:
            raise LorankError(f"{path}:{reader.line_num}: malformed {fmt.upper()} ({exc})") \
                from None
    if header is None or (columns is not None and not records):
        raise LorankError(f"{path}: file is empty")
    return header, records


def _is_header(row: Sequence[str], columns: Sequence[str]) -> bool:
    """Whether a first row repeats the declared column names (a header in a headerless read)."""
    return [c.strip().lower() for c in row] == [c.strip().lower() for c in columns]


def _read_jsonl(path: Path, text: str) -> tuple[list[str], list[Record]]:
    """Records of a JSON-lines file (or a JSON array of objects); header = first record's keys."""
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LorankError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        pairs = [(i + 1, item) for i, item in enumerate(items)]
        unit = "item"
    else:
        pairs = []
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                pairs.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise LorankError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
        unit = "line"
    records: list[Record] = []
    for number, item in pairs:
        if not isinstance(item, dict):
            raise LorankError(f"{path}:{number}: each {unit} must be a JSON object "
                              f"{{\"column\": value, ...}}, got {type(item).__name__}")
        records.append((number, item))
    if not records:
        raise LorankError(f"{path}: file is empty")
    return list(records[0][1]), records


def read_records(path: str | Path, fmt: str | None = None, columns: Sequence[str] | None = None
                 ) -> tuple[list[str], list[Record]]:
    """Column names and ``(line, {column: value})`` records of a TSV, CSV or JSONL file.

    ``columns``: the file has no header row; these are its fields' names, in order (CSV/TSV).
    """
    path = Path(path)
    kind = detect_format(path, fmt)
    if columns is not None and kind == "jsonl":
        raise LorankError(f"{path}: --columns names the fields of a CSV/TSV file without a "
                          "header; JSON lines name their fields themselves")
    text = read_text(path)
    if kind == "jsonl":
        return _read_jsonl(path, text)
    return _read_delimited(path, text, kind, columns)


def _check_columns(path: Path, header: Sequence[str], wanted: Sequence[str],
                   hint: bool) -> None:
    """Every wanted column is in the header; else one line listing the columns (and, with
    ``hint``, how to read a file without a header row)."""
    for column in wanted:
        if column not in header:
            hint_text = (" (a file without a header row needs --columns, e.g. "
                         "--columns label,text)" if hint else "")
            raise LorankError(f"{path}: no column {column!r}; columns are: "
                              f"{', '.join(header)}{hint_text}")


def infer_labels(path: str | Path, *, label: str, fmt: str | None = None,
                 columns: Sequence[str] | None = None) -> tuple[str, ...]:
    """The label set of a file in :func:`~lorank.data.tasks.label_order`; LorankError on a
    missing label, or if the file has fewer than two labels."""
    path = Path(path)
    header, records = read_records(path, fmt, columns)
    _check_columns(path, header, [label], hint=columns is None)
    found = label_order([_label(path, line, record, label) for line, record in records])
    if len(found) < 2:
        raise LorankError(f"{path}: only one label ({', '.join(found) or 'none'}) in column "
                          f"{label!r}; a classification task needs at least two")
    return found


def _label(path: Path, line: int, record: dict[str, Any], column: str) -> str:
    """The label string in ``column`` (:func:`~lorank.data.tasks.label_string`); LorankError
    if it is missing or empty."""
    label = label_string(record.get(column))
    if not label:
        raise LorankError(f"{path}:{line}: missing label in column {column!r}")
    return label


def _text(path: Path, line: int, record: dict[str, Any], column: str) -> str | None:
    """The text in ``column`` (None when it is empty); LorankError if the record lacks it."""
    value = record.get(column)
    if column not in record:
        raise LorankError(f"{path}:{line}: no column {column!r} in this record")
    if value is None or not str(value).strip():
        return None
    return value if isinstance(value, str) else str(value)


EMPTY_TEXT = ("drop", "error")


def read_labelled(
    path: str | Path,
    *,
    name: str,
    text_columns: Sequence[str],
    label_column: str,
    labels: Sequence[str],
    fmt: str | None = None,
    columns: Sequence[str] | None = None,
    empty_text: str = "error",
    declared: bool = True,
    user_file: bool = True,
) -> tuple[Split, list[int]]:
    """Read a labelled file into a Split; also return the line numbers of dropped rows.

    Args:
        path: TSV, CSV or JSONL file with a header (TSV/CSV) or one object per line (JSONL).
        name: split name (``"train"``, ``"dev"``, ``"test"``).
        text_columns: one column (single-text task) or two (sentence pairs).
        label_column: the column holding label strings.
        labels: the label set; a row's label index is its position here.
        fmt: force ``"tsv"``, ``"csv"`` or ``"jsonl"`` instead of guessing from the suffix.
        columns: the file has no header row; the names of its fields in order (CSV/TSV).
        empty_text: ``"drop"`` rows whose text is empty (their lines are returned) or
            ``"error"`` (LorankError naming the line).
        declared: whether ``labels`` was declared by the user (wording of the error for a
            label outside the set).
        user_file: a user's file (an unknown column hints at ``--columns``), not a benchmark
            file of a registered task.
    """
    check_choice("empty text handling", empty_text, EMPTY_TEXT)
    path = Path(path)
    header, records = read_records(path, fmt, columns)
    _check_columns(path, header, [*text_columns, label_column],
                   hint=user_file and columns is None)
    index = {label: i for i, label in enumerate(labels)}
    texts: list[list[str]] = [[] for _ in text_columns]
    y: list[int] = []
    dropped: list[int] = []
    where = "declared labels" if declared else "labels of the training file"
    for line, record in records:
        label = _label(path, line, record, label_column)
        if label not in index:
            raise LorankError(f"{path}:{line}: label {label!r} is not one of the {where} "
                              f"({', '.join(labels)})")
        row = [_text(path, line, record, column) for column in text_columns]
        empty = [c for c, t in zip(text_columns, row, strict=True) if t is None]
        if empty:
            if empty_text == "error":
                raise LorankError(f"{path}:{line}: empty text in column {empty[0]!r}")
            dropped.append(line)
            continue
        y.append(index[label])
        for text, bucket in zip(row, texts, strict=True):
            bucket.append(text)
    split = Split(name=name, text_a=tuple(texts[0]),
                  text_b=tuple(texts[1]) if len(texts) == 2 else None,
                  labels=np.asarray(y, dtype=np.int64), source=str(path))
    return split, dropped
