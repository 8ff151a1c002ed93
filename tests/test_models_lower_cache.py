"""Reuse of frozen lower states (:mod:`lorank.models.lower_cache`): same numbers, real hits."""

from __future__ import annotations

import pytest
import torch

from lorank.data.dataset import Split
from lorank.models import build_classifier, load_encoder
from lorank.models.lower_cache import (
    CACHE,
    LowerCache,
    inputs_fingerprint,
    reuse_lower_states,
    weights_fingerprint,
)
from lorank.ntk import compute_features
from lorank.ntk.stream import predict_linearized

torch.set_num_threads(1)
A = ["a man plays", "it rains", "cats sleep", "go home"]
B = ["someone plays", "the sun shines", "a cat is asleep", "stay here"]


@pytest.fixture(scope="module")
def encoder(tiny):
    return load_encoder(tiny, dtype=torch.float64)


@pytest.fixture(autouse=True)
def fresh_cache():
    CACHE.clear()
    yield
    CACHE.clear()


def _pair_clf(encoder, labels):
    return build_classifier(encoder, "rte", "pair", train=Split("train", A, B, labels))


def test_lower_is_reused_across_classifiers_with_identical_predictions(encoder):
    clf = build_classifier(encoder, "sst2")
    texts = ["a fine film", "dull", "i liked it a lot", "never again"]
    inputs = clf.encode(texts, max_length=16)
    feats = compute_features(clf, inputs, [0, 1, 0, 1], layers="last")
    D = torch.randn(feats.P, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _, plain = predict_linearized(clf, inputs, feats.blocks, D)
    assert CACHE.hits == CACHE.misses == 0  # outside a block nothing is cached
    other = build_classifier(encoder, "sst2")  # a second classifier on the same encoder
    with reuse_lower_states() as cache:
        _, first = predict_linearized(clf, inputs, feats.blocks, D)
        misses = cache.misses
        _, second = predict_linearized(other, inputs, feats.blocks, D)
    assert misses > 0 and cache.hits == misses and cache.misses == misses
    torch.testing.assert_close(first, plain, rtol=0, atol=0)
    torch.testing.assert_close(second, plain, rtol=0, atol=0)
    with reuse_lower_states():  # a later block (e.g. the next seed group) hits as well
        predict_linearized(clf, inputs, feats.blocks, D, predictor="jvp")
    assert cache.hits == 2 * misses


def test_changed_weights_are_never_served_a_stale_state(encoder, tiny):
    enc = load_encoder(tiny, dtype=torch.float64)
    clf = build_classifier(enc, "sst2")
    inputs = clf.encode(["a fine film", "dull"], max_length=16)
    with reuse_lower_states():
        before = clf.lower(inputs, 1)["hidden"].clone()
    with torch.no_grad():
        next(enc.model.parameters()).add_(0.5)
    with reuse_lower_states() as cache:
        after = clf.lower(inputs, 1)["hidden"]
        assert cache.hits == 0
    with torch.no_grad():
        expected = clf.run_layers(clf.embed(inputs), 0, 1)["hidden"]
    torch.testing.assert_close(after, expected)
    assert not torch.equal(after, before)


def test_pair_head_towers_and_returned_dict_is_fresh(encoder):
    clf_a = _pair_clf(encoder, [1, 0, 1, 0])
    clf_b = _pair_clf(encoder, [0, 0, 1, 1])
    inputs = clf_a.encode(list(zip(A, B, strict=True)), max_length=16)
    with reuse_lower_states() as cache:
        s1 = clf_a.lower(inputs, 1)
        s1["junk"] = torch.zeros(1)
        s2 = clf_b.lower(inputs, 1)
    assert cache.hits == 1 and "junk" not in s2
    assert {"a_hidden", "b_hidden"} <= set(s2)
    torch.testing.assert_close(clf_a.upper(s2, 1), clf_a(inputs))


def test_lru_stays_within_its_budget_and_fingerprints():
    cache = LowerCache(max_mb=1)
    big = {"hidden": torch.zeros(100_000, dtype=torch.float32)}  # 0.38 MB
    for i in range(5):
        cache.put((i,), dict(big))
    assert cache.nbytes <= cache.max_bytes and list(cache.entries) == [(3,), (4,)]
    assert cache.get((0,)) is None and cache.get((4,)) is not None
    cache.put(("huge",), {"hidden": torch.zeros(1_000_000)})  # over budget: not stored
    assert ("huge",) not in cache.entries
    with pytest.raises(ValueError):
        cache.resize(-1)
    a = {"input_ids": torch.tensor([[1, 2]]), "mask_position": 3}
    assert inputs_fingerprint(a) == inputs_fingerprint(dict(a))
    assert inputs_fingerprint(a) != inputs_fingerprint({**a, "input_ids": torch.tensor([[1, 3]])})
    lin = torch.nn.Linear(2, 2)
    fp = weights_fingerprint(lin)
    with torch.no_grad():
        lin.bias.add_(1)
    assert weights_fingerprint(lin) != fp
