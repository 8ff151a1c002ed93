"""A user's own task from the CLI: ``train`` (all modes), ``zeroshot``, ``ntk`` and ``prescribe``
take the same own-data options; files and options are checked before any model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import one_line_error
from lorank.cli.main import main

WORDS = {"0": "the plot was boring and bad", "1": "a great fun film i love"}


def reviews(path: Path, n: int = 40, empty: tuple[int, ...] = ()) -> Path:
    """Headerless ``label,text`` CSV with numeric labels (what the issue started from)."""
    lines = [f"{i % 2},{'' if i in empty else WORDS[str(i % 2)] + f' {i}'}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(capsys, argv: list[str]) -> tuple[str, str]:
    main(argv)
    out = capsys.readouterr()
    return out.out, out.err


OWN = ["--columns", "label,text", "--label-words", "0=terrible,1=great"]
FAST = ["--shots", "4", "--ranks", "1,2", "--seeds", "13,21", "--steps", "6", "--eval-every",
        "3", "--lrs", "0.1,1", "--max-length", "32", "--no-progress", "--no-cache"]


def test_train_headerless_csv_with_label_words_prints_rank_table(tiny, tmp_path, capsys):
    data = reviews(tmp_path / "reviews.csv", empty=(5,))
    out, err = run(capsys, ["train", "--data", str(data), *OWN, "--model", tiny, *FAST])
    assert "linearized LoRA on reviews" in out
    for column in ("rank", "zero-shot", "selected", "final", "selected lr", "selected step"):
        assert column in out
    assert "labels read from" in err and "numeric order: 0, 1 (K = 2" in err
    assert f"dropped 1 row with an empty text from {data} (line 6)" in err
    assert "test split: the 23 rows" in err          # 39 rows - 16 drawn


def test_train_json_carries_the_pinned_source(tiny, tmp_path, capsys):
    data = reviews(tmp_path / "reviews.csv")
    out, _ = run(capsys, ["train", "--data", str(data), *OWN, "--metric", "f1", "--model", tiny,
                          *FAST, "--json"])
    result = json.loads(out)
    src = result["config"]["data"]
    assert result["metric"] == "f1" and result["config"]["task"] == "reviews"
    assert src["labels"] == ["0", "1"] and len(src["sha256"]) == 64
    assert src["label_words"] == {"0": "terrible", "1": "great"}
    assert [row["rank"] for row in result["table"]] == [1, 2]
    assert result["records"][0]["selected_step"] is not None


def test_train_lora_mode_on_own_data(tiny, tmp_path, capsys):
    data = reviews(tmp_path / "reviews.csv")
    out, _ = run(capsys, ["train", "--mode", "lora", "--data", str(data), *OWN,
                          "--model", tiny, *FAST, "--steps", "2", "--json"])
    result = json.loads(out)
    assert result["mode"] == "lora" and result["config"]["data"]["name"] == "reviews"
    assert [row["rank"] for row in result["table"]] == [1, 2]


def test_zeroshot_and_ntk_on_own_data(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LORANK_CACHE_DIR", str(tmp_path / "cache"))
    data = reviews(tmp_path / "reviews.csv")
    out, _ = run(capsys, ["zeroshot", "--data", str(data), *OWN, "--model", tiny, "--shots",
                          "4", "--seeds", "13,21", "--max-length", "32", "--json"])
    result = json.loads(out)
    assert result["task"] == "reviews" and result["test_rows"] == 24
    assert result["classifier"]["label_descriptions"] == ["It is terrible.", "It is great."]
    out, _ = run(capsys, ["zeroshot", "--data", str(data), *OWN, "--head", "prompt", "--model",
                          tiny, "--shots", "4", "--seeds", "13", "--max-length", "32", "--json"])
    assert json.loads(out)["classifier"]["label_words"] == ["terrible", "great"]
    out, _ = run(capsys, ["ntk", "--data", str(data), *OWN, "--model", tiny, "--shots", "4",
                          "--max-length", "32", "--json"])
    assert json.loads(out)["J_shape"][:2] == [8, 2]


def test_explicit_files_and_f1(tiny, tmp_path, capsys):
    train = reviews(tmp_path / "train.csv", n=8)
    dev = reviews(tmp_path / "dev.csv", n=6)
    test = reviews(tmp_path / "test.csv", n=10)
    out, _ = run(capsys, ["train", "--data", str(train), "--dev-data", str(dev), "--test-data",
                          str(test), *OWN, "--model", tiny, *FAST[2:], "--json"])
    result = json.loads(out)
    assert result["features"][0]["train"]["N"] == 8 and result["config"]["k"] == 4
    err = one_line_error(capsys, ["zeroshot", "--data", str(train), "--dev-data", str(dev),
                                  *OWN, "--model", tiny])
    assert "has no test split: give one with --test-data FILE" in err


def test_prescribe_uses_the_files_own_K_and_N(tmp_path, capsys):
    """A 40-row file with string labels: K = 2, N = 40, without --labels."""
    path = tmp_path / "own.csv"
    path.write_text("text,label\n" + "".join(f"review {i},{['neg', 'pos'][i % 2]}\n"
                                             for i in range(40)))
    out, err = run(capsys, ["prescribe", "--data", str(path), "--shape", "384x384"])
    assert "K=2, N=40" in out and "all 40 rows" in out
    assert "labels read from" in err and "sorted order: neg, pos" in err
    out, _ = run(capsys, ["prescribe", "--data", str(path), "--shape", "384x384", "--shots", "8",
                          "--json"])
    assert (json.loads(out)["K"], json.loads(out)["N"]) == (2, 16)


@pytest.mark.parametrize("extra, message", [
    (["--columns", "label,text", "--label-words", "0=bad"], "no word for label(s) 1"),
    (["--text-a", "review"], "no column 'label'"),
    (["--columns", "label,text", "--shots", "30"], "class '0' has only 20 examples; k=30"),
    (["--columns", "label,text", "--labels", "neg,pos"],
     "label '0' is not one of the declared labels (neg, pos)"),
    (["--columns", "label,text", "--metric", "f1", "--labels", "0,1,2"],
     "--metric f1 is binary F1 and needs K = 2 labels; this task has K = 3"),
])
def test_data_is_checked_before_the_model(tmp_path, capsys, extra, message):
    """The model does not exist: the data error is the one reported, so it came first."""
    data = reviews(tmp_path / "reviews.csv")
    for command in ("train", "zeroshot", "ntk"):
        err = one_line_error(capsys, [command, "--data", str(data), *extra, "--model",
                                      str(tmp_path / "no-such-model")])
        assert message in err, (command, err)


@pytest.mark.parametrize("argv, message", [
    (["train"], "choose the data: --task NAME (e.g. sst2) or --data FILE"),
    (["train", "--task", "sst2", "--labels", "a,b"], "--labels only apply with --data FILE"),
    (["zeroshot", "--task", "sst2", "--columns", "label,text"],
     "--columns only apply with --data FILE"),
    (["ntk", "--task", "sst2", "--empty-text", "error"],
     "--empty-text only apply with --data FILE"),
    (["prescribe", "--K", "2", "--N", "8", "--shape", "4x4", "--shots", "4"],
     "--shots applies to --task or --data"),
    (["train", "--data", "x.tsv", "--columns", "label,text,text"],
     "--columns repeats a column name"),
])
def test_own_data_option_errors(capsys, argv, message):
    assert message in one_line_error(capsys, argv)
