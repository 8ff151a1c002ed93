"""`lorank prescribe`: tables, JSON and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lorank.cli.main import main
from lorank.models.tiny import TINY_ARCHS, build_tiny_model


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_json_canonical_setup(capsys):
    code, out, _ = run(["prescribe", "--K", "2", "--N", "32", "--shape", "768x768",
                        "--shape", "768x768", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert (data["sard_exact"], data["sard_rounded"]) == (11, 12)
    assert data["manifold_per_matrix"] == data["manifold_total"] == data["ce"] == 1
    rules = [row["rule"] for row in data["rows"]]
    assert rules == ["Sard exact", "Sard rounded", "Manifold per-matrix", "Manifold total",
                     "Cross-entropy (PL)"]
    assert data["rows"][0]["lora_params"] == 11 * 2 * 1536


def test_table_output(capsys):
    code, out, _ = run(["prescribe", "--K", "2", "--N", "1024", "--shape", "768x768"], capsys)
    assert code == 0
    assert "Sard exact" in out and "Manifold total" in out and "recommended rank" in out


def test_loss_mse_recommends_manifold(capsys):
    code, out, _ = run(["prescribe", "--K", "2", "--N", "1024", "--shape", "768x768",
                        "--loss", "mse", "--json"], capsys)
    assert code == 0 and json.loads(out)["recommended"] == 2


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_model(arch, root / arch) for arch in TINY_ARCHS}


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_model_shapes_every_architecture(arch, tiny_models, capsys):
    code, out, _ = run(["prescribe", "--model", str(tiny_models[arch]), "--layers", "last",
                        "--K", "2", "--N", "32", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["shapes"] == [[32, 32], [32, 32]]
    assert all(".1." in path for path in data["modules"])  # layer 1 of 2


def test_model_mlp_targets_have_rectangular_shapes(tiny_models, capsys):
    code, out, _ = run(["prescribe", "--model", str(tiny_models["roberta"]), "--targets",
                        "intermediate.dense,output.dense", "--K", "2", "--N", "8", "--json"],
                       capsys)
    assert code == 0
    assert json.loads(out)["shapes"] == [[37, 32], [32, 37]] * 2


def test_bundled_minilm_shapes(capsys):
    code, out, _ = run(["prescribe", "--model", "minilm", "--targets", "query,value",
                        "--K", "2", "--N", "32", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["shapes"] == [[384, 384]] * 12


BAD = [
    (["--K", "0", "--N", "32", "--shape", "4x4"], "K must be a positive integer"),
    (["--K", "2", "--N", "-3", "--shape", "4x4"], "N must be a positive integer"),
    (["--K", "two", "--N", "3", "--shape", "4x4"], "Invalid value for '--K'"),
    (["--K", "2", "--N", "3", "--shape", "4by4"], "malformed shape '4by4'"),
    (["--K", "2", "--N", "3", "--shape", "0x4"], "malformed shape"),
    (["--K", "2", "--N", "3", "--shape", "4x4", "--c-star", "0"], "c_star must be > 0"),
    (["--K", "2", "--N", "3", "--shape", "4x4", "--c-star", "-1"], "c_star must be > 0"),
    (["--K", "2", "--N", "3"], "give the adapted shapes"),
    (["--shape", "4x4"], "give --K and --N"),
    (["--model", "minilm", "--targets", "querry", "--K", "2", "--N", "3"],
     "unknown target module 'querry'"),
    (["--model", "minilm", "--layers", "6", "--K", "2", "--N", "3"], "layer index 6 out of range"),
    (["--model", "minilm", "--layers", "a,b", "--K", "2", "--N", "3"], "layers must be"),
    (["--model", "no-such-org/no-such-model", "--K", "2", "--N", "3"], "not found offline"),
    (["--shape", "4x4", "--model", "minilm", "--K", "2", "--N", "3"], "not both"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_one_line_exit_2(args, message, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(["prescribe", *args], capsys)
    assert code == 2
    assert err.startswith("lorank: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_no_traceback():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "lorank.cli.main", "prescribe", "--K", "x"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr


@pytest.mark.parametrize(("task", "K", "N", "sard"), [("sst2", 2, 32, 11), ("mnli", 3, 48, 17)])
def test_task_gives_K_and_N(task, K, N, sard, data_dir, capsys):
    code, out, err = run(["prescribe", "--task", task, "--shots", "16", "--data-dir",
                          str(data_dir), "--model", "minilm", "--layers", "last", "--json"],
                         capsys)
    data = json.loads(out)
    assert code == 0, err
    assert (data["K"], data["N"], data["sard_exact"]) == (K, N, sard)


def test_custom_csv_gives_K_and_N(tmp_path, capsys):
    rows = ["review,stars"] + [f"review number {i} is fine,{['bad', 'ok', 'good'][i % 3]}"
                               for i in range(30)]
    path = tmp_path / "my.csv"
    path.write_text("\n".join(rows) + "\n")
    args = ["prescribe", "--data", str(path), "--text-a", "review", "--label", "stars",
            "--shots", "4", "--shape", "384x384"]
    code, out, _ = run([*args, "--labels", "bad,ok,good", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and (data["K"], data["N"]) == (3, 12)   # N = 4 shots x 3 classes
    code, _, err = run([*args, "--labels", "bad,ok"], capsys)
    assert code == 2 and "label 'good' is not one of the declared labels" in err
    assert f"{path}:4:" in err
