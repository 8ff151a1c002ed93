"""A user's own CSV / TSV / JSONL files: roundtrips, sampling and explicit modes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lorank.data import get_task, lmbff_sample, load_custom, majority_rate

ROWS = [(f"text {i}, with \"quotes\" and\ttab" if i % 7 == 0 else f"text {i}",
         f"other {i}", ["neg", "pos", "mid"][i % 3]) for i in range(60)]


def write(path: Path, rows, fmt: str, cols=("review", "second", "stars")) -> Path:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(dict(zip(cols, r, strict=True))) + "\n"
                                for r in rows), encoding="utf-8")
    elif fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            w.writerows(rows)
    else:
        clean = [tuple(c.replace("\t", " ") for c in r) for r in rows]
        path.write_text("\t".join(cols) + "\n" + "".join("\t".join(r) + "\n" for r in clean),
                        encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_roundtrip_explicit_files(tmp_path, fmt):
    train = write(tmp_path / f"train.{fmt}", ROWS[:30], fmt)
    dev = write(tmp_path / f"dev.{fmt}", ROWS[30:45], fmt)
    test = write(tmp_path / f"test.{fmt}", ROWS[45:], fmt)
    data = load_custom(train, dev, test, text_a="review", text_b="second", label="stars",
                       labels="neg,pos,mid")
    assert data.task.labels == ("neg", "pos", "mid") and data.K == 3 and data.task.is_pair
    assert (data.N, len(data.dev), len(data.test)) == (30, 15, 15)
    assert data.k == 10 and data.seed is None and data.meta["mode"] == "explicit"
    expect_a = [r[0] if fmt != "tsv" else r[0].replace("\t", " ") for r in ROWS[:30]]
    assert list(data.train.text_a) == expect_a
    assert list(data.train.text_b) == [r[1] for r in ROWS[:30]]
    assert data.train.labels.tolist() == [i % 3 for i in range(30)]
    assert majority_rate(data.test) == pytest.approx(1 / 3)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_single_file_is_sampled_like_lmbff(tmp_path, fmt):
    path = write(tmp_path / f"all.{fmt}", ROWS, fmt)
    data = load_custom(path, text_a="review", label="stars", labels=["neg", "pos", "mid"],
                       k=4, seed=13)
    assert data.N == 12 and data.train.counts(3).tolist() == [4, 4, 4]
    assert data.dev.counts(3).tolist() == [4, 4, 4]
    # no test file: the test split is the pool rows drawn for neither train nor dev
    assert len(data.test) == 60 - 24 and data.meta["test"] == "rest of the pool"
    assert not set(data.test.text_a) & set(data.train.text_a + data.dev.text_a)
    assert data.train.text_b is None and not data.task.is_pair
    train_idx, dev_idx = lmbff_sample([r[2] for r in ROWS], 4, 13)
    texts = [r[0] if fmt != "tsv" else r[0].replace("\t", " ") for r in ROWS]
    assert list(data.train.text_a) == [texts[i] for i in train_idx]
    assert list(data.dev.text_a) == [texts[i] for i in dev_idx]
    again = load_custom(path, text_a="review", label="stars", labels="neg,pos,mid", k=4, seed=13)
    assert again.train == data.train


def test_single_file_with_test_is_deduplicated(tmp_path):
    rows = ROWS + ROWS[:6]  # repeats
    path = write(tmp_path / "all.csv", rows, "csv")
    test = write(tmp_path / "test.csv", ROWS[6:12], "csv")
    data = load_custom(path, test=test, text_a="review", label="stars", labels="neg,pos,mid",
                       k=3, seed=42)
    assert data.meta["duplicates"] == 6 and data.meta["test_overlap"] == 6
    assert not set(data.train.text_a + data.dev.text_a) & set(data.test.text_a)


def test_jsonl_numeric_labels_and_registered_task(tmp_path):
    path = tmp_path / "sst.jsonl"
    path.write_text("".join(json.dumps({"sentence": f"s{i}", "label": i % 2}) + "\n"
                            for i in range(40)), encoding="utf-8")
    data = load_custom(path, text_a="sentence", label="label", task="sst2", k=8, seed=21)
    assert data.task is get_task("sst2") and data.N == 16
    assert data.task.label_words == ("terrible", "great")


def test_json_array_and_bom_and_utf16(tmp_path):
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps([{"t": "a", "y": "x"}, {"t": "b", "y": "z"}]), encoding="utf-8")
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufefft,y\nc,x\nd,z\n".encode())
    u16 = tmp_path / "u16.tsv"
    u16.write_bytes("t\ty\ne\tx\nf\tz\n".encode("utf-16"))
    data = load_custom(arr, bom, u16, text_a="t", label="y", labels="x,z")
    assert data.train.text_a == ("a", "b") and data.dev.text_a == ("c", "d")
    assert data.test.text_a == ("e", "f") and data.k == 1


def test_test_cap_on_custom(tmp_path):
    train = write(tmp_path / "t.csv", ROWS, "csv")
    data = load_custom(train, train, train, text_a="review", label="stars",
                       labels="neg,pos,mid", test_max=10)
    assert len(data.test) == 10 and data.meta["test_max"] == 10
    assert np.isin(data.test.text_a, data.train.text_a).all()
