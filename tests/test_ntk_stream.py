"""Streaming linearized predictions equal the materialised ones, at any chunk size."""

from __future__ import annotations

import pytest
import torch

from lorank.errors import LorankError
from lorank.ntk import compute_features, stream_linearized_logits

torch.set_num_threads(1)
TEXTS = ["the movie was great", "it was terrible", "a very boring story",
         "i love this film so much really", "bad", "good", "fun plot"]


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    from lorank.models import build_classifier, load_encoder
    from lorank.models.tiny import build_tiny_model

    folder = build_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert")
    return build_classifier(load_encoder(str(folder), dtype=torch.float64), "sst2")


@pytest.mark.parametrize("budget", [1e-3, 0.05, 100.0])
def test_stream_equals_materialised(clf, budget):
    inputs = clf.encode(TEXTS, max_length=16)
    feats = compute_features(clf, inputs, [0] * len(TEXTS), layers="all")
    D = torch.randn(feats.P, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    done = []
    f0, out = stream_linearized_logits(clf, inputs, feats.blocks, D, memory_budget_mb=budget,
                                       progress=done.append)
    torch.testing.assert_close(f0, feats.f0)
    torch.testing.assert_close(out, feats.f0[:, :, None] + feats.J @ D)
    assert done[-1] == len(TEXTS) and done == sorted(done)
    _, single = stream_linearized_logits(clf, inputs, feats.blocks, D[:, 2])
    torch.testing.assert_close(single, out[:, :, 2])


def test_stream_rejects_wrong_shape(clf):
    inputs = clf.encode(TEXTS[:2], max_length=16)
    feats = compute_features(clf, inputs, [0, 1], layers="last")
    with pytest.raises(LorankError, match="rows"):
        stream_linearized_logits(clf, inputs, feats.blocks, torch.zeros(feats.P + 1, 2))


@pytest.mark.parametrize(("layers", "predictor"), [("all", "jvp"), ("last", "jvp"),
                                                   ("last", "auto"), ("all", "stream")])
def test_jvp_predictor_equals_materialised(clf, layers, predictor):
    from lorank.ntk.stream import predict_linearized

    inputs = clf.encode(TEXTS, max_length=16)
    feats = compute_features(clf, inputs, [0] * len(TEXTS), layers=layers)
    D = torch.randn(feats.P, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f0, out = predict_linearized(clf, inputs, feats.blocks, D, predictor=predictor)
    torch.testing.assert_close(f0, feats.f0)
    torch.testing.assert_close(out, feats.f0[:, :, None] + feats.J @ D)


def test_auto_predictor_choice(clf, monkeypatch):
    from lorank.ntk import stream
    from lorank.ntk.stream import predict_linearized, prefers_jvp

    assert not prefers_jvp(1, 2) and not prefers_jvp(1, 2, "outer")
    assert prefers_jvp(4, 2, "vmap_jacrev_truncated") and not prefers_jvp(5, 2, "vmap_jacrev")
    inputs = clf.encode(TEXTS[:3], max_length=16)
    feats = compute_features(clf, inputs, [0] * 3, layers="last")
    used = []
    for name in ("jvp_linearized_logits", "stream_linearized_logits"):
        real = getattr(stream, name)
        monkeypatch.setattr(stream, name, lambda *a, _r=real, _n=name, **k: (
            used.append(_n.split("_")[0]), _r(*a, **k))[1])
    D = torch.zeros(feats.P, 1, dtype=torch.float64)
    predict_linearized(clf, inputs, feats.blocks, D)
    predict_linearized(clf, inputs, feats.blocks, D, method="vmap_jacrev_truncated")
    assert used == ["stream", "jvp"]


def test_unknown_predictor(clf):
    from lorank.ntk.stream import predict_linearized

    inputs = clf.encode(TEXTS[:2], max_length=16)
    feats = compute_features(clf, inputs, [0, 1], layers="last")
    with pytest.raises(LorankError, match="predictor must be one of"):
        predict_linearized(clf, inputs, feats.blocks, torch.zeros(feats.P), predictor="magic")
