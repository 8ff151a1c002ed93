"""Layer-by-layer forward, lower/upper truncation and vmap(jacrev) on tiny random encoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev, vmap

from lorank.data.dataset import Split
from lorank.data.tasks import get_task
from lorank.models import build_classifier, load_encoder
from lorank.models.backbone import Backbone, additive_mask
from lorank.models.tiny import TINY_ARCHS, build_tiny_model

torch.set_num_threads(1)

SINGLE = Split("train", ["the movie was great", "a bad film", "i love this story",
                         "boring plot and the actor was bad"], None, [1, 0, 1, 0])
PAIRS = Split("train", ["is it good ?", "was the dog there ?", "is she a woman ?", "is it fun ?"],
              ["it was good", "no cat", "the man sat on the dog", "very fun"], [0, 1, 1, 0])
CASES = [("verbalizer", "sst2"), ("verbalizer", "qnli"), ("prompt", "sst2"), ("prompt", "rte"),
         ("probe", "sst2"), ("probe", "qnli"), ("pair", "mrpc")]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    return {a: str(build_tiny_model(a, root / a)) for a in TINY_ARCHS}


def _classifier(path: str, head: str, task: str, dtype: torch.dtype = torch.float32):
    spec = get_task(task)
    data = PAIRS if spec.is_pair else SINGLE
    clf = build_classifier(load_encoder(path, dtype=dtype), spec, head, train=data, dev=data)
    return clf, data


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_layer_by_layer_equals_hf_forward(tiny_dirs: dict[str, str], arch: str) -> None:
    enc = load_encoder(tiny_dirs[arch])
    x = enc.tokenizer(["the movie was great", "a dog sat on the cat and it was very boring"],
                      ["yes", "no not"], padding=True, return_tensors="pt")
    ref = enc.model(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
    bb = Backbone(enc.model)
    h = bb.embed(x["input_ids"], x["attention_mask"])
    h = bb.run(h, x["attention_mask"], 0, bb.num_layers)
    assert x["attention_mask"].min() == 0  # padding is exercised
    torch.testing.assert_close(h, ref.last_hidden_state, atol=1e-5, rtol=0)


def test_additive_mask_values() -> None:
    m = additive_mask(torch.tensor([[1, 1, 0]]), torch.float32)
    assert m.shape == (1, 1, 1, 3)
    assert m[0, 0, 0, :2].abs().max() == 0 and m[0, 0, 0, 2] == torch.finfo(torch.float32).min


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize(("head", "task"), CASES)
def test_upper_of_lower_equals_forward(tiny_dirs: dict[str, str], arch: str, head: str,
                                       task: str) -> None:
    clf, data = _classifier(tiny_dirs[arch], head, task)
    x = clf.encode(data)
    assert all(v.shape[0] == len(data) for v in x.values())
    f = clf(x)
    assert f.shape == (len(data), clf.K) and torch.isfinite(f).all()
    for s in range(clf.num_layers + 1):
        torch.testing.assert_close(clf.upper(clf.lower(x, s), s), f, atol=1e-5, rtol=0)
    assert not clf.lower(x, 1)[next(k for k in clf.lower(x, 1) if k.endswith("hidden"))] \
        .requires_grad
    assert np.allclose(clf.logits(data, batch_size=3), f.detach().double().numpy(), atol=1e-5)


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize(("head", "task"), CASES)
def test_vmap_jacrev_equals_autograd_loop(tiny_dirs: dict[str, str], arch: str, head: str,
                                          task: str) -> None:
    clf, data = _classifier(tiny_dirs[arch], head, task, dtype=torch.float64)
    x = {k: v[:3] for k, v in clf.encode(data).items()}
    params = {k: v.detach() for k, v in clf.adapted_parameters(layers="all").items()}

    def f(p: dict, xi: dict) -> torch.Tensor:
        return functional_call(clf, p, ({k: v.unsqueeze(0) for k, v in xi.items()},))[0]

    J = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    total = 0.0
    for i in range(3):
        p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        out = functional_call(clf, p, ({k: v[i:i + 1] for k, v in x.items()},))[0]
        for k in range(clf.K):
            grads = torch.autograd.grad(out[k], list(p.values()), retain_graph=True)
            for name, g in zip(p, grads, strict=True):
                torch.testing.assert_close(J[name][i, k], g, atol=1e-10, rtol=1e-7)
                total += float(g.abs().sum())
    assert total > 0  # the Jacobian is not trivially zero


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize(("head", "task"), CASES)
def test_outer_method_equals_autograd_loop(tiny_dirs: dict[str, str], arch: str, head: str,
                                           task: str) -> None:
    """Per-token outer products (OUTER, via ``auto``) give the reference Jacobians for every
    architecture × head; where they cannot (DeBERTa-v2 projects shared relative-position
    embeddings with query_proj) ``auto`` falls back and ``outer`` refuses."""
    from lorank.errors import LorankError
    from lorank.ntk import compute_features

    clf, data = _classifier(tiny_dirs[arch], head, task, dtype=torch.float64)
    x = {k: v[:3] for k, v in clf.encode(data).items()}
    labels = data.labels[:3]
    ref = compute_features(clf, x, labels, layers="all", method="autograd_loop")
    fast = compute_features(clf, x, labels, layers="all", method="auto")
    torch.testing.assert_close(fast.J, ref.J, atol=1e-10, rtol=1e-7)
    torch.testing.assert_close(fast.f0, ref.f0, atol=1e-12, rtol=1e-12)
    assert fast.meta["method"] == "outer" and fast.factors is not None
    for b in fast.blocks:
        torch.testing.assert_close(fast.factors[b.name].dense(3), fast.G[b.name],
                                   atol=1e-12, rtol=1e-10)
    if arch == "deberta-v2":  # DeBERTa-v3 checkpoints share query_proj with the positions
        for layer in clf.model.encoder.layer:
            layer.attention.self.share_att_key = True
        ref = compute_features(clf, x, labels, layers="all", method="autograd_loop")
        fast = compute_features(clf, x, labels, layers="all", method="auto")
        assert fast.meta["method"] == "vmap_jacrev_truncated" and fast.factors is None
        torch.testing.assert_close(fast.J, ref.J, atol=1e-10, rtol=1e-7)
        with pytest.raises(LorankError, match="relative-position"):
            compute_features(clf, x, labels, layers="all", method="outer")


def test_head_weights_frozen_and_base_trainable(tiny_dirs: dict[str, str]) -> None:
    for head, task in CASES:
        clf, _ = _classifier(tiny_dirs["roberta"], head, task)
        head_params = [n for n, p in clf.named_parameters() if not n.startswith("model.")]
        assert all(not p.requires_grad for n, p in clf.named_parameters() if n in head_params)
        assert not clf.training


def test_adapted_parameters_names_and_shapes(tiny_dirs: dict[str, str]) -> None:
    clf, _ = _classifier(tiny_dirs["mpnet"], "verbalizer", "sst2")
    params = clf.adapted_parameters(("query", "value"), "last")
    assert list(params) == ["model.encoder.layer.1.attention.attn.q.weight",
                            "model.encoder.layer.1.attention.attn.v.weight"]
    mats = clf.adapted_matrices(("query", "value"), "last")
    for m, (name, p) in zip(mats, params.items(), strict=True):
        assert clf.param_name(m) == name and tuple(p.shape) == m.shape
    deb, _ = _classifier(tiny_dirs["deberta-v2"], "verbalizer", "sst2")
    mats = deb.adapted_matrices(("intermediate.dense",), [0])
    assert [tuple(p.shape) for p in deb.adapted_parameters(("intermediate.dense",), [0])
            .values()] == [(37, 32)] == [m.shape for m in mats]


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_padding_does_not_change_logits(tiny_dirs: dict[str, str], arch: str) -> None:
    for head, task in (("verbalizer", "sst2"), ("pair", "mrpc"), ("prompt", "sst2")):
        clf, data = _classifier(tiny_dirs[arch], head, task)
        batch = clf(clf.encode(data))
        for i in range(len(data)):
            alone = clf(clf.encode(data.subset([i])))
            torch.testing.assert_close(alone[0], batch[i], atol=1e-5, rtol=1e-5)
