"""A user's data source: headerless files, inferred label sets, label words, the metric, empty
texts, pinning (sha256 of the files) and one-line errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lorank.data import DataSource, label_order, load_source, parse_label_words
from lorank.data.source import describe_data, training_file
from lorank.errors import LorankError


def headerless(path: Path, n: int = 48, labels=("0", "1"), empty=()) -> Path:
    """``label,text`` lines without a header; rows in ``empty`` have an empty text."""
    rows = [f"{labels[i % len(labels)]},{'' if i in empty else f'review number {i}'}"
            for i in range(n)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_headerless_pool_with_label_words(tmp_path):
    path = headerless(tmp_path / "reviews.csv")
    src = DataSource(train=str(path), columns=("label", "text"),
                     label_words="0=terrible,1=great")
    data = load_source(src, k=4, seed=13)
    spec = data.task
    assert spec.name == "reviews" and spec.labels == ("0", "1")
    assert spec.label_words == ("terrible", "great")
    assert spec.label_descriptions == ("It is terrible.", "It is great.")   # not "It is 1."
    assert spec.metrics == ("accuracy",) and spec.primary_metric == "accuracy"
    assert (data.N, len(data.dev), len(data.test)) == (8, 8, 48 - 16)
    assert data.train.text_a[0].startswith("review number")
    assert not set(data.test.text_a) & set(data.train.text_a + data.dev.text_a)


def test_label_set_read_from_file_in_numeric_or_sorted_order(tmp_path):
    path = headerless(tmp_path / "six.csv", n=60, labels=("10", "2", "0", "5", "1", "3"))
    src = DataSource(train=str(path), columns=("label", "text"))
    data = load_source(src, k=2, seed=1)
    assert data.task.labels == ("0", "1", "2", "3", "5", "10") and data.K == 6
    assert "in numeric order: 0, 1, 2, 3, 5, 10 (K = 6" in describe_data(src, data)[0]
    words = (tmp_path / "w.csv")
    words.write_text("text,label\n" + "".join(f"t{i},{['pos', 'neg', 'mid'][i % 3]}\n"
                                              for i in range(30)))
    data = load_source(DataSource(train=str(words)), k=2, seed=1)
    assert data.task.labels == ("mid", "neg", "pos")
    declared = load_source(DataSource(train=str(words), labels="neg,mid,pos"), k=2, seed=1)
    assert declared.task.labels == ("neg", "mid", "pos")


@given(st.lists(st.sampled_from(["0", "1", "2", "10", "-1"]), min_size=1, max_size=30),
       st.randoms())
def test_label_order_does_not_depend_on_row_order(values, rnd):
    shuffled = list(values)
    rnd.shuffle(shuffled)
    order = label_order(values)
    assert order == label_order(shuffled) and set(order) == set(values)
    assert [int(x) for x in order] == sorted(int(x) for x in order)


def test_metric_f1_for_binary_only(tmp_path):
    path = headerless(tmp_path / "b.csv")
    src = DataSource(train=str(path), columns=("label", "text"), metric="f1")
    assert load_source(src, k=4).task.primary_metric == "f1"
    six = headerless(tmp_path / "s.csv", n=36, labels=tuple("abcdef"))
    with pytest.raises(LorankError, match="--metric f1 is binary F1 and needs K = 2 labels; "
                                          "this task has K = 6"):
        load_source(DataSource(train=str(six), columns=("label", "text"), metric="f1"), k=2)


def test_empty_text_rows_dropped_with_count_or_refused(tmp_path):
    path = headerless(tmp_path / "e.csv", n=40, empty=(3, 17))
    src = DataSource(train=str(path), columns=("label", "text"))
    data = load_source(src, k=4, seed=42)
    assert data.meta["empty_text_dropped"] == {str(path): [4, 18]}
    assert len(data.train) + len(data.dev) + len(data.test) == 38
    assert any(f"dropped 2 rows with an empty text from {path} (lines 4, 18)" in line
               for line in describe_data(src, data))
    strict = DataSource(train=str(path), columns=("label", "text"), empty_text="error")
    with pytest.raises(LorankError, match=r"e\.csv:4: empty text in column 'text'"):
        load_source(strict, k=4)


def test_explicit_files_and_training_file(tmp_path):
    train = headerless(tmp_path / "train.csv", n=10)
    dev = headerless(tmp_path / "dev.csv", n=6)
    src = DataSource(train=str(train), dev=str(dev), columns=("label", "text"))
    data = load_source(src)
    assert (data.N, len(data.dev), data.test, data.k) == (10, 6, None, 5)
    spec, split, dropped = training_file(DataSource(train=str(headerless(
        tmp_path / "forty.csv", n=41, empty=(0,))), columns=("label", "text")))
    assert (spec.K, len(split), list(dropped.values())) == (2, 40, [[1]])


def test_jsonl_and_pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"q": f"q{i}", "s": f"s{i}", "y": i % 2}) + "\n"
                            for i in range(24)))
    src = DataSource(train=str(path), text_a="q", text_b="s", label="y",
                     label_words={0: "No", 1: "Yes"})
    data = load_source(src, k=4)
    assert data.task.is_pair and data.task.label_words == ("No", "Yes")
    assert data.train.text_b[0].startswith("s")


def test_pin_records_labels_and_sha_and_detects_edits(tmp_path):
    path = headerless(tmp_path / "p.csv")
    src = DataSource(train=str(path), columns=("label", "text"))
    pinned = src.pin()
    assert pinned.labels == ("0", "1") and len(pinned.sha256) == 64
    assert pinned == src.pin() and hash(pinned) == hash(src.pin())
    assert DataSource.from_dict(json.loads(json.dumps(pinned.to_dict()))) == pinned
    path.write_text(path.read_text() + "1,one more review\n")
    assert src.pin().sha256 != pinned.sha256
    with pytest.raises(LorankError, match="changed since this run was defined"):
        load_source(pinned, k=4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(columns="label"), "--columns needs at least a label and a text column"),
    (dict(columns="label,label"), "--columns repeats a column name"),
    (dict(columns="y,text"), "--columns y,text has no column 'label'"),
    (dict(text_a="label"), "must name different columns"),
    (dict(text_a=["a", "b"]), "--text-a must be one column name"),
    (dict(label_words="0:bad"), "LABEL=WORD pairs"),
    (dict(label_words="0=bad,0=worse"), "name a label twice"),
    (dict(labels="0,1", label_words="0=bad"), "no word for label(s) 1"),
    (dict(labels="0,1", label_words="0=bad,1=good,2=meh"), "label(s) 2 are not in --labels"),
    (dict(metric="auc"), "--metric must be one of accuracy, f1"),
    (dict(empty_text="keep"), "--empty-text must be one of drop, error, got 'keep'"),
    (dict(data_format="xml"), "--data-format must be one of csv, tsv, jsonl"),
    (dict(task="cola"), "unknown task 'cola'"),
    (dict(train=""), "must be a file path"),
])
def test_bad_source_is_one_line(kwargs, message):
    with pytest.raises(LorankError) as exc:
        DataSource(**{"train": "x.csv", **kwargs})
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_bad_files_are_one_line(tmp_path):
    with_header = tmp_path / "h.csv"
    with_header.write_text("label,text\n" + "".join(f"{i % 2},t{i}\n" for i in range(20)))
    with pytest.raises(LorankError, match=r"h\.csv:1: the first row \(label, text\) is a "
                                          "header, but --columns says the file has none"):
        load_source(DataSource(train=str(with_header), columns=("label", "text")), k=2)
    no_header = headerless(tmp_path / "n.csv")
    with pytest.raises(LorankError, match=r"no column 'label'; columns are: 0, review number 0 "
                                          r"\(a file without a header row needs --columns"):
        load_source(DataSource(train=str(no_header)), k=2)
    words = DataSource(train=str(no_header), columns=("label", "text"), label_words="0=bad")
    with pytest.raises(LorankError, match=r"--label-words: no word for label\(s\) 1; the "
                                          "labels are 0, 1"):
        load_source(words, k=2)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "label": 0}\n')
    with pytest.raises(LorankError, match="JSON lines name their fields themselves"):
        DataSource(train=str(jsonl), columns=("label", "text"))
    one = tmp_path / "one.csv"
    one.write_text("0,a\n0,b\n")
    with pytest.raises(LorankError, match=r"only one label \(0\) in column 'label'"):
        load_source(DataSource(train=str(one), columns=("label", "text")))


def test_parse_label_words_forms():
    assert parse_label_words("0=terrible, 1 = great") == (("0", "terrible"), ("1", "great"))
    assert parse_label_words({0: "bad", 1.0: "good"}) == (("0", "bad"), ("1", "good"))
    assert parse_label_words([("a", "x")]) == (("a", "x"),)
    with pytest.raises(LorankError, match="need a label and a word"):
        parse_label_words("0=")


def test_sampling_is_lmbff_on_the_rows_kept(tmp_path):
    """Dropping empty rows happens before the LM-BFF shuffle: the sample equals the sample of
    the same file without those rows."""
    rnd = random.Random(0)
    rows = [f"{rnd.choice('01')},text {i}" for i in range(50)]
    full = tmp_path / "full.csv"
    full.write_text("\n".join([*rows[:10], "1,", *rows[10:]]) + "\n")
    clean = tmp_path / "clean.csv"
    clean.write_text("\n".join(rows) + "\n")
    a = load_source(DataSource(train=str(full), columns=("label", "text")), k=5, seed=87)
    b = load_source(DataSource(train=str(clean), columns=("label", "text")), k=5, seed=87)
    assert a.train == b.train and a.dev == b.dev
