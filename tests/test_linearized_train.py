"""Batched linearized-LoRA training: equals one-by-one training, exact gradients, divergence
bookkeeping, weight decay, CE at r = 1 reaching ~0 loss, init and scaling conventions."""

from __future__ import annotations

import math

import pytest
import torch

from lorank.errors import LorankError
from lorank.linearized import (
    LinearizedTraining,
    RunSpec,
    factor_spectrum,
    init_factors,
    spectrum,
    train_linearized,
)
from lorank.linearized.losses import loss_and_grad
from lorank.models.lora_shape import AdapterConfig, scale
from lorank.ntk import Block, Features
from train_cases import RUNS, SETTINGS, case

torch.set_num_threads(1)
BLOCKS = [Block("a", 0, "query", 6, 5), Block("b", 1, "value", 4, 7)]


def synthetic(N=10, K=2, seed=0, dtype=torch.float64, blocks=BLOCKS):
    gen = torch.Generator().manual_seed(seed)
    P = sum(b.size for b in blocks)
    J = torch.randn(N, K, P, generator=gen, dtype=dtype)
    f0 = 0.1 * torch.randn(N, K, generator=gen, dtype=dtype)
    y = torch.randint(0, K, (N,), generator=gen)
    return Features(J, f0, y, list(blocks))


