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


def test_ce_rule_states_its_condition_and_the_measurement(capsys):
    code, out, _ = run(["prescribe", "--K", "2", "--N", "32", "--shape", "768x768"], capsys)
    assert code == 0
    assert "recommended rank (cross-entropy: rank-free while the linearized training data are " \
           "separable): 1" in out
    assert "measured separability:" in out and "K·N/d(r = 1) = 0.0417" in out
    assert "removes the threshold" not in out and "PL inequality: any r >= 1" not in out
    assert "check it on your data: lorank train --mode linearized" in out


def test_multiclass_gives_the_range_not_rank_one(capsys):
    code, out, _ = run(["prescribe", "--K", "3", "--N", "48", "--shape", "384x384",
                        "--shape", "384x384", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["recommended"] is None and data["settled"] is False
    assert data["rank_range"] == [1, 17] and "binary" in data["note"]
    assert "--ranks 1,2,4,8,12,16,17" in data["measure"]
    code, out, _ = run(["prescribe", "--K", "6", "--N", "96", "--shape", "384x384"], capsys)
    assert "no single recommended rank: K = 6 > 2, the rules span r = 1 to 34" in out
    assert "recommended rank (" not in out and "holds for binary tasks" in out
    assert "measure it on your data: lorank train --mode linearized" in out


def test_measure_command_uses_the_task_and_head(data_dir, capsys):
    code, out, _ = run(["prescribe", "--model", "minilm", "--layers", "last", "--task", "mnli",
                        "--data-dir", str(data_dir), "--json"], capsys)
    assert code == 0
    assert json.loads(out)["measure"] == (
        "lorank train --mode linearized --model minilm --task mnli --head pair --layers last "
        "--ranks 1,2,4,8,12,16,17 --seeds 13,21,42,87,100")


def test_check_separable_on_real_features(tiny, data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LORANK_CACHE_DIR", str(tmp_path / "cache"))
    args = ["prescribe", "--model", tiny, "--layers", "last", "--task", "sst2",
            "--data-dir", str(data_dir), "--check-separable"]
    code, out, err = run([*args, "--json"], capsys)
    assert code == 0, err
    sep = json.loads(out)["separability"]
    # 32 examples, K = 2: margin rows N(K-1) = 32 in P = 2·32·32 adapted parameters
    assert sep["separable"] and sep["rank"] == sep["rows"] == 32 and sep["P"] == 2048
    code, out, _ = run(args, capsys)
    assert "check-separable (verbalizer head" in out and ": separable: margin features" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--K", "2", "--N", "32", "--shape", "4x4", "--check-separable"],
     "--check-separable needs the model's features"),
    (["--model", "minilm", "--K", "2", "--N", "32", "--check-separable"],
     "--check-separable needs the model's features"),
    (["--K", "2", "--N", "32", "--shape", "4x4", "--head", "pair"],
     "--head applies to --check-separable"),
])
def test_check_separable_errors(args, message, capsys):
    code, _, err = run(["prescribe", *args], capsys)
    assert code == 2 and err.startswith("lorank: error: ") and message in err
    assert err.count("\n") == 1
