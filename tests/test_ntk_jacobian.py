"""Jacobian features: every fast method equals the per-example autograd reference (float64),
truncation equals full backprop, chunking does not change numbers, and the linearization is
first-order exact: f(W0 + ΔW) − f_lin(ΔW) = O(‖ΔW‖²)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.func import functional_call

from lorank.errors import LorankError
from lorank.linearized.model import linearized_logits
from lorank.ntk import (
    Features,
    JacobianMethod,
    chunk_size_for_budget,
    compute_features,
)

torch.set_num_threads(1)
TEXTS = ["the movie was great", "it was terrible", "a very boring story",
         "i love this film so much really", "bad"]
LABELS = [1, 0, 0, 1, 0]


@pytest.fixture(scope="module", params=["bert", "roberta"])
def clf(request, tmp_path_factory):
    from lorank.models import build_classifier, load_encoder
    from lorank.models.tiny import build_tiny_model

    folder = build_tiny_model(request.param, tmp_path_factory.mktemp("tiny") / request.param)
    enc = load_encoder(str(folder), dtype=torch.float64)
    return build_classifier(enc, "sst2", "verbalizer")


@pytest.fixture(scope="module")
def inputs(clf):
    return clf.encode(TEXTS, max_length=16)


@pytest.mark.parametrize("layers", ["all", "last", [1]])
@pytest.mark.parametrize("method", ["vmap_jacrev", "vmap_jacrev_truncated", "outer", "auto"])
def test_fast_methods_match_autograd_reference(clf, inputs, layers, method):
    ref = compute_features(clf, inputs, LABELS, targets=("query", "value"), layers=layers,
                           method=JacobianMethod.AUTOGRAD_LOOP)
    fast = compute_features(clf, inputs, LABELS, targets=("query", "value"), layers=layers,
                            method=method)
    assert fast.J.shape == (5, 2, ref.P)
    assert ref.J.abs().max() > 0
    torch.testing.assert_close(fast.J, ref.J, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast.f0, ref.f0, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(ref.f0, clf(inputs))


def test_truncated_equals_full_backprop_for_upper_layers(clf, inputs):
    full = compute_features(clf, inputs, LABELS, layers="last", method="vmap_jacrev")
    trunc = compute_features(clf, inputs, LABELS, layers="last", method="vmap_jacrev_truncated")
    assert trunc.meta["method"] == "vmap_jacrev_truncated"
    torch.testing.assert_close(trunc.J, full.J, rtol=1e-10, atol=1e-12)


def test_chunk_size_does_not_change_features(clf, inputs):
    big = compute_features(clf, inputs, LABELS, memory_budget_mb=512)
    tiny = compute_features(clf, inputs, LABELS, memory_budget_mb=1e-3)
    assert tiny.meta["chunk_size"] == 1 and big.meta["chunk_size"] >= 5
    torch.testing.assert_close(tiny.J, big.J, rtol=1e-12, atol=1e-13)


def test_outer_factors_rebuild_j_and_drop_zero_tokens(clf, inputs):
    """G_i = Σ_t δ_t x_tᵀ over the kept tokens; padding tokens (exactly zero δ) are dropped."""
    feats = compute_features(clf, inputs, LABELS, layers="all", memory_budget_mb=1e-3)
    assert feats.meta["method"] == "outer" and feats.meta["chunk_size"] == 1
    real = int(inputs["attention_mask"].sum())
    for b in feats.blocks:
        fac = feats.factors[b.name]
        torch.testing.assert_close(fac.dense(5), feats.G[b.name], rtol=1e-10, atol=1e-12)
        assert real >= fac.T and fac.ex.tolist() == sorted(fac.ex.tolist())
        assert fac.Delta.abs().sum(dim=(0, 2)).min() > 0
        per_example = torch.bincount(fac.ex, minlength=5)
        assert (per_example <= inputs["attention_mask"].sum(1)).all()
    assert inputs["attention_mask"].min() == 0  # padding is exercised
    half = feats.to(torch.float32)
    assert all(f.X.dtype == torch.float32 for f in half.factors.values())


def test_float32_close_to_float64(clf, inputs):
    f64 = compute_features(clf, inputs, LABELS)
    clf32 = clf.to(torch.float32)
    try:
        f32 = compute_features(clf32, inputs, LABELS)
    finally:
        clf.to(torch.float64)
    assert f32.J.dtype == torch.float32
    torch.testing.assert_close(f32.J.double(), f64.J, rtol=1e-3, atol=1e-4)


def _merged_logits(clf, inputs, features, delta):
    params = {b.name: p.detach() + d for b, p, d in zip(
        features.blocks, [dict(clf.named_parameters())[b.name] for b in features.blocks],
        _split(delta, features), strict=True)}
    with torch.no_grad():
        return functional_call(clf, params, (inputs,))


def _split(delta, features):
    return [delta[lo:hi].reshape(b.m, b.n) for b, (lo, hi) in zip(
        features.blocks, features.offsets(), strict=True)]


def test_linearization_is_second_order_accurate(clf, inputs):
    feats = compute_features(clf, inputs, LABELS, layers="all")
    torch.testing.assert_close(linearized_logits(feats, torch.zeros(feats.P,
                                                                    dtype=torch.float64)),
                               feats.f0)
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(feats.P, generator=gen, dtype=torch.float64)
    direction *= 0.5 / direction.norm()
    errors = []
    for eps in (1.0, 0.5, 0.25, 0.125):
        delta = eps * direction
        exact = _merged_logits(clf, inputs, feats, delta)
        errors.append(float((exact - linearized_logits(feats, delta)).abs().max()))
    ratios = [a / b for a, b in itertools.pairwise(errors)]
    assert all(3.3 < r < 4.7 for r in ratios[1:]), (errors, ratios)


def test_gram_is_j_jt_and_psd(clf, inputs):
    feats = compute_features(clf, inputs, LABELS, layers="all")
    theta = feats.gram()
    assert theta.shape == (10, 10) and theta.dtype == torch.float64
    manual = sum(torch.einsum("ikmn,jlmn->ikjl", G, G) for G in feats.G.values())
    torch.testing.assert_close(theta, manual.reshape(10, 10).double())
    assert torch.linalg.eigvalsh(theta).min() > -1e-10


def test_features_metadata_and_views(clf, inputs):
    feats = compute_features(clf, inputs, LABELS, targets=("q", "v"), layers="last",
                             meta={"task": "SST-2"})
    assert feats.meta["task"] == "SST-2" and feats.meta["dtype"] == "float64"
    assert [b.target for b in feats.blocks] == ["query", "value"]
    assert all(G.shape == (5, 2, 32, 32) for G in feats.G.values())
    assert feats.labels.tolist() == LABELS


def test_bad_inputs_raise_lorank_error(clf, inputs):
    with pytest.raises(LorankError, match="unknown Jacobian method"):
        compute_features(clf, inputs, LABELS, method="magic")
    with pytest.raises(LorankError, match="labels"):
        compute_features(clf, inputs, LABELS[:3])
    with pytest.raises(LorankError, match="memory budget"):
        compute_features(clf, inputs, LABELS, memory_budget_mb=0)
    with pytest.raises(LorankError, match="do not match"):
        Features(torch.zeros(2, 2, 3), torch.zeros(3, 2), torch.zeros(2), [])


@given(K=st.integers(1, 5), P=st.integers(1, 10**7), mb=st.floats(0.01, 1e5))
def test_chunk_size_fits_budget(K, P, mb):
    b = chunk_size_for_budget(K, P, 4, mb, overhead=2.0)
    assert b >= 1
    assert b == 1 or b * K * P * 4 * 2.0 <= mb * 2**20
    assert chunk_size_for_budget(K, P, 4, 2 * mb, overhead=2.0) >= b
