"""The report's positive-control section on constructed runs: verdicts that can come out
either way."""

from __future__ import annotations

import pandas as pd

from lorank.report.controls import capacity_section, planted_section, split_controls


def _planted(gap: float, tie_noise: float = 0.004) -> pd.DataFrame:
    rows = []
    for seed in (13, 21, 42, 87, 100):
        for s in (1, 8):
            for r in (1, 2, 8):
                base = 0.85 + 0.001 * seed % 7
                acc = base - (gap if (s == 8 and r == 1) else 0.0)
                acc += tie_noise * ((seed + r) % 3 - 1) if s == 1 else 0.0
                rows.append({"method": "planted", "rank": r, "seed": seed, "teacher_rank": s,
                             "n_train": 1024, "test_acc": acc, "w0_test_acc": 0.75,
                             "flip": 0.25, "control": "planted"})
    return pd.DataFrame(rows)


def test_planted_verdicts_detect_a_planted_gap_and_a_tie():
    table, lines = planted_section(_planted(gap=0.08))
    text = " ".join(lines)
    assert "Teacher rank 8, N = 1024: rank 8 − rank 1 = +8.0 points" in text
    assert "rank effect detected" in text and "ranks tie within ±2 points" in text
    assert table.rows[0][:3] == ["1", "1024", "75.0"] and len(table.bold) == 2


def test_planted_verdict_says_when_the_setup_could_not_detect_the_effect():
    _, lines = planted_section(_planted(gap=0.01))
    assert "this setup could NOT detect the planted effect" in " ".join(lines)


def _capacity(floor1: float, floor2: float, ce1: float, ce16: float) -> pd.DataFrame:
    rows = []
    for seed in (13, 21, 42):
        for loss in ("mse", "ce"):
            for r in (1, 2, 16):
                row = {"method": "capacity", "loss": loss, "rank": r, "seed": seed, "K": 2,
                       "N": 1024, "d1": 1534, "d2": 3064, "steps": 300, "control": "capacity",
                       "train_loss_init": 0.7, "test_acc": 0.8}
                if loss == "mse":
                    row.update(als_floor={1: floor1, 2: floor2, 16: 0.0}[r] * (1 + seed / 1e3),
                               train_loss_gd=0.5, als_test_acc=0.79)
                else:
                    row.update(train_loss_gd={1: ce1, 2: ce16, 16: ce16}[r])
                rows.append(row)
    return pd.DataFrame(rows)


def test_capacity_verdicts_both_ways():
    _, lines = capacity_section(_capacity(0.04, 1e-8, 0.02, 0.015))
    text = " ".join(lines)
    assert "capacity effect shown" in text and "rank 1 keeps up" in text
    assert "this budget does not reach the floors" in text
    _, lines = capacity_section(_capacity(0.04, 0.03, 0.3, 0.01))
    text = " ".join(lines)
    assert "capacity effect NOT shown" in text and "rank 1 is left behind" in text


def test_controls_are_split_from_the_rank_experiments():
    df = pd.DataFrame([
        {"method": "linearized", "task": "sst2", "control": None},
        {"method": "planted", "task": "sst2", "control": "planted"},
        {"method": "capacity", "task": "sst2"},
        {"method": "linearized", "task": "sst2", "options.control": "capacity"},
    ])
    main, capacity, planted = split_controls(df)
    assert list(main.index) == [0] and list(capacity.index) == [2, 3]
    assert list(planted.index) == [1]
