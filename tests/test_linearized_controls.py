"""Positive-control building blocks: the planted teacher, movement, early checkpoints, ties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.synthetic_features import synthetic_features

from lorank.errors import LorankError
from lorank.experiments.config import RunConfig
from lorank.experiments.methods.controls import options
from lorank.linearized.experiment import MOVED_MIN_DROP, movement
from lorank.linearized.planted import (
    PlantedSpec,
    calibrate,
    flip_fraction,
    planted_splits,
    planted_update,
)
from lorank.linearized.selection import select_checkpoint
from lorank.linearized.train import LinearizedTraining
from lorank.ntk.features import Block

BLOCKS = [Block("q", 0, "query", 12, 10), Block("v", 0, "value", 8, 9)]


@settings(max_examples=20, deadline=None)
@given(s=st.integers(1, 8), seed=st.integers(0, 1000))
def test_planted_update_has_rank_s_and_unit_singular_values(s, seed):
    delta = planted_update(BLOCKS, s, seed)
    pos = 0
    for b in BLOCKS:
        W = delta[pos:pos + b.size].reshape(b.m, b.n)
        pos += b.size
        sv = torch.linalg.svdvals(W)
        torch.testing.assert_close(sv[:s], torch.ones(s, dtype=sv.dtype))
        assert float(sv[s:].abs().sum()) < 1e-10
    torch.testing.assert_close(planted_update(BLOCKS, s, seed), delta)  # reproducible per seed
    assert not torch.equal(planted_update(BLOCKS, s, seed + 1), delta)


def test_planted_update_rejects_a_rank_above_the_matrix():
    with pytest.raises(LorankError, match="exceeds the 8 dimensions"):
        planted_update(BLOCKS, 9, 0)


def test_planted_update_inside_given_subspaces():
    g = torch.Generator().manual_seed(1)
    bases = [(torch.linalg.qr(torch.randn(b.m, 4, generator=g, dtype=torch.float64))[0],
              torch.linalg.qr(torch.randn(b.n, 4, generator=g, dtype=torch.float64))[0])
             for b in BLOCKS]
    delta = planted_update(BLOCKS, 3, 5, bases)
    pos = 0
    for b, (QU, QV) in zip(BLOCKS, bases, strict=True):
        W = delta[pos:pos + b.size].reshape(b.m, b.n)
        pos += b.size
        torch.testing.assert_close(QU @ QU.T @ W @ QV @ QV.T, W)  # inside both subspaces
        torch.testing.assert_close(torch.linalg.svdvals(W)[:3], torch.ones(3, dtype=W.dtype))
    with pytest.raises(LorankError, match="exceeds the 4 dimensions"):
        planted_update(BLOCKS, 5, 0, bases)


def test_data_subspaces_are_the_principal_directions_of_the_token_factors():
    from tests.test_linearized_als import factor_features

    from lorank.linearized.planted import data_subspaces

    f = factor_features(N=30, K=2, blocks=(Block("q", 0, "query", 5, 4),), tokens=4)
    (QU, QV), = data_subspaces(f, 2)
    X = f.factors["q"].X
    top = torch.linalg.svd(X, full_matrices=False).Vh[:2].T
    torch.testing.assert_close(QV @ QV.T, top @ top.T)
    assert QU.shape == (5, 2)
    f.factors = None
    with pytest.raises(LorankError, match="per-token factors"):
        data_subspaces(f, 2)


@pytest.mark.parametrize("flip", [0.1, 0.25, 0.4])
def test_calibrate_finds_the_smallest_scale_reaching_the_flip_fraction(flip):
    f = synthetic_features(N=400, K=2, blocks=BLOCKS, f0_scale=3.0)
    delta = planted_update(BLOCKS, 2, 3)
    kappa = calibrate(f, delta, flip)
    assert flip_fraction(f, delta, kappa) >= flip
    assert flip_fraction(f, delta, kappa * 0.999) < flip + 1 / f.N
    assert flip_fraction(f, delta, kappa * 0.98) <= flip


def _spec(seed: int) -> PlantedSpec:
    return PlantedSpec(teacher_rank=2, flip=0.2, n_train=50, seed=seed, subspace=0)


def test_planted_splits_layout_labels_and_w0_accuracy():
    f = synthetic_features(N=300, K=3, blocks=BLOCKS, f0_scale=3.0)
    data = planted_splits(f, _spec(4), 200, 40)
    assert (data.train.N, data.dev.N, data.test.N) == (50, 40, 60)
    again = planted_splits(f, _spec(4), 200, 40)
    assert torch.equal(data.train.labels, again.train.labels)  # reproducible per seed
    assert torch.equal(data.test.J, f.J[240:]) and torch.equal(data.dev.J, f.J[200:240])
    w0 = float((data.test.f0.argmax(1) == data.test.labels).double().mean())
    assert data.w0_test_acc == pytest.approx(w0)
    assert data.flip_sample >= 0.2
    other = planted_splits(f, _spec(5), 200, 40)
    assert not torch.equal(other.test.labels, data.test.labels)
    with pytest.raises(LorankError, match="exceeds the train pool"):
        planted_splits(f, PlantedSpec(n_train=201), 200, 40)
    with pytest.raises(LorankError, match="flip"):
        PlantedSpec(flip=0.5)


def test_features_subset_keeps_factors_consistent():
    from lorank.ntk.jacobian import TokenFactors

    f = synthetic_features(N=5, K=2, blocks=[Block("q", 0, "query", 3, 4)])
    g = torch.Generator().manual_seed(0)
    ex = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4])
    X = torch.randn(8, 4, generator=g, dtype=torch.float64)
    D = torch.randn(2, 8, 3, generator=g, dtype=torch.float64)
    fac = TokenFactors(ex, X, D)
    f.stored_J = fac.dense(5).flatten(2)
    f.factors = {"q": fac}
    sub = f.subset([4, 2], labels=torch.tensor([1, 0]))
    torch.testing.assert_close(sub.factors["q"].dense(2).flatten(2), sub.J)
    torch.testing.assert_close(sub.J, f.J[[4, 2]])
    assert sub.labels.tolist() == [1, 0]
    with pytest.raises(LorankError, match="indices"):
        f.subset([5])


def test_movement_flags_step_zero_and_negligible_drops():
    traj = {"steps": [0, 5, 10], "loss": [0.70, 0.69, 0.40]}
    assert movement(traj, 10, 1.5)["moved"] is True
    kept_w0 = movement(traj, 0, 0.0)
    assert kept_w0["moved"] is False and kept_w0["train_loss_drop"] == 0.0
    tiny = {"steps": [0, 5], "loss": [0.6673, 0.6668]}  # the RTE cell of issue #17
    out = movement(tiny, 5, 0.02)
    assert out["train_loss_drop"] < MOVED_MIN_DROP and out["moved"] is False
    assert movement({}, None, None)["moved"] is False
    assert math.isnan(movement({}, None, None)["train_loss_drop"])


def test_early_checkpoints_are_geometric_and_logged():
    from lorank.finetune.config import LoraTraining as LoraTrain
    from lorank.training import is_early_step

    assert [t for t in range(40) if is_early_step(t)] == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
    real = LoraTrain(steps=100, eval_every=25)
    assert [t for t in range(1, 101) if real.is_eval_step(t, 100)] == sorted(
        LinearizedTraining(steps=100, eval_every=25).eval_steps() - {0})
    steps = LinearizedTraining(steps=100, eval_every=25).eval_steps()
    assert sorted(steps) == [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 25, 50, 75, 100]
    plain = LinearizedTraining(steps=100, eval_every=25, eval_early=False).eval_steps()
    assert sorted(plain) == [0, 25, 50, 75, 100]
    assert sorted(LinearizedTraining(steps=3, eval_every=50).eval_steps()) == [0, 1, 2, 3]


@given(T=st.integers(1, 400), every=st.integers(1, 120), early=st.booleans())
@settings(max_examples=60, deadline=None)
def test_eval_steps_closed_form_and_shared_by_both_engines(T, every, early):
    """One schedule for both engines: {0, every, 2·every, …} ∪ {T} ∪ (early checkpoints below
    min(every, T)), whichever engine's settings compute it."""
    from lorank.finetune.config import LoraTraining as LoraTrain

    expect = set(range(0, T + 1, every)) | {T}
    if early:
        geometric = {2 ** i for i in range(12)} | {3 * 2 ** i for i in range(11)}  # 1, 2, 3, 4, 6
        expect |= {t for t in geometric if t < min(every, T)}
    lin = LinearizedTraining(steps=T, eval_every=every, eval_early=early)
    real = LoraTrain(steps=T, eval_every=every, eval_early=early)
    assert lin.eval_steps() == real.eval_steps(T) == frozenset(expect)


