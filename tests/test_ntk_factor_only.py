"""Features too big to hold J keep only the per-token factors; every consumer on the sweep path
(J @ D, Jᵀ E, the Gram, the kernel step, kernel baselines, training) gives the dense answers."""

from __future__ import annotations

import pytest
import torch

from lorank.linearized import LinearizedTraining, RunSpec, train_linearized
from lorank.linearized.kernel import select_kernel
from lorank.linearized.step_size import full_kernel_step
from lorank.ntk import compute_features, load_features, save_features
from lorank.ntk import features as features_mod

torch.set_num_threads(1)
TEXTS = ["the movie was great", "it was terrible", "a very boring story",
         "i love this film so much really", "bad", "fine but long", "superb acting",
         "dull and slow"]
LABELS = [1, 0, 0, 1, 0, 1, 1, 0]


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    from lorank.models import build_classifier, load_encoder
    from lorank.models.tiny import build_tiny_model

    folder = build_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert")
    return build_classifier(load_encoder(str(folder), dtype=torch.float64), "sst2",
                            "verbalizer")


def _pair(clf, monkeypatch, texts=TEXTS, labels=LABELS):
    """(dense, factor-only) features of the same examples: the limit set to 0 drops J."""
    inputs = clf.encode(list(texts), max_length=16)
    kw = {"targets": ("query", "value"), "layers": "all", "method": "outer"}
    dense = compute_features(clf, inputs, labels, **kw)
    monkeypatch.setattr(features_mod, "DENSE_J_MAX_MB", 0.0)
    monkeypatch.setattr(features_mod, "SLICE_MB", 1e-3)  # several slices per block
    only = compute_features(clf, inputs, labels, **kw)
    return dense, only


def test_only_factors_are_held_above_the_limit_and_j_is_rebuilt_on_demand(clf, monkeypatch):
    dense, only = _pair(clf, monkeypatch)
    assert dense.stored_J is not None and only.stored_J is None and only.factors
    assert (only.N, only.K, only.P) == (dense.N, dense.K, dense.P)
    slices = list(only.column_slices())
    assert len(slices) > len(only.blocks)
    assert [s[0] for s in slices] == sorted(s[0] for s in slices) and slices[-1][1] == only.P
    torch.testing.assert_close(only.J, dense.J)  # built from the factors, then kept
    assert only.stored_J is not None


def test_apply_apply_t_and_gram_equal_dense_products(clf, monkeypatch):
    dense, only = _pair(clf, monkeypatch)
    gen = torch.Generator().manual_seed(0)
    D = torch.randn(dense.P, 3, generator=gen, dtype=torch.float64)
    E = torch.randn(dense.N, dense.K, 3, generator=gen, dtype=torch.float64)
    J = dense.J
    torch.testing.assert_close(only.apply(D), J @ D)
    torch.testing.assert_close(only.apply(D[:, 0]), J @ D[:, 0])
    torch.testing.assert_close(only.apply_T(E), dense.flat().T @ E.reshape(-1, 3))
    torch.testing.assert_close(only.apply_T(E[..., 0]), dense.flat().T @ E[..., 0].reshape(-1))
    torch.testing.assert_close(only.gram(), dense.flat() @ dense.flat().T)
    assert only.stored_J is None  # none of these built the dense J


def test_kernel_step_and_kernel_baseline_match_the_dense_path(clf, monkeypatch):
    dense, only = _pair(clf, monkeypatch)
    for loss in ("ce", "mse"):
        assert full_kernel_step(only, loss) == pytest.approx(full_kernel_step(dense, loss),
                                                             rel=1e-9)
    fit_d, curve_d = select_kernel(dense, dense, loss="ce")
    fit_o, curve_o = select_kernel(only, only, loss="ce")
    assert fit_o.lam == fit_d.lam and curve_o == pytest.approx(curve_d)
    torch.testing.assert_close(fit_o.delta, fit_d.delta, rtol=1e-7, atol=1e-10)
    assert only.stored_J is None


def test_training_on_factor_only_features_equals_the_dense_engine(clf, monkeypatch):
    dense, only = _pair(clf, monkeypatch)
    runs = [RunSpec(r, 0, lr, 0) for r in (1, 2) for lr in (0.1, 1.0)]
    settings = LinearizedTraining(steps=10, eval_every=5)
    ref = train_linearized([dense], runs, LinearizedTraining(steps=10, eval_every=5,
                                                             engine="dense"), [dense])
    got = train_linearized([only], runs, settings, [only])
    assert got.engine == "factored" and only.stored_J is None
    for c in range(len(runs)):
        torch.testing.assert_close(got.best[c].delta(), ref.best[c].delta(), rtol=1e-8,
                                   atol=1e-11)
        assert got.trajectories[c].best_step == ref.trajectories[c].best_step


def test_cache_round_trip_keeps_large_features_factor_only(clf, monkeypatch, tmp_path):
    dense, only = _pair(clf, monkeypatch)
    path = save_features(tmp_path / "f.safetensors", only, {"k": 1})
    back = load_features(path, {"k": 1})
    assert back.stored_J is None
    torch.testing.assert_close(back.gram(), dense.flat() @ dense.flat().T)
    monkeypatch.setattr(features_mod, "DENSE_J_MAX_MB", 4096.0)
    small = load_features(path, {"k": 1})
    assert small.stored_J is not None  # under the limit: J rebuilt on load, as computed
    torch.testing.assert_close(small.J, dense.J)


def test_subset_and_to_keep_features_factor_only(clf, monkeypatch):
    dense, only = _pair(clf, monkeypatch)
    sub = only.subset([3, 0, 5]).to(torch.float32)
    assert sub.stored_J is None and sub.N == 3
    torch.testing.assert_close(sub.J, dense.J[[3, 0, 5]].float())


def test_methods_without_factors_still_hold_j(clf, monkeypatch):
    monkeypatch.setattr(features_mod, "DENSE_J_MAX_MB", 0.0)
    inputs = clf.encode(TEXTS[:3], max_length=16)
    f = compute_features(clf, inputs, LABELS[:3], targets=("query",), layers="last",
                         method="vmap_jacrev")
    assert f.stored_J is not None and f.factors is None


def test_features_need_j_or_factors():
    from lorank.errors import LorankError
    from lorank.ntk import Block, Features

    with pytest.raises(LorankError, match="neither J nor per-token factors"):
        Features(None, torch.zeros(2, 2), torch.zeros(2), [Block("a", 0, "query", 2, 2)])


def test_dense_engine_is_refused_when_j_is_not_held(clf, monkeypatch):
    from lorank.errors import LorankError

    dense, only = _pair(clf, monkeypatch)
    runs = [RunSpec(1, 0, 0.1, 0)]
    with pytest.raises(LorankError, match="engine 'dense' needs the Jacobians"):
        train_linearized([dense], runs, LinearizedTraining(steps=2, engine="dense"), [only])
    got = train_linearized([dense], runs, LinearizedTraining(steps=2, eval_every=1), [only])
    assert got.engine == "factored" and only.stored_J is None  # dev factor-only: factored
