"""`lorank reproduce` end to end on a tiny model and the real SST-2 k-shot files, plus errors.

Also exercises the three engine sweep methods (linearized, lora, cstar) through the runner.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
import yaml

from lorank.cli.main import main
from lorank.models.tiny import build_tiny_model


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    model = build_tiny_model("bert", root / "tiny-bert")
    spec = {
        "name": "tiny",
        "base": {"model": str(model), "head": "verbalizer", "targets": ["query", "value"],
                 "layers": "last", "k": 16, "loss": "ce", "lrs": [0.01, 0.1], "steps": 6,
                 "eval_interval": 2, "max_length": 24, "test_cap": 40},
        "grid": {"task": ["sst2"], "method": ["linearized", "lora"], "rank": [1, 2],
                 "seed": [13, 42]},
        "methods": {"lora": {"only": {"rank": [1], "seed": [13]}}},
        "include": [{"method": "cstar", "task": "gaussian", "model": "gaussian", "rank": 1,
                     "seed": 0, "steps": 50, "options": {"m": 6, "n": 6, "solver": "lm",
                                                         "instances": 8, "n_boot": 20}}],
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_reproduce_end_to_end_and_resume(tiny_spec, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["reproduce", "--spec", str(tiny_spec), "--out", str(out), "--data-dir",
            str(data_dir), "--no-progress"]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert f"report: {out / 'report' / 'report.html'}" in stdout
    presc = json.loads((out / "prescriptions.json").read_text())
    assert presc[0]["task"] == "sst2" and presc[0]["sard_exact"] == 11
    with sqlite3.connect(out / "results.sqlite") as db:
        rows = db.execute("SELECT method, status, metrics FROM runs").fetchall()
    assert sorted(m for m, _, _ in rows) == ["cstar"] + ["linearized"] * 4 + ["lora"]
    assert {s for _, s, _ in rows} == {"done"}
    metrics = {m: json.loads(x) for m, _, x in rows}
    for key in ("test_acc", "test_acc_final", "w0_test_acc", "kernel_test_acc",
                "selected_lr", "selected_step", "pl_min"):
        assert key in metrics["linearized"], key
    for key in ("test_acc", "ntk_gap", "selected_step", "numerical_rank"):
        assert key in metrics["lora"], key
    assert 0.9 < metrics["cstar"]["c50"] < 1.6
    md = (out / "report" / "report.md").read_text()
    assert "Headline" in md and "sst2 / " in md
    timing = json.loads((out / "reproduce.json").read_text())  # what the README's time reads
    assert timing["spec"] == "tiny" and timing["runs"] == 6 and not timing["resumed"]
    assert 0 < timing["sweep_s"] <= timing["wall_s"]
    # resume: nothing left to run, same report path
    code, stdout, _ = run(args, capsys)
    assert code == 0 and "0 done" in stdout and "6 skipped" in stdout
    assert json.loads((out / "reproduce.json").read_text())["resumed"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--workers", "0"], "--workers must be a positive integer"),
    (["--full", "--spec", "x.yaml"], "not both"),
    (["--spec", "missing.yaml"], "sweep spec not found"),
    (["--data-dir", "/no/such/dir"], "does not exist"),
])
def test_reproduce_bad_input(extra, message, tmp_path, capsys):
    code, _, err = run(["reproduce", "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_reproduce_without_data_fails_fast(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LORANK_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(["reproduce", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "LORANK_DATA_DIR" in err
    assert not (tmp_path / "o").exists()
