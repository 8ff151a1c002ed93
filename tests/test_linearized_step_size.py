"""Kernel step sizes η0 (lorank.linearized.step_size) against autograd Hessians."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.synthetic_features import synthetic_features

from lorank.errors import LorankError
from lorank.linearized.model import init_factors
from lorank.linearized.step_size import (
    full_kernel_step,
    lora_hessian_operator,
    lora_kernel_step,
)
from lorank.models.lora_shape import scale
from lorank.ntk.features import Block

BLOCKS = [Block("w1", 0, "query", 5, 4), Block("w2", 0, "value", 3, 6)]


def _objective(features, loss, wd):
    """Φ(ΔW) = mean loss of f0 + J·vec(ΔW) + wd/2·‖ΔW‖² (wd only used by the full model)."""
    labels = features.labels

    def phi(flat):
        out = features.f0 + torch.einsum("ikp,p->ik", features.J, flat)
        if loss == "ce":
            val = torch.nn.functional.cross_entropy(out, labels)
        else:
            Y = torch.nn.functional.one_hot(labels, features.K).to(out.dtype)
            val = 0.5 * ((out - Y) ** 2).sum(1).mean()
        return val + 0.5 * wd * flat.square().sum()

    return phi


def _lora_objective(features, r, seed, loss, scaling, alpha, wd):
    A0, _ = init_factors(features.blocks, r, seed, torch.float64)
    s = scale(scaling, alpha, r)
    full = _objective(features, loss, 0.0)
    sizes = [(a.shape, (b.m, r)) for a, b in zip(A0, features.blocks, strict=True)]
    nA = sum(sa[0] * sa[1] for sa, _ in sizes)

    def phi(theta):
        pos, As, Bs = 0, [], []
        for sa, _ in sizes:
            As.append(theta[pos:pos + sa[0] * sa[1]].reshape(sa))
            pos += sa[0] * sa[1]
        for _, sb in sizes:
            Bs.append(theta[pos:pos + sb[0] * sb[1]].reshape(sb))
            pos += sb[0] * sb[1]
        delta = torch.cat([(s * (b @ a)).reshape(-1) for a, b in zip(As, Bs, strict=True)])
        return full(delta) + 0.5 * wd * theta.square().sum()

    theta0 = torch.cat([*(a.reshape(-1) for a in A0),
                        torch.zeros(sum(sb[0] * sb[1] for _, sb in sizes), dtype=torch.float64)])
    assert theta0.numel() == nA + sum(sb[0] * sb[1] for _, sb in sizes)
    return phi, theta0


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("K", [2, 3])
def test_full_kernel_step_is_inverse_top_hessian_eigenvalue(loss, K):
    f = synthetic_features(N=6, K=K, blocks=BLOCKS, f0_scale=1.0)
    H = torch.func.hessian(_objective(f, loss, 0.1))(torch.zeros(f.P, dtype=torch.float64))
    expected = 1.0 / float(torch.linalg.eigvalsh(H)[-1])
    assert full_kernel_step(f, loss, weight_decay=0.1) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("K", [2, 3])
def test_lanczos_kernel_step_equals_dense(loss, K, monkeypatch):
    """Above DENSE_MAX rows λ_max comes from Lanczos on J-products: the same η0 as the dense Gram
    (float64 features: to 1e-8; float32 features: to 1e-5)."""
    import lorank.linearized.step_size as step_size

    f = synthetic_features(N=40, K=K, blocks=BLOCKS, f0_scale=1.0)
    dense = full_kernel_step(f, loss, weight_decay=0.05)
    monkeypatch.setattr(step_size, "DENSE_MAX", 4)
    assert full_kernel_step(f, loss, weight_decay=0.05) == pytest.approx(dense, rel=1e-8)
    assert full_kernel_step(f.to(torch.float32), loss, 0.05) == pytest.approx(dense, rel=1e-5)


@settings(max_examples=15, deadline=None)
@given(r=st.integers(1, 3), seed=st.integers(0, 50), loss=st.sampled_from(["ce", "mse"]),
       scaling=st.sampled_from(["none", "lora", "rslora"]), wd=st.sampled_from([0.0, 0.05]),
       K=st.integers(2, 3))
def test_lora_hessian_operator_matches_autograd(r, seed, loss, scaling, wd, K):
    f = synthetic_features(N=5, K=K, seed=seed, blocks=BLOCKS, f0_scale=1.0)
    phi, theta0 = _lora_objective(f, r, seed, loss, scaling, 2.0, wd)
    H = torch.func.hessian(phi)(theta0)
    op = lora_hessian_operator(f, r, seed, loss, scaling, 2.0, wd)
    eye = torch.eye(theta0.numel(), dtype=torch.float64).numpy()
    dense = torch.from_numpy(op.matmat(eye))
    torch.testing.assert_close(dense, H, rtol=1e-9, atol=1e-11)
    lam = float(torch.linalg.eigvalsh(H)[-1])
    if lam > 1e-8:
        assert lora_kernel_step(f, r, seed, loss, scaling, 2.0, wd) == pytest.approx(
            1 / lam, rel=1e-5)


def test_lora_step_grows_with_smaller_rank_for_unit_scale():
    """s = 1, A ~ N(0, 1/n): the B-block's curvature is about r/n of the full one, so η0 falls
    as r grows (the reason an absolute learning rate trains low ranks slowly)."""
    blocks = [Block("w", 0, "query", 16, 64)]
    f = synthetic_features(N=20, K=2, blocks=blocks, f0_scale=0.0)
    steps = [lora_kernel_step(f, r, 0, "mse") for r in (1, 4, 16)]
    assert steps[0] > steps[1] > steps[2]
    full = full_kernel_step(f, "mse")
    assert steps[-1] > full  # r = 16 of n = 64: still less curvature than full FT


def test_gd_at_kernel_step_multiples_is_stable_below_two_and_not_far_above():
    """GD on the full linearized MSE problem: c = 1.9 converges, c = 2.1 diverges."""
    f = synthetic_features(N=6, K=2, blocks=BLOCKS, f0_scale=1.0)
    eta0 = full_kernel_step(f, "mse")
    phi = _objective(f, "mse", 0.0)
    for c, stable in ((1.9, True), (2.1, False)):
        x = torch.zeros(f.P, dtype=torch.float64)
        for _ in range(3000):
            x = x - c * eta0 * torch.func.grad(phi)(x)
        assert math.isfinite(float(phi(x))) and float(phi(x)) < 1e3 if stable else \
            not (float(phi(x)) < 1e3)


def test_zero_features_have_no_kernel_step():
    f = synthetic_features(N=4, K=2, blocks=BLOCKS)
    f.J.zero_()
    with pytest.raises(LorankError, match="no kernel step"):
        full_kernel_step(f, "mse")
    with pytest.raises(LorankError, match="rank must be a positive integer"):
        lora_kernel_step(f, 0, 0)
