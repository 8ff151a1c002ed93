"""Every bad input gives one LorankError naming the file and, where there is one, the line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lorank.data import Split, load_custom, load_task, majority_rate, resolve_data_dir
from lorank.data.readers import read_labelled
from lorank.errors import LorankError


def load(path: Path, **kw):
    args = {"text_a": "text", "label": "label", "labels": "neg,pos", "k": 2, "seed": 1}
    return load_custom(path, **{**args, **kw})


def good_rows(n: int = 8) -> str:
    return "text,label\n" + "".join(f"t{i},{['neg', 'pos'][i % 2]}\n" for i in range(n))


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    with pytest.raises(LorankError) as exc:
        load(tmp_path / "nope.csv")
    assert one_line(exc) == f"{tmp_path / 'nope.csv'}: file not found"


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(LorankError, match="is a directory"):
        load(tmp_path / "d.csv")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl"])
def test_empty_file(tmp_path, content, suffix):
    path = tmp_path / f"e.{suffix}"
    path.write_text(content)
    with pytest.raises(LorankError, match=r"e\.\w+: file is empty"):
        load(path)


def test_header_only_has_no_examples(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("text,label\n")
    with pytest.raises(LorankError, match="class 'neg' has only 0 examples"):
        load(path)


def test_unknown_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(good_rows())
    with pytest.raises(LorankError) as exc:
        load(path, text_a="review")
    assert one_line(exc) == (f"{path}: no column 'review'; columns are: text, label (a file "
                             "without a header row needs --columns, e.g. --columns label,text)")


def test_label_outside_declared_set(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(good_rows() + "odd one,maybe\n")
    with pytest.raises(LorankError) as exc:
        load(path)
    assert one_line(exc) == (f"{path}:10: label 'maybe' is not one of the declared labels "
                             "(neg, pos)")


def test_missing_label_and_empty_text(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a", "label": "neg"}) + "\n"
                    + json.dumps({"text": "b", "label": None}) + "\n")
    with pytest.raises(LorankError, match=r"d\.jsonl:2: missing label in column 'label'"):
        load(path)
    path.write_text(json.dumps({"text": "a", "label": "neg"}) + "\n\n"
                    + json.dumps({"text": " ", "label": "pos"}) + "\n")
    with pytest.raises(LorankError, match=r"d\.jsonl:3: empty text in column 'text'"):
        load(path, empty_text="error")
    path.write_text(json.dumps({"text": "a", "label": "neg"}) + "\n"
                    + json.dumps({"label": "pos"}) + "\n")
    with pytest.raises(LorankError, match=r"d\.jsonl:2: no column 'text' in this record"):
        load(path)


def test_fewer_than_k_examples_of_a_class(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"t{i},neg\n" for i in range(10)) + "u,pos\n")
    with pytest.raises(LorankError) as exc:
        load(path, k=2)
    assert one_line(exc) == (f"{path}: class 'pos' has only 1 examples; k=2 needs 4 "
                             "(2 train + 2 dev)")


def test_explicit_train_missing_a_class_or_wrong_k(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\na,neg\nb,neg\n")
    dev = tmp_path / "dev.csv"
    dev.write_text(good_rows(4))
    with pytest.raises(LorankError, match=r"train.csv: no training examples of label\(s\) pos"):
        load_custom(train, dev, text_a="text", label="label", labels="neg,pos")
    with pytest.raises(LorankError, match="not 3 examples per class"):
        load_custom(dev, dev, text_a="text", label="label", labels="neg,pos", k=3)


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes(b"text\tlabel\nok\tneg\ncaf" + b"\xe9\tpos\n")  # latin-1 byte
    with pytest.raises(LorankError) as exc:
        load(path)
    assert one_line(exc) == (f"{path}:3: not valid UTF-8 (byte 0xE9); re-save the file as "
                             "UTF-8")


def test_mixed_encodings_names_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\ncafé,neg\n".encode() + "naïve,pos\n".encode("latin-1"))
    with pytest.raises(LorankError, match=r"d\.csv:3: not valid UTF-8"):
        load(path)


def test_ragged_row_and_bad_json(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\na\tneg\nb\tpos\textra\n")
    with pytest.raises(LorankError, match=r"d\.tsv:3: 3 fields, the header has 2"):
        load(path)
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "neg"}\n{"text": "b", label: pos}\n')
    with pytest.raises(LorankError, match=r"d\.jsonl:2: invalid JSON"):
        load(path)
    path.write_text('{"text": "a", "label": "neg"}\n["b", "pos"]\n')
    with pytest.raises(LorankError, match=r"d\.jsonl:2: each line must be a JSON object"):
        load(path)


def test_malformed_csv_quote(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"a" b,neg\n')
    with pytest.raises(LorankError, match=r"d\.csv:2: malformed CSV"):
        load(path)


def test_repeated_header_and_unknown_suffix(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,text\na,b\n")
    with pytest.raises(LorankError, match=r"d\.csv:1: repeated column names"):
        load(path)
    odd = tmp_path / "d.txt"
    odd.write_text(good_rows())
    with pytest.raises(LorankError, match="cannot tell the format"):
        load(odd)
    assert load(odd, fmt="csv").N == 4
    with pytest.raises(LorankError, match="data format must be one of csv, tsv, jsonl, got 'xml'"):
        load(odd, fmt="xml")


def test_label_declaration_errors(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(good_rows())
    with pytest.raises(LorankError, match=r"d\.csv: only one label \(neg\) in column 'label'"):
        path.write_text("text,label\na,neg\nb,neg\n")
        load(path, labels=None)
    path.write_text(good_rows())
    with pytest.raises(LorankError, match="differ from task SST-2"):
        load(path, task="sst2", labels="neg,pos")
    with pytest.raises(LorankError, match="needs a text_b column"):
        load(path, task="rte", labels=None)


def test_data_dir_and_source_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("LORANK_DATA_DIR", raising=False)
    assert resolve_data_dir(None) is None
    with pytest.raises(LorankError, match=r"\(from --data-dir\) does not exist"):
        resolve_data_dir(tmp_path / "missing")
    monkeypatch.setenv("LORANK_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(LorankError, match=r"\(from LORANK_DATA_DIR\) does not exist"):
        resolve_data_dir(None)
    monkeypatch.setenv("LORANK_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    monkeypatch.delenv("LORANK_DATA_DIR")
    with pytest.raises(LorankError, match="source must be one of auto, lmbff, pool, hub, got 'web"):
        load_task("sst2", source="web")  # type: ignore[arg-type]
    with pytest.raises(LorankError, match="source 'lmbff' needs a data directory"):
        load_task("sst2", source="lmbff")
    with pytest.raises(LorankError, match="unknown task"):
        load_task("imdb")


def test_split_invariants():
    with pytest.raises(LorankError, match="same length"):
        Split("train", ("a", "b"), None, np.array([0]))
    with pytest.raises(LorankError, match=">= 0"):
        Split("train", ("a",), None, np.array([-1]))
    with pytest.raises(LorankError, match="empty: no majority rate"):
        majority_rate(Split("test", (), None, np.zeros(0, int)))
    with pytest.raises(LorankError, match=">= K=2"):
        Split("train", ("a",), None, np.array([2])).counts(2)


def test_read_split_mismatched_pair_task(tmp_path):
    from lorank.data import FewShotData, get_task
    path = tmp_path / "d.csv"
    path.write_text(good_rows())
    split, _ = read_labelled(path, name="train", text_columns=("text",), label_column="label",
                             labels=("neg", "pos"))
    with pytest.raises(LorankError, match="two text field"):
        FewShotData(get_task("rte"), split, split, None, None, None, "x")
