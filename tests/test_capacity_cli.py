"""``lorank cstar``: one-line errors with exit 2, JSON output, plots, features files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lorank.cli.main import main

torch.set_num_threads(1)

FAST = ["--m", "6", "--n", "6", "--instances", "4", "--boot", "20", "--quiet",
        "--ratios", "0.8,1.0,1.5", "--threads", "1"]


def _no_nan(name):
    raise AssertionError(f"invalid JSON constant {name}")


def _fail(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert err.startswith("lorank: error:") and "\n" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["--r", "7", "--m", "6", "--n", "6"], "exceeds min(m, n)"),
        (["--steps", "0"], "--steps must be a positive integer"),
        (["--tol", "0"], "--tol must be in (0, 1)"),
        (["--tol", "-1e-3"], "--tol must be in (0, 1)"),
        (["--solver", "adam"], "solver must be one of gd, lm"),
        (["--loss", "hinge"], "loss must be one of"),
        (["--count", "cover"], "--count must be one of"),
        (["--instances", "0"], "--instances"),
        (["--features", "/no/such/file.npy"], "features file not found"),
        (["--ratios", "1,abc"], "--ratios must be comma-separated numbers"),
        (["--plot", "out.txt"], "plot file must end in"),
        (["--plot", "/no/such/dir/x.png"], "folder of the plot file does not exist"),
        (["--budgets", "100"], "--budgets needs --plot"),
        (["--plot", "x.png", "--budgets", "1.5,3"], "--budgets must be positive integers"),
        (["--m", "0"], "m must be a positive integer"),
        (["--threads", "0"], "--threads must be a positive integer"),
        (["--backend", "cuda"], "backend must be one of auto, torch, numba"),
        (["--backend", "numba", "--solver", "lm"], "step_rule 'hessian' only"),
        (["--backend", "numba", "--step-rule", "bound"], "step_rule 'hessian' only"),
    ],
)
def test_bad_input(capsys, argv, msg):
    assert msg in _fail(capsys, ["cstar", *argv])


def test_features_wrong_shape(capsys, tmp_path):
    np.save(tmp_path / "f.npy", np.ones((50, 7)))
    err = _fail(capsys, ["cstar", *FAST, "--features", str(tmp_path / "f.npy")])
    assert "features must have shape (P, 6, 6) or (P, 36)" in err


def test_json_output_lm(capsys):
    main(["cstar", *FAST, "--solver", "lm", "--steps", "60", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["solver"] == "lm" and out["d"] == 11 and out["count"] == "manifold"
    assert out["curve"]["KN"] == [14, 11, 7]
    assert len(out["curve"]["rates"]) == 3


def test_json_records_the_backend(capsys):
    main(["cstar", *FAST, "--steps", "50", "--backend", "torch", "--json"])
    assert json.loads(capsys.readouterr().out)["backend"] == "torch"
    main(["cstar", *FAST, "--steps", "50", "--json"])
    assert json.loads(capsys.readouterr().out)["backend"] in ("numba", "torch")
    main(["cstar", *FAST, "--steps", "50"])
    assert "backend=" in capsys.readouterr().out


def test_text_output_with_features_and_sard(capsys, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "f.npy", rng.standard_normal((30, 36)))
    main(["cstar", *FAST, "--solver", "lm", "--steps", "40", "--count", "sard",
          "--features", str(tmp_path / "f.npy")])
    out = capsys.readouterr().out
    assert "Sard count" in out and "KN    14" in out


def test_plot_several_budgets(capsys, tmp_path):
    path = tmp_path / "curves.png"
    main(["cstar", *FAST, "--plot", str(path), "--budgets", "30,100", "--json"])
    out = json.loads(capsys.readouterr().out, parse_constant=_no_nan)
    assert [o["steps"] for o in out] == [30, 100]
    assert path.stat().st_size > 1000
    assert out[0]["c50"] is None or out[0]["c50"] > 0  # NaN is written as null
    assert not [p for p in tmp_path.iterdir() if p.name != "curves.png"]  # no temp file left


def test_json_carries_provenance(capsys):
    main(["cstar", *FAST, "--steps", "30", "--json"])
    prov = json.loads(capsys.readouterr().out)["provenance"]
    assert set(prov) == {"versions", "git_commit", "git_dirty", "host", "created_at"}
    assert prov["versions"]["numba"] and prov["versions"]["torch"]
