"""Kernel baselines against closed forms, and the nuclear-norm reference against the Sard count."""

from __future__ import annotations

import pytest
import torch

from lorank.errors import LorankError
from lorank.linearized import kernel_regression, nuclear_fit, select_kernel, svt
from lorank.linearized.losses import loss_and_grad, targets
from lorank.ntk import Block, Features
from lorank.theory import sard_min_rank

torch.set_num_threads(1)


def synthetic(N=6, K=2, m=5, n=7, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    blocks = [Block("w", 0, "query", m, n)]
    J = scale * torch.randn(N, K, m * n, generator=gen, dtype=torch.float64)
    return Features(J, 0.3 * torch.randn(N, K, generator=gen, dtype=torch.float64),
                    torch.arange(N) % K, blocks)


def test_min_norm_least_squares_interpolates_with_pinv_solution():
    f = synthetic()
    fit = kernel_regression(f, 0.0, "mse")
    R = (targets(f.labels, 2, "onehot", torch.float64) - f.f0).reshape(-1)
    torch.testing.assert_close(fit.delta, torch.linalg.pinv(f.flat()) @ R)
    torch.testing.assert_close(f.f0 + f.J @ fit.delta, targets(f.labels, 2, "onehot",
                                                                 torch.float64))
    assert fit.train_loss < 1e-20


def test_ridge_matches_closed_form():
    f = synthetic()
    fit = kernel_regression(f, 0.1, "mse", mse_target="pm1")
    theta, N = f.gram(), f.N
    lam = 0.1 * float(theta.diagonal().mean()) / N
    R = (targets(f.labels, 2, "pm1", torch.float64) - f.f0).reshape(-1)
    alpha = torch.linalg.solve(theta + N * lam * torch.eye(12, dtype=torch.float64), R)
    torch.testing.assert_close(fit.delta, f.flat().T @ alpha)
    assert fit.lam_abs == pytest.approx(lam)


def test_kernel_logistic_satisfies_optimality():
    f = synthetic()
    fit = kernel_regression(f, 0.01, "ce")
    out = (f.f0 + f.J @ fit.delta)[:, :, None]
    _, E = loss_and_grad(out, f.labels, "ce")
    grad = f.flat().T @ E.reshape(-1) + fit.lam_abs * fit.delta
    assert float(grad.norm()) < 1e-8 * max(1.0, float(fit.delta.norm()))
    assert fit.iterations > 0
    with pytest.raises(LorankError, match="lam > 0"):
        kernel_regression(f, 0.0, "ce")


def test_select_kernel_prefers_best_dev_then_largest_lambda():
    train, dev = synthetic(seed=1), synthetic(seed=2)
    fit, by_lam = select_kernel(train, dev, (1.0, 0.1, 0.01), "ce")
    best = max(by_lam.values())
    assert fit.lam == max(lam for lam, v in by_lam.items() if v == best)


def test_svt_soft_thresholds_singular_values():
    gen = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=torch.float64))
    S = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    X = U[:, :5] @ torch.diag(S) @ V.T
    Y, rank = svt(X, 0.75)
    assert rank == 3
    torch.testing.assert_close(torch.linalg.svdvals(Y)[:3], S[:3] - 0.75)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_nuclear_solution_rank_within_sard_count(loss):
    f = synthetic(N=6, K=1, m=9, n=9, seed=3) if loss == "mse" else synthetic(N=4, K=2, m=9,
                                                                              n=9, seed=3)
    fit = nuclear_fit(f, 1e-3, loss=loss, steps=3000)
    assert fit.sard_min_rank == sard_min_rank(f.K, f.N)
    assert 1 <= fit.rank_total < fit.sard_min_rank and fit.within_sard
    assert fit.objective[-1] <= fit.objective[0]
    assert all(b <= a + 1e-9 for a, b in zip(fit.objective, fit.objective[1:], strict=False))


def test_large_penalty_gives_zero_update():
    f = synthetic()
    fit = nuclear_fit(f, 1e3, loss="ce", steps=50)
    assert fit.rank_total == 0 and float(fit.delta.abs().max()) == 0.0
    with pytest.raises(LorankError):
        nuclear_fit(f, 0.0)
