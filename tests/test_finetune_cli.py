"""``lorank train --mode lora|both`` on a tiny model and the real SST-2 k-shot files."""

from __future__ import annotations

import json

import pytest

import lorank.cli.train as train_cli
from lorank.cli.main import main
from lorank.cli.train_lora import RUNNERS as LORA_RUNNERS
from lorank.models.lora_shape import AdapterConfig


@pytest.fixture()
def registered():
    """`lorank train` knows every mode that lorank.cli.train_lora provides."""
    assert set(LORA_RUNNERS) <= set(train_cli.RUNNERS)


def args(tiny, data_dir, mode, *extra):
    return ["train", "--mode", mode, "--task", "sst2", "--model", tiny, "--data-dir",
            str(data_dir), "--ranks", "1,2", "--seeds", "13", "--steps", "4",
            "--eval-every", "2", "--lrs", "0.01,0.1", "--test-max", "24", "--no-progress",
            "--no-cache", *extra]


def test_lora_mode_json(tiny, data_dir, registered, capsys):
    main(args(tiny, data_dir, "lora", "--json"))
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "lora" and out["metric"] == "accuracy"
    assert out["provenance"]["versions"]["transformers"] and "created_at" in out["provenance"]
    assert [row["rank"] for row in out["table"]] == [1, 2]
    cell = out["cells"][0]
    eta0 = out["config"]["eta0"]["13"]  # --lrs are multiples of the kernel step (default unit)
    assert eta0 > 0 and len(cell["runs"]) == 2
    assert [r["train"]["lr"] for r in cell["runs"]] == pytest.approx([0.01 * eta0, 0.1 * eta0])
    sel = cell["runs"][cell["selected"]]
    assert sel["selected"] and sel["gap"]["n"] == 24 and sel["lora"]["init"] == "fan_in"
    assert sel["lora"]["s"] == 1.0 and sel["train"]["optimizer"] == "gd"
    assert len(sel["delta"]) == 2 and sel["delta"][0]["shape"] == [32, 32]
    assert 0.0 <= out["table"][0]["selected"][0] <= 1.0


def test_lora_mode_batched_equals_sequential(tiny, data_dir, registered, capsys):
    """The default engine trains every seed × rank × lr in one program; peft one configuration
    at a time gives the same selection, losses and test metric (float32, 1e-4)."""
    def run(engine):
        argv = args(tiny, data_dir, "lora", "--json", "--lora-engine", engine)
        argv[argv.index("--seeds") + 1] = "13,21"
        main(argv)
        return json.loads(capsys.readouterr().out)

    fast, ref = run("batched"), run("sequential")
    assert fast["config"]["lora_engine"] == "batched" and len(fast["cells"]) == 4
    for a, b in zip(fast["cells"], ref["cells"], strict=True):
        assert (a["rank"], a["seed"], a["selected"]) == (b["rank"], b["seed"], b["selected"])
        for ra, rb in zip(a["runs"], b["runs"], strict=True):
            assert ra["loss_curve"] == pytest.approx(rb["loss_curve"], rel=1e-4, abs=1e-6)
            assert ra["best_step"] == rb["best_step"]
    for ra, rb in zip(fast["table"], ref["table"], strict=True):
        assert ra["selected"] == pytest.approx(rb["selected"], abs=1e-4)


def test_lora_mode_table(tiny, data_dir, registered, capsys):
    main(args(tiny, data_dir, "lora"))
    text = capsys.readouterr().out
    assert "lora LoRA on sst2" in text and "selected lr" in text


def test_lora_mode_absolute_learning_rates(tiny, data_dir, registered, capsys):
    main(args(tiny, data_dir, "lora", "--json", "--lr-unit", "abs"))
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["eta0"] == {}
    assert [r["train"]["lr"] for r in out["cells"][0]["runs"]] == [0.01, 0.1]


def test_both_mode(tiny, data_dir, registered, capsys):
    main(args(tiny, data_dir, "both", "--json"))
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "both"
    row = out["table"][0]
    assert row["rank"] == 1 and "selected" in row and "lora_selected" in row
    assert "lora_gap_relative" in row and out["linearized"]["mode"] == "linearized"
    for part in (out, out["linearized"], out["lora"]):  # what travels with every result
        assert part["provenance"]["versions"]["torch"] and "git_commit" in part["provenance"]


def test_both_render(tiny, data_dir, capsys):
    from lorank.cli.train import TrainJob
    from lorank.cli.train_lora import run_both
    from lorank.linearized.experiment import SweepConfig
    from lorank.linearized.train import LinearizedTraining

    sweep = SweepConfig(task="sst2", model=tiny, adapter=AdapterConfig(ranks=(1,)),
                        seeds=(13,), lrs=(0.05,),
                        train=LinearizedTraining(steps=2, eval_every=1), test_max=16, max_length=64,
                        memory_budget_mb=256.0, data_dir=str(data_dir), use_cache=False)
    run_both(TrainJob(sweep, progress=False)).render("side by side")
    text = capsys.readouterr().out
    assert "side by side" in text and "LoRA" in text and "linearized" in text


def test_bad_rank_is_one_line_error(tiny, data_dir, registered, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*args(tiny, data_dir, "lora")[:7], "--ranks", "33", "--seeds", "13",
              "--steps", "2", "--data-dir", str(data_dir)])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if line.startswith("lorank:")]  # (transformers may print loading progress bars)
    assert err == ["lorank: error: rank r=33 exceeds min(m, n)=32 of the 32x32 matrix "
                   "encoder.layer.1.attention.self.query"]