@pytest.mark.parametrize("cfg", SETTINGS)
def test_batched_equals_one_by_one(cfg):
    settings, adapter = case(cfg)
    train, dev = [synthetic(seed=0), synthetic(seed=1)], [synthetic(seed=2), synthetic(seed=3)]
    batched = train_linearized(train, RUNS, settings, dev, adapter=adapter)
    for c, run in enumerate(RUNS):
        one = train_linearized(train, [run], settings, dev, adapter=adapter)
        torch.testing.assert_close(batched.final[c].delta(), one.final[0].delta(),
                                   rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(batched.best[c].delta(), one.best[0].delta(),
                                   rtol=1e-10, atol=1e-12)
        a, b = batched.trajectories[c], one.trajectories[0]
        assert a.dev_metric == b.dev_metric and a.best_step == b.best_step
        assert max(abs(x - y) for x, y in zip(a.loss, b.loss, strict=True)) < 1e-10


def test_gradients_match_autograd():
    feats = synthetic()
    wd, s = 0.03, 0.7
    A, B = init_factors(BLOCKS, 2, seed=1, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    B = [torch.randn(b.shape, generator=gen, dtype=torch.float64) for b in B]
    leaves = [p.clone().requires_grad_() for p in (*A, *B)]
    delta = torch.cat([(s * (b @ a)).reshape(-1) for a, b in zip(leaves[:2], leaves[2:],
                                                                   strict=True)])
    out = feats.f0 + feats.J @ delta
    obj = torch.nn.functional.cross_entropy(out, feats.labels) + wd / 2 * sum(
        p.square().sum() for p in leaves)
    obj.backward()
    from lorank.linearized.train import _Bucket

    bucket = _Bucket([0], [RunSpec(2, 1, 0.1)], BLOCKS, LinearizedTraining(), AdapterConfig(),
                     torch.float64, "cpu")
    bucket.A, bucket.B = [a[None].clone() for a in A], [b[None].clone() for b in B]
    bucket.s, bucket.scale = torch.full((1, 1, 1), s, dtype=torch.float64), s
    D = torch.empty(1, feats.P, dtype=torch.float64)
    bucket.delta_into(D, feats.offsets())  # the engine's s·B·A layout against the reference
    torch.testing.assert_close(D[0], delta.detach())
    o = feats.f0[:, :, None] + (feats.flat() @ D.T).reshape(10, 2, 1)
    _, E = loss_and_grad(o, feats.labels, "ce")
    grads = bucket.grads(E.reshape(20, 1).T @ feats.flat(), feats.offsets(), BLOCKS, wd)
    for g, leaf in zip(grads, leaves, strict=True):
        torch.testing.assert_close(g[0], leaf.grad)


def test_flin_equals_f0_at_init_and_grad_A_is_zero():
    feats = synthetic()
    res = train_linearized([feats], [RunSpec(2, 1, 0.1)], LinearizedTraining(steps=1, log_every=1))
    tr = res.trajectories[0]
    expected, _ = loss_and_grad(feats.f0[:, :, None], feats.labels, "ce")
    assert tr.loss[0] == pytest.approx(float(expected[0]), rel=1e-12)
    # B = 0 at init: ‖∇Φ‖² is ‖∂B‖² only, s²‖M Aᵀ‖².
    assert tr.grad_norm2[0] > 0


def test_ce_rank_one_drives_training_loss_to_zero():
    feats = synthetic(N=16, K=2, seed=4, blocks=[Block("w", 0, "query", 12, 12)])
    res = train_linearized([feats], [RunSpec(1, 0, 0.5)], LinearizedTraining(steps=1500,
                                                                       log_every=100))
    tr = res.trajectories[0]
    assert tr.loss[-1] < 0.02 * tr.loss[0] and tr.loss[-1] < 0.02
    assert tr.final_train_metric == 1.0
    assert all(math.isfinite(x) and x > 0 for x in tr.pl_ratio)


def test_divergence_is_recorded_not_raised():
    feats = synthetic()
    runs = [RunSpec(1, 0, 1e6), RunSpec(1, 0, 0.05)]
    res = train_linearized([feats], runs, LinearizedTraining(steps=50, eval_every=5, loss="mse"),
                           dev=[synthetic(seed=9)])
    bad, good = res.trajectories
    assert bad.diverged_step is not None and 0 < bad.diverged_step <= 50
    assert good.diverged_step is None and math.isfinite(good.loss[-1])
    assert math.isnan(bad.loss[-1]) and math.isnan(bad.final_train_metric)
    assert torch.isfinite(res.best[0].delta()).all()
    assert res.best[0].step < bad.diverged_step
    alone = train_linearized([feats], runs[1:], LinearizedTraining(steps=50, eval_every=5,
                                                                   loss="mse"), [synthetic(seed=9)])
    torch.testing.assert_close(res.final[1].delta(), alone.final[0].delta())


def test_weight_decay_shrinks_the_update():
    feats = synthetic()
    norms = []
    for wd in (0.0, 0.5):
        res = train_linearized([feats], [RunSpec(3, 0, 0.1)], LinearizedTraining(steps=200,
                                                                                 weight_decay=wd))
        norms.append(float(res.final[0].delta().norm()))
        tr = res.trajectories[0]
        assert tr.objective[-1] >= tr.loss[-1] - 1e-15
    assert norms[1] < 0.8 * norms[0]


def test_init_distribution_and_nesting():
    blocks = [Block("w", 0, "query", 50, 400)]
    A, B = init_factors(blocks, 8, seed=3)
    assert B[0].abs().max() == 0 and A[0].shape == (8, 400)
    assert abs(float(A[0].var()) * 400 - 1) < 0.1 and abs(float(A[0].mean())) < 0.01
    A1, _ = init_factors(blocks, 1, seed=3, dtype=torch.float64)
    torch.testing.assert_close(A1[0].float(), A[0][:1])


def test_scale_conventions():
    assert scale("lora", 16, 4) == 4 and scale("rslora", 16, 4) == 8 and scale("none", 3, 9) == 1
    with pytest.raises(LorankError):
        scale("bogus", 1, 1)
    with pytest.raises(LorankError):
        scale("lora", -1, 1)


def test_spectrum_from_factors_matches_svd():
    A, _ = init_factors(BLOCKS, 3, seed=2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    B = [torch.randn(b.m, 3, generator=gen, dtype=torch.float64) for b in BLOCKS]
    delta = torch.cat([(0.5 * b @ a).reshape(-1) for a, b in zip(A, B, strict=True)])
    full, fact = spectrum(delta, BLOCKS), factor_spectrum(A, B, 0.5, BLOCKS)
    for x, y in zip(full, fact, strict=True):
        assert x["rank"] == y["rank"] == 3
        assert x["singular_values"] == pytest.approx(y["singular_values"], rel=1e-9)
        assert x["nuclear"] == pytest.approx(y["nuclear"], rel=1e-9)


@pytest.mark.parametrize("kwargs, match", [
    ({"loss": "hinge"}, "loss"), ({"optimizer": "lbfgs"}, "optimizer"),
    ({"steps": 0}, "steps"), ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
    ({"weight_decay": float("nan")}, "weight_decay must be a finite number"),
    ({"batch_size": 0}, "batch_size"), ({"metric": "mcc"}, "metric must be one of"),
    ({"log_every": 0}, "log_every"), ({"eval_every": 0}, "eval_every"),
    ({"engine": "gpu"}, "engine must be one of"), ({"optimizer": "adamw"}, "optimizer"),
])
def test_settings_validation(kwargs, match):
    with pytest.raises(LorankError, match=match):
        LinearizedTraining(**kwargs)


@pytest.mark.parametrize("adapter, match", [
    (AdapterConfig(init="gaussian"), "init fan_in"), (AdapterConfig(dropout=0.1), "dropout"),
])
def test_linearized_engine_refuses_adapters_it_cannot_train(adapter, match):
    with pytest.raises(LorankError, match=match):
        train_linearized([synthetic()], [RunSpec(1, 0, 0.1)], adapter=adapter)


def test_bad_runs_rejected():
    feats = synthetic()
    with pytest.raises(LorankError, match="rank"):
        train_linearized([feats], [RunSpec(0, 0, 0.1)])
    with pytest.raises(LorankError, match="learning rate"):
        train_linearized([feats], [RunSpec(1, 0, -0.1)])
    with pytest.raises(LorankError, match="group"):
        train_linearized([feats], [RunSpec(1, 0, 0.1, group=3)])


def test_interleaved_run_order_and_divergence_match_one_by_one():
    """Runs given in any order (groups and ranks interleaved, one diverging) are stored
    group-major internally; every result must still land at its own index and equal a
    one-configuration run."""
    import random

    train = [synthetic(seed=0), synthetic(seed=1), synthetic(seed=2)]
    dev = [synthetic(seed=5), synthetic(seed=6), synthetic(seed=7)]
    runs = [RunSpec(r, s, lr, g) for g in (2, 0, 1) for r in (3, 1) for s in (5, 6)
            for lr in (0.05, 1e5)]
    random.Random(1).shuffle(runs)
    settings = LinearizedTraining(steps=20, eval_every=5, loss="mse")
    adapter = AdapterConfig(scaling="lora", alpha=3.0)
    batched = train_linearized(train, runs, settings, dev, adapter=adapter)
    assert any(t.diverged_step is not None for t in batched.trajectories)
    for c, run in enumerate(runs):
        one = train_linearized(train, [run], settings, dev, adapter=adapter)
        a, b = batched.trajectories[c], one.trajectories[0]
        assert (a.rank, a.seed, a.lr, a.group) == (run.rank, run.seed, run.lr, run.group)
        assert a.diverged_step == b.diverged_step and a.best_step == b.best_step
        torch.testing.assert_close(batched.final[c].delta(), one.final[0].delta(),
                                   rtol=1e-10, atol=1e-12, equal_nan=True)
        torch.testing.assert_close(batched.best[c].delta(), one.best[0].delta(),
                                   rtol=1e-10, atol=1e-12)
        finite = [(x, y) for x, y in zip(a.loss, b.loss, strict=True) if math.isfinite(y)]
        assert all(abs(x - y) <= 1e-10 * max(1.0, abs(y)) for x, y in finite)
