"""Model selection: constructed curves, ties, diverged runs; test labels never influence it;
a sweep is reproducible per seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lorank.errors import LorankError
from lorank.linearized.selection import best_on_curve, select_checkpoint
from lorank.models.lora_shape import AdapterConfig

torch.set_num_threads(1)


def test_constructed_curves():
    curves = {0.01: ([0, 50, 100, 150], [0.5, 0.6, 0.7, 0.7]),
              0.1: ([0, 50, 100, 150], [0.5, 0.7, 0.65, 0.6]),
              1.0: ([0, 50, 100, 150], [0.5, 0.8, math.nan, math.nan])}
    c = select_checkpoint(curves)
    assert (c.key, c.step, c.value) == (1.0, 50, 0.8)
    del curves[1.0]
    c = select_checkpoint(curves)
    assert (c.key, c.step, c.value) == (0.1, 50, 0.7)  # tie at 0.7: fewer steps wins
    c = select_checkpoint({"a": ([0, 10], [0.5, 0.5]), "b": ([0, 10], [0.5, 0.5])})
    assert (c.key, c.step) == ("a", 0)  # full tie: first key, earliest step
    c = select_checkpoint({"x": ([0, 1, 2], [3.0, 1.0, 2.0])}, higher_is_better=False)
    assert (c.step, c.value) == (1, 1.0)


def test_all_diverged_is_an_error():
    with pytest.raises(LorankError, match="diverged"):
        select_checkpoint({"a": ([0, 1], [math.nan, math.inf])})
    with pytest.raises(LorankError, match="as many"):
        best_on_curve([0, 1], [0.1])


@given(st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=8), min_size=1, max_size=4))
def test_choice_is_a_global_best_with_fewest_steps(table):
    curves = {i: (list(range(0, 10 * len(v), 10)), [float(x) for x in v])
              for i, v in enumerate(table)}
    c = select_checkpoint(curves)
    best = max(max(v) for v in table)
    assert c.value == best
    assert c.step == min(10 * v.index(best) for v in table if best in v)


@pytest.fixture(scope="module")
def sweep_env(tmp_path_factory):
    from lorank.data.dataset import FewShotData, Split
    from lorank.data.tasks import get_task
    from lorank.models.tiny import build_tiny_model

    folder = build_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert")
    words = ["great", "good", "fun", "love", "terrible", "bad", "boring", "hate"]
    rng = np.random.default_rng(0)

    def split(name, n, seed):
        r = np.random.default_rng(seed)
        labels = np.tile([0, 1], n // 2)
        texts = tuple(" ".join(r.choice(words[4:] if y == 0 else words[:4], 3)) + " movie"
                      for y in labels)
        return Split(name, texts, None, labels)

    def loader(poison: bool):
        def load(seed):
            test = split("test", 12, 99)
            if poison:
                test = Split("test", test.text_a, None, 1 - test.labels)
            return FewShotData(get_task("sst2"), split("train", 8, seed), split("dev", 8,
                               seed + 1), test, k=4, seed=seed, source="synthetic")
        return load

    del rng
    return str(folder), loader, tmp_path_factory.mktemp("cache")


def _run(folder, load, cache, monkeypatch):
    from lorank.linearized.experiment import SweepConfig, run_linearized_sweep
    from lorank.linearized.train import LinearizedTraining

    monkeypatch.setenv("LORANK_CACHE_DIR", str(cache))
    cfg = SweepConfig(task="sst2", model=folder, adapter=AdapterConfig(ranks=(1, 2)),
                      seeds=(13, 21), lrs=(0.5, 5.0),
                      train=LinearizedTraining(steps=20, eval_every=5), k=4, max_length=16,
                      dtype="float64")
    return run_linearized_sweep(cfg, load_data=load)


def test_poisoned_test_labels_do_not_change_selection(sweep_env, monkeypatch):
    folder, loader, cache = sweep_env
    clean = _run(folder, loader(False), cache, monkeypatch)
    poisoned = _run(folder, loader(True), cache, monkeypatch)
    for a, b in zip(clean.records, poisoned.records, strict=True):
        assert (a.selected_lr, a.selected_step, a.selected_dev) == (
            b.selected_lr, b.selected_step, b.selected_dev)
        assert a.kernel["lam"] == b.kernel["lam"]
        assert a.selected["test"]["accuracy"] == pytest.approx(
            1 - b.selected["test"]["accuracy"])
        assert a.w0["test"]["accuracy"] == pytest.approx(
            1 - b.w0["test"]["accuracy"])


def test_sweep_is_reproducible_and_complete(sweep_env, monkeypatch):
    import json

    folder, loader, cache = sweep_env
    first = _run(folder, loader(False), cache, monkeypatch).to_dict()
    second = _run(folder, loader(False), cache, monkeypatch).to_dict()
    for d in (first, second):
        d.pop("timings")
        d.pop("features")
        assert d.pop("provenance")["versions"]["torch"]  # host/time differ between runs
        for rec in d["records"]:
            rec.pop("wall_seconds")
    assert json.dumps(first, sort_keys=True, default=str) == json.dumps(
        second, sort_keys=True, default=str)
    assert len(first["records"]) == 4 and len(first["table"]) == 2
    rec = first["records"][0]
    assert {"train", "dev", "test", "spectrum"} <= set(rec["selected"])
    assert len(rec["trajectories"]) == 2 and rec["trajectories"][0]["pl_ratio"]
    assert rec["selected"]["step"] == rec["selected_step"]
    if rec["selected_step"]:
        assert rec["selected"]["spectrum"][0]["rank"] <= rec["rank"]


def test_sweep_on_factor_only_features_matches_the_dense_sweep(sweep_env, monkeypatch,
                                                               tmp_path):
    """Features above the dense-J limit (MNLI at 512 shots) keep only token factors; the sweep's
    selections, metrics, η0 and kernel baselines do not change."""
    from lorank.ntk import features as features_mod

    folder, loader, cache = sweep_env
    dense = _run(folder, loader(False), cache, monkeypatch)
    monkeypatch.setattr(features_mod, "DENSE_J_MAX_MB", 0.0)
    only = _run(folder, loader(False), tmp_path, monkeypatch)  # fresh cache: recomputed
    for a, b in zip(dense.records, only.records, strict=True):
        assert a.selected_step == b.selected_step
        assert (a.selected_lr, a.eta0) == pytest.approx((b.selected_lr, b.eta0), rel=1e-9)
        assert a.kernel["lam"] == b.kernel["lam"]
        for part in ("selected", "kernel", "w0"):
            got, want = getattr(b, part), getattr(a, part)
            for split in ("train", "dev", "test"):
                assert got[split] == pytest.approx(want[split])


def test_stream_test_metrics_with_no_column_for_a_test_split(sweep_env, monkeypatch):
    """A test split none of whose seeds has a surviving solution (every run diverged) gives its
    W0 metrics and no column metrics — not a zip error (the predictor's --validate path)."""
    from lorank.linearized.experiment import SweepConfig, load_seeds, stream_test_metrics

    folder, loader, cache = sweep_env
    monkeypatch.setenv("LORANK_CACHE_DIR", str(cache))
    cfg = SweepConfig(task="sst2", model=folder, adapter=AdapterConfig(ranks=(1,)),
                      seeds=(13, 21), lrs=(0.5,), k=4, max_length=16, dtype="float64")
    seeds = load_seeds(cfg, load_data=loader(False))
    P = seeds[0].train.P
    w0, out = stream_test_metrics(seeds, {}, lambda k: k, ["accuracy"], 16)
    assert out == {} and set(w0) == {0, 1}
    gen = torch.Generator().manual_seed(0)
    cols = {0: 1e-3 * torch.randn(P, generator=gen, dtype=torch.float64)}
    w0_one, one = stream_test_metrics(seeds, cols, lambda k: k, ["accuracy"], 16)
    assert set(one) == {0} and w0_one == w0
    assert 0.0 <= one[0]["accuracy"] <= 1.0