def test_dev_loss_breaks_ties_on_the_dev_metric():
    curves = {0.1: ([0, 5, 10], [0.75, 0.75, 0.70], [0.69, 0.60, 0.65]),
              0.3: ([0, 5, 10], [0.75, 0.72, 0.75], [0.69, 0.50, 0.62])}
    choice = select_checkpoint(curves)
    assert (choice.key, choice.step, choice.value) == (0.1, 5, 0.75)  # lowest loss at 0.75
    plain = select_checkpoint({k: v[:2] for k, v in curves.items()})
    assert (plain.key, plain.step) == (0.1, 0)  # without the loss: W0 wins the tie


def test_trainer_keeps_the_checkpoint_selection_would_pick():
    """The engine's best_step (kept factors) equals select_checkpoint on the same curves."""
    from lorank.linearized.train import RunSpec, train_linearized

    train = synthetic_features(N=12, K=2, seed=1, blocks=BLOCKS, f0_scale=1.0)
    dev = synthetic_features(N=6, K=2, seed=2, blocks=BLOCKS, f0_scale=1.0)
    res = train_linearized([train], [RunSpec(1, 0, 0.05, 0)],
                           LinearizedTraining(steps=30, eval_every=10, loss="ce"), [dev])
    tr = res.trajectories[0]
    choice = select_checkpoint({0: (tr.dev_steps, tr.dev_metric, tr.dev_loss)})
    assert choice.step == tr.best_step == res.best[0].step


