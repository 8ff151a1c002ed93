"""``lorank data`` and the reusable data options (options_data)."""

from __future__ import annotations

import json

import click
import pytest

from lorank.cli.main import main
from lorank.cli.options_data import (
    DATA_OPTION_NAMES,
    data_options,
    dataset_from_options,
    pop_data_options,
)


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def ok(capsys, *argv) -> str:
    main(list(argv))
    return capsys.readouterr().out


def test_show_table(capsys, data_dir):
    out = ok(capsys, "data", "show", "--task", "sst2", "--k", "16", "--seed", "42",
             "--data-dir", str(data_dir))
    assert "SST-2: K=2, N=32, k=16, seed=42" in out
    assert "872" in out and "0.509" in out and "lmbff:" in out


def test_show_json_reads_env(capsys, data_dir, monkeypatch):
    monkeypatch.setenv("LORANK_DATA_DIR", str(data_dir))
    out = ok(capsys, "data", "show", "--task", "MNLI", "--shots", "64", "--seed", "13",
             "--test-max", "1000", "--json")
    summary = json.loads(out)
    assert summary["N"] == 192 and summary["K"] == 3 and summary["source"].startswith("pool:")
    assert summary["splits"]["train"]["per_label"] == {
        "entailment": 64, "neutral": 64, "contradiction": 64}
    assert summary["splits"]["test"]["rows"] == 1000
    assert summary["meta"]["test_rows_full"] == 9815


def test_show_custom_file(capsys, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("review,stars\n" + "".join(f"r{i},{['bad', 'good'][i % 2]}\n"
                                                for i in range(20)))
    out = ok(capsys, "data", "show", "--data", str(path), "--text-a", "review", "--label",
             "stars", "--labels", "bad,good", "--k", "4", "--json")
    summary = json.loads(out)
    assert summary["task"] == "reviews" and summary["N"] == 8   # named after the file
    assert summary["splits"]["dev"]["per_label"] == {"bad": 4, "good": 4}
    assert summary["splits"]["test"]["rows"] == 20 - 16   # the rows not drawn


def test_tasks(capsys):
    out = ok(capsys, "data", "tasks", "--json")
    records = json.loads(out)
    assert [r["name"] for r in records] == ["SST-2", "QNLI", "MRPC", "RTE", "MNLI"]
    assert records[4]["label_words"] == ["Yes", "Maybe", "No"]
    assert "terrible" in ok(capsys, "data", "tasks")


@pytest.mark.parametrize("argv,message", [
    (["--task", "cola"], "unknown task 'cola'; known tasks: SST-2"),
    ([], "choose the data: --task NAME"),
    (["--task", "sst2", "--labels", "a,b"], "--labels only apply with --data FILE"),
    (["--data", "x.csv"], "x.csv: file not found"),
    (["--task", "sst2", "--label-words", "0=bad"], "--label-words only apply with --data"),
    (["--data", "x.csv", "--text-a", "t", "--label", "y", "--source", "hub"],
     "--source applies to --task data"),
    (["--task", "sst2", "--data-dir", "/no/such/dir"], "(from --data-dir) does not exist"),
    (["--task", "sst2", "--k", "many"], "'many' is not a valid integer"),
])
def test_show_errors_are_one_line(capsys, argv, message, monkeypatch):
    monkeypatch.delenv("LORANK_DATA_DIR", raising=False)
    code, _, err = run(capsys, "data", "show", *argv)
    assert code == 2 and err.startswith("lorank: error: ") and err.count("\n") == 1
    assert message in err


def test_env_data_dir_error_names_env(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LORANK_DATA_DIR", str(tmp_path / "gone"))
    code, _, err = run(capsys, "data", "show", "--task", "rte")
    assert code == 2 and "(from LORANK_DATA_DIR) does not exist" in err


def test_offline_hub_error_through_cli(capsys, monkeypatch):
    monkeypatch.delenv("LORANK_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(capsys, "data", "show", "--task", "qnli")
    assert code == 2 and "--data-dir" in err and "LORANK_DATA_DIR" in err


def test_options_reusable_in_another_command(data_dir):
    seen = {}

    @click.command()
    @data_options
    @click.option("--rank", type=int, default=1)
    def other(rank, **kw):
        seen["rank"] = rank
        seen["data"] = dataset_from_options(**pop_data_options(kw))
        seen["rest"] = kw

    other.main(["--task", "rte", "--shots", "16", "--data-dir", str(data_dir), "--rank", "4"],
               standalone_mode=False)
    assert seen["rank"] == 4 and seen["rest"] == {} and seen["data"].N == 32
    assert {p.name for p in other.params} >= set(DATA_OPTION_NAMES)


def test_dataset_from_options_accepts_k_synonym(data_dir):
    data = dataset_from_options(task="mnli", k=16, seed=None, data_dir=str(data_dir))
    assert data.N == 48 and data.seed == 42
    with pytest.raises(Exception, match="conflicting shot counts"):
        dataset_from_options(task="mnli", k=16, shots=64, data_dir=str(data_dir))
