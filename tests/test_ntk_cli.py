"""``lorank ntk`` and ``lorank train``: real runs on a tiny model, one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest

from cli_helpers import one_line_error as _error
from lorank.cli.main import main


@pytest.mark.parametrize("argv, match", [
    (["train", "--task", "sst2", "--ranks", "1,x"], "ranks"),
    (["train", "--task", "sst2", "--lrs", "0.1,-1"], "learning rates"),
    (["train", "--task", "sst2", "--mode", "magic"], "--mode must be one of"),
    (["train", "--task", "sst2", "--layers", "top"], "layers"),
    (["train", "--task", "sst2", "--steps", "0"], "steps"),
    (["train", "--task", "sst2", "--loss", "hinge"], "hinge"),
    (["ntk", "--task", "sst2", "--memory-mb", "0"], "memory"),
    (["ntk", "--task", "sst2", "--targets", ","], "targets"),
    (["ntk", "--task", "nosuchtask"], "unknown task"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, match):
    assert match in _error(capsys, argv)


def test_ntk_command_computes_and_caches(tiny, data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LORANK_CACHE_DIR", str(tmp_path))
    argv = ["ntk", "--model", tiny, "--task", "sst2", "--seed", "13", "--layers", "last",
            "--data-dir", str(data_dir), "--max-length", "32", "--json"]
    main(argv)
    first = json.loads(capsys.readouterr().out)
    assert first["J_shape"] == [32, 2, 2 * 32 * 32] and not first["cache_hit"]
    main(argv)
    second = json.loads(capsys.readouterr().out)
    assert second["cache_hit"] and second["cache"] == first["cache"]
    assert "MB" in _error(capsys, [*argv, "--split", "test", "--max-mb", "0.01"])


def test_train_command_runs_a_small_sweep(tiny, data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LORANK_CACHE_DIR", str(tmp_path))
    main(["train", "--model", tiny, "--task", "sst2", "--ranks", "1,2", "--seeds", "13",
          "--lrs", "0.1,1", "--steps", "10", "--eval-every", "5", "--test-max", "20",
          "--max-length", "32", "--data-dir", str(data_dir), "--no-progress", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["mode"] == "linearized" and [r["rank"] for r in result["table"]] == [1, 2]
    row = result["table"][0]
    assert {"w0", "kernel", "selected", "final", "moved"} <= set(row)
    assert 0 <= row["selected"][0] <= 1
    main(["train", "--model", tiny, "--task", "sst2", "--ranks", "1", "--seeds", "13",
          "--steps", "5", "--test-max", "20", "--max-length", "32", "--data-dir",
          str(data_dir), "--no-progress"])
    out = capsys.readouterr().out
    assert "zero-shot" in out and "selected" in out
