"""The factored engine (per-token Jacobian factors) trains exactly like the dense engine on J."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lorank.errors import LorankError
from lorank.linearized import LinearizedTraining, RunSpec, train_linearized
from lorank.linearized.factored import step_costs
from lorank.ntk import Block, Features
from lorank.ntk.jacobian import TokenFactors
from train_cases import RUNS, SETTINGS, case

torch.set_num_threads(1)
BLOCKS = [Block("a", 0, "query", 6, 5), Block("b", 1, "value", 4, 7)]


def factored(N=10, K=2, seed=0, tokens=3, blocks=BLOCKS, with_factors=True):
    """Features whose J is built from random per-token factors (tokens per example vary)."""
    gen = torch.Generator().manual_seed(seed)
    factors = {}
    for b in blocks:
        counts = torch.randint(1, 2 * tokens, (N,), generator=gen)
        ex = torch.repeat_interleave(torch.arange(N), counts)
        T = int(ex.numel())
        factors[b.name] = TokenFactors(ex, torch.randn(T, b.n, generator=gen, dtype=torch.float64),
                                       torch.randn(K, T, b.m, generator=gen, dtype=torch.float64))
    J = torch.cat([factors[b.name].dense(N).flatten(2) for b in blocks], dim=-1)
    f0 = 0.1 * torch.randn(N, K, generator=gen, dtype=torch.float64)
    y = torch.randint(0, K, (N,), generator=gen)
    return Features(J, f0, y, list(blocks), {}, factors if with_factors else None)


@pytest.mark.parametrize("cfg", SETTINGS)
@pytest.mark.parametrize("dev_factors", [True, False])
def test_factored_engine_equals_dense_engine(cfg, dev_factors):
    train = [factored(seed=0), factored(seed=1)]
    dev = [factored(seed=2, with_factors=dev_factors), factored(seed=3, with_factors=dev_factors)]
    (dense_settings, adapter), (fact_settings, _) = case(cfg, engine="dense"), case(
        cfg, engine="factored")
    dense = train_linearized(train, RUNS, dense_settings, dev, adapter=adapter)
    fact = train_linearized(train, RUNS, fact_settings, dev, adapter=adapter)
    assert (dense.engine, fact.engine) == ("dense", "factored")
    for c in range(len(RUNS)):
        torch.testing.assert_close(fact.final[c].delta(), dense.final[c].delta(),
                                   rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(fact.best[c].delta(), dense.best[c].delta(),
                                   rtol=1e-9, atol=1e-11)
        a, b = fact.trajectories[c], dense.trajectories[c]
        assert a.best_step == b.best_step and a.diverged_step == b.diverged_step
        for name in ("loss", "grad_norm2", "pl_ratio", "dev_metric"):
            torch.testing.assert_close(torch.tensor(getattr(a, name)),
                                       torch.tensor(getattr(b, name)), rtol=1e-9, atol=1e-12,
                                       equal_nan=True)


@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 6), K=st.integers(1, 4), m=st.integers(1, 5), n=st.integers(1, 5),
       r=st.integers(1, 4), tokens=st.integers(1, 4), seed=st.integers(0, 10**6),
       loss=st.sampled_from(["mse", "ce"]))
def test_one_step_matches_dense_for_any_shape(N, K, m, n, r, tokens, seed, loss):
    blocks = [Block("w", 0, "value", m, n)]
    feats = factored(N=N, K=K, seed=seed, tokens=tokens, blocks=blocks)
    runs = [RunSpec(r, seed % 97, 0.05), RunSpec(1, 1, 0.05)]
    kw = dict(steps=2, log_every=1, eval_every=1, loss=loss)
    a = train_linearized([feats], runs, LinearizedTraining(engine="factored", **kw))
    b = train_linearized([feats], runs, LinearizedTraining(engine="dense", **kw))
    for x, y in zip(a.final, b.final, strict=True):
        torch.testing.assert_close(x.delta(), y.delta(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("K", [2, 3, 5])
def test_contrast_basis_is_orthonormal_and_sum_free(K):
    from lorank.linearized.factored import contrast_basis

    U = contrast_basis(K)
    torch.testing.assert_close(U.T @ U, torch.eye(K - 1, dtype=torch.float64))
    torch.testing.assert_close(U.sum(0), torch.zeros(K - 1, dtype=torch.float64))
    e = torch.randn(7, K, dtype=torch.float64)
    e -= e.mean(1, keepdim=True)  # a cross-entropy gradient sums to zero over the logits
    torch.testing.assert_close(e @ U @ U.T, e)


def test_auto_engine_follows_the_cost_model():
    few = factored(tokens=1, blocks=[Block("w", 0, "query", 30, 30)])
    many = factored(tokens=400, blocks=[Block("w", 0, "query", 3, 3)])
    dense_cost, fact_cost = step_costs([few], {0: [1, 2]})
    assert fact_cost < dense_cost
    assert train_linearized([few], [RunSpec(1, 0, 0.1)], LinearizedTraining(steps=2)).engine \
        == "factored"
    assert train_linearized([many], [RunSpec(1, 0, 0.1)], LinearizedTraining(steps=2)).engine \
        == "dense"
    plain = factored(with_factors=False)
    assert step_costs([plain], {0: [1]})[1] == float("inf")
    assert train_linearized([plain], [RunSpec(1, 0, 0.1)], LinearizedTraining(steps=2)).engine \
        == "dense"


def test_bad_engine_requests():
    with pytest.raises(LorankError, match="engine must be one of"):
        LinearizedTraining(engine="gpu")
    with pytest.raises(LorankError, match="per-token factors"):
        train_linearized([factored(with_factors=False)], [RunSpec(1, 0, 0.1)],
                         LinearizedTraining(steps=2, engine="factored"))


@settings(max_examples=20, deadline=None)
@given(N=st.integers(1, 5), K=st.integers(1, 3), T=st.integers(0, 12), seed=st.integers(0, 999))
def test_dense_from_factors_equals_sum_of_outer_products(N, K, T, seed):
    """TokenFactors.dense: G_i[k] = Σ_{t: ex_t = i} δ_{k,t} x_tᵀ for any token order."""
    gen = torch.Generator().manual_seed(seed)
    ex = torch.randint(0, N, (T,), generator=gen)
    fac = TokenFactors(ex, torch.randn(T, 3, generator=gen, dtype=torch.float64),
                       torch.randn(K, T, 2, generator=gen, dtype=torch.float64))
    ref = torch.zeros(N, K, 2, 3, dtype=torch.float64)
    for t in range(T):
        for k in range(K):
            ref[ex[t], k] += torch.outer(fac.Delta[k, t], fac.X[t])
    torch.testing.assert_close(fac.dense(N), ref)
