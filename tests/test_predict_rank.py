"""Rademacher rank predictor (lorank.linearized.predict, ``lorank predict-rank``)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cli_helpers import one_line_error as _error
from lorank.cli.main import main
from lorank.errors import LorankError
from lorank.linearized.predict import (
    PredictConfig,
    PredictResult,
    RankBound,
    argmin_rank,
    dev_margin_anchor,
    max_feature_norm,
    predict_on_features,
    rho_grid,
    solution_bound,
)
from lorank.models.lora_shape import AdapterConfig
from lorank.ntk.features import Block, Features
from lorank.theory.rademacher import feature_norm, rademacher_bound
from synthetic_features import BLOCKS, synthetic_features

torch.set_num_threads(1)


def synthetic(N=12, K=2, seed=0, blocks=BLOCKS):
    return synthetic_features(N, K, seed, blocks, f0_scale=0.3)


def test_argmin_rank_ties_to_smaller_rank():
    assert argmin_rank({4: 1.0, 1: 1.0, 2: 3.0}) == 1
    assert argmin_rank({8: 0.5, 2: 0.5 + 1e-15, 1: 0.7}) == 2
    assert argmin_rank({1: math.nan, 2: 2.0, 3: math.inf}) == 2
    with pytest.raises(LorankError):
        argmin_rank({})
    with pytest.raises(LorankError, match="non-finite"):
        argmin_rank({1: math.nan})


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(1, 32), st.sampled_from([0.25, 0.5, 1.0, 2.0]), min_size=1))
def test_predicted_rank_is_argmin_of_mean_bound(values):
    """Reference: sort (bound, r) pairs; two seeds with the same bounds."""
    bounds = [RankBound(r, s, r, 1.0, 0.0, v, 0.0, v, 1.0, 1.0, 1.0)
              for r, v in values.items() for s in (1, 2)]
    res = PredictResult({}, bounds)
    assert res.predicted_rank == min(values.items(), key=lambda kv: (kv[1], kv[0]))[0]
    assert set(res.per_seed_predictions().values()) == {res.predicted_rank}


def test_nested_construction_bias_is_monotone_and_bound_finite():
    """G_{y_i}(x_i) = diag(w_i) = −G_{k≠y_i}(x_i), w_i ≥ 0; X_r = diag(1, …, 1, 0, …) (r ones):
    margins 2 Σ_{j<r} w_ij grow with r, so the ramp loss cannot increase."""
    n, N = 8, 10
    g = torch.Generator().manual_seed(0)
    w = torch.rand(N, n, generator=g, dtype=torch.float64) * 0.2
    J = torch.zeros(N, 2, n * n, dtype=torch.float64)
    y = torch.arange(N) % 2
    for i in range(N):
        d = torch.diag(w[i]).reshape(-1)
        J[i, y[i]], J[i, 1 - y[i]] = d, -d
    f = Features(J, torch.zeros(N, 2, dtype=torch.float64), y, [Block("w", 0, "query", n, n)])
    rhos = rho_grid(0.5, 2)
    out = [solution_bound(f, torch.diag(torch.tensor([1.0] * r + [0.0] * (n - r),
                          dtype=torch.float64)).reshape(-1), r, (1.0,)) for r in range(1, n + 1)]
    biases = [b.bias for b in out]
    assert all(b2 <= b1 + 1e-15 for b1, b2 in itertools.pairwise(biases))
    assert biases[0] > biases[-1]
    for b in [*out, solution_bound(f, torch.zeros(n * n, dtype=torch.float64), 1, rhos)]:
        assert math.isfinite(b.bound) and b.variance >= 0 and 0 <= b.bias <= 1


def test_solution_bound_matches_rademacher_bound_at_its_rho():
    f = synthetic()
    delta = 0.05 * torch.randn(f.P, generator=torch.Generator().manual_seed(1),
                               dtype=torch.float64)
    rhos = rho_grid(1.0, 3)
    b = solution_bound(f, delta, 2, rhos, "nuclear", 0.05)
    logits = (f.f0 + f.J @ delta).numpy()
    ref = [rademacher_bound(logits=logits, labels=f.labels.numpy(), frob_norm=float(delta.norm()),
                            r=2 * len(BLOCKS), feature_norm=feature_norm(f.J.numpy()), rho=rho,
                            delta=0.05 / len(rhos)) for rho in rhos]
    best = min(ref, key=lambda x: x.bound)
    assert b.bound == pytest.approx(best.bound, rel=1e-12) and b.rho == best.rho
    assert b.r_class == 4 and b.feature_norm == pytest.approx(feature_norm(f.J.numpy()))
    frob = solution_bound(f, delta, 2, rhos, "frobenius", 0.05)
    assert frob.bound <= b.bound
    with pytest.raises(LorankError, match="norm"):
        solution_bound(f, delta, 2, rhos, "spectral")


def test_rho_grid_and_anchor():
    grid = rho_grid(2.0, 2)
    assert grid == (0.5, 1.0, 2.0, 4.0, 8.0)
    with pytest.raises(LorankError):
        rho_grid(0.0)
    f = synthetic()
    mu = f.f0[torch.arange(f.N), f.labels] - f.f0[torch.arange(f.N), 1 - f.labels]
    assert dev_margin_anchor(f) == pytest.approx(float(np.median(np.abs(mu.numpy()))))
    assert max_feature_norm(f) == pytest.approx(feature_norm(f.J.numpy()), rel=1e-12)
    zero = Features(f.J, torch.zeros_like(f.f0), f.labels, list(BLOCKS))
    with pytest.raises(LorankError, match="rho"):
        dev_margin_anchor(zero)


def test_predict_on_features_end_to_end():
    train = [synthetic(seed=s) for s in (0, 1)]
    dev = [synthetic(seed=s + 10) for s in (0, 1)]
    cfg = PredictConfig(adapter=AdapterConfig(ranks=(1, 2, 4)), seeds=(13, 21), steps=60,
                        eval_every=20, lr_mults=(1.0, 3.0))
    res, sols = predict_on_features(train, dev, [13, 21], cfg)
    assert {(b.rank, b.seed) for b in res.bounds} == {(r, s) for r in (1, 2, 4) for s in (13, 21)}
    means = {r: np.mean([b.bound for b in res.bounds if b.rank == r]) for r in (1, 2, 4)}
    assert res.predicted_rank == min(means, key=lambda r: (means[r], r))
    for b in res.bounds:
        assert math.isfinite(b.bound) and b.r_class == 2 * b.rank
        assert b.frob_norm == pytest.approx(float(sols[(b.rank, b.seed)].delta().norm()))
    data = json.loads(res.to_json())
    assert data["predicted_rank"] == res.predicted_rank and data["measured_best_rank"] is None
    assert data["provenance"]["versions"]["numpy"] and "git_dirty" in data["provenance"]
    fixed = predict_on_features(train, dev, [13, 21], PredictConfig(
        adapter=AdapterConfig(ranks=(1, 2)), seeds=(13, 21), steps=20, eval_every=10, rho=0.7,
        lr_mults=(1.0,)))[0]
    assert {b.rho for b in fixed.bounds} == {0.7}


def test_caveats_stand_next_to_the_prediction():
    from lorank.cli.predict_rank import caveats

    bounds = [RankBound(r, 1, r, 1.0, 0.0, 1.0, 0.0, 3.0 + r, 1.0, 1.0, 1.0) for r in (1, 2)]
    lines = caveats(PredictResult({"norm": "nuclear"}, bounds))
    assert len(lines) == 2 and "√r" in lines[0] and "vacuous here (mean bound 4 to 5" in lines[1]
    lines = caveats(PredictResult({"norm": "frobenius"}, [
        RankBound(1, 1, 1, 0.1, 0.0, 0.1, 0.0, 0.5, 1.0, 1.0, 1.0)]))
    assert len(lines) == 1 and lines[0].startswith("mean bound 0.5 to 0.5")


def test_validation_picks_best_test_accuracy():
    bounds = [RankBound(r, 1, r, 1.0, 0.0, 1.0, 0.0, 1.0 + r, 1.0, 1.0, 1.0) for r in (1, 2, 4)]
    res = PredictResult({}, bounds, test={(1, 1): {"accuracy": 0.7}, (2, 1): {"accuracy": 0.8},
                                          (4, 1): {"accuracy": 0.8}})
    assert res.predicted_rank == 1 and res.measured_best_rank == 2
    assert res.table()[1]["test_accuracy"] == (0.8, 0.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"ranks": (0,)}, "ranks"), ({"ranks": (1, 1)}, "distinct"), ({"norm": "max"}, "norm"),
    ({"rho": 0.0}, "rho"), ({"rho": -1.0}, "rho"), ({"delta": 1.0}, "delta"),
    ({"checkpoint": "best"}, "checkpoint"), ({"steps": 0}, "steps"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(LorankError, match=match):
        if "ranks" in kwargs:  # the rank grid lives in the adapter
            kwargs = {"adapter": AdapterConfig(ranks=kwargs["ranks"])}
        PredictConfig(**kwargs)


@pytest.mark.parametrize("argv, match", [
    (["predict-rank", "--task", "sst2", "--ranks", "1,x"], "ranks"),
    (["predict-rank", "--task", "sst2", "--ranks", "0,2"], "ranks"),
    (["predict-rank", "--task", "sst2", "--ranks", ","], "ranks"),
    (["predict-rank", "--task", "sst2", "--norm", "spectral"], "norm"),
    (["predict-rank", "--task", "sst2", "--rho", "0"], "rho"),
    (["predict-rank", "--task", "sst2", "--rho", "-0.5"], "rho"),
    (["predict-rank", "--task", "nosuchtask"], "unknown task"),
    (["predict-rank", "--task", "sst2", "--checkpoint", "best"], "checkpoint"),
    (["predict-rank", "--task", "sst2", "--test-max", "0"], "test-max"),
])
def test_cli_bad_input_is_one_line_exit_2(capsys, argv, match):
    assert match in _error(capsys, argv)


def test_cli_on_tiny_model_with_real_sst2(tiny, data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LORANK_CACHE_DIR", str(tmp_path))
    argv = ["predict-rank", "--model", tiny, "--task", "sst2", "--ranks", "1,2,4", "--seeds",
            "13", "--steps", "20", "--eval-every", "10", "--max-length", "32",
            "--data-dir", str(data_dir), "--threads", "1", "--test-max", "20"]
    main([*argv, "--validate", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in data["table"]] == [1, 2, 4]
    assert data["predicted_rank"] in (1, 2, 4) and data["measured_best_rank"] in (1, 2, 4)
    assert len(data["test"]) == 3 and all(0 <= t["accuracy"] <= 1 for t in data["test"])
    bounds = {r["rank"]: r["bound"][0] for r in data["table"]}
    assert data["predicted_rank"] == min(bounds, key=lambda r: (bounds[r], r))
    assert any("‖X‖_* ≤ √r·‖X‖_F" in c for c in data["caveats"])
    assert any("3.3 to 623" in c for c in data["caveats"])
    main([*argv, "--norm", "frobenius"])
    out = capsys.readouterr().out
    assert "predicted rank:" in out and "bias" in out
    assert "caveat:" in out and "3.3 to 623" in out and "‖X‖_*" not in out