def test_planted_options_are_validated():
    base = dict(sweep="s", method="planted", task="sst2", model="minilm", rank=1, seed=13)
    assert options(RunConfig(**base))["teacher_rank"] == 8
    with pytest.raises(LorankError, match="unknown planted option 'teacher'"):
        options(RunConfig(**base, options={"teacher": 2}))
    with pytest.raises(LorankError, match=r"exceeds options\.n_pool"):
        options(RunConfig(**base, options={"n_train": 2048}))
    with pytest.raises(LorankError, match="teacher_rank must be a positive integer"):
        options(RunConfig(**base, options={"teacher_rank": 0}))


def test_capacity_cell_floors_and_gd_on_factor_features():
    """KN = 12 targets, one 5x4 matrix (d(1) = 8 < 12 ≤ d(2) = 14): the ALS floor separates the
    ranks; GD reports its own (budget-limited) loss; test accuracy is measured for both."""
    from tests.test_linearized_als import factor_features

    from lorank.experiments.methods.controls import capacity_cell, capacity_splits

    sample = factor_features(N=10, K=2, seed=2)
    opts = {"n_pool": 6, "n_dev": 0, "n_train": 6}
    train, test = capacity_splits(sample, opts, seed=3)
    assert (train.N, test.N) == (6, 4)
    again, _ = capacity_splits(sample, opts, seed=3)
    assert torch.equal(again.labels, train.labels)
    cfg = RunConfig(sweep="s", method="capacity", task="sst2", model="m", rank=1, seed=3,
                    loss="mse", lrs=(0.5,), steps=50)
    cells = capacity_cell(train, test, (1, 2), cfg, als_iters=200)
    assert cells[1]["als_floor"] > 1e-3 > 1e-6 > cells[2]["als_floor"]
    assert cells[1]["train_loss_gd"] <= cells[1]["train_loss_init"]
    assert 0 <= cells[1]["test_acc"] <= 1 and 0 <= cells[2]["als_test_acc"] <= 1
    ce = capacity_cell(train, test, (1,), RunConfig(**{**cfg.to_dict(), "loss": "ce"}), 5)
    assert "als_floor" not in ce[1]


def test_capacity_ranks_are_nested_after_interpolation():
    """Once a rank interpolates, higher ranks reuse its solution (rank-r ⊂ rank-r'): their floor
    is that rank's, solved once; below interpolation every rank is solved on its own."""
    from tests.test_linearized_als import factor_features

    from lorank.experiments.methods.controls import INTERPOLATED, _als_by_rank

    train = factor_features(N=6, K=2, seed=2)
    out = _als_by_rank(train, (3, 1, 2), seed=3, iters=200)
    assert out[1][2] == 1 and out[1][0].floor > 1e-3
    assert out[2][2] == 2 and out[2][0].floor <= INTERPOLATED
    assert out[3][2] == 2 and out[3][0] is out[2][0] and torch.equal(out[3][1], out[2][1])
