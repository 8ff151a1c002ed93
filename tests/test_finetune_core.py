"""Real LoRA through peft on tiny offline encoders: invariants, training, selection, errors."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lorank.data import Split, get_task
from lorank.errors import LorankError
from lorank.finetune.adapter import attach_lora, load_adapter, peft_targets
from lorank.finetune.config import LoraTraining
from lorank.finetune.inputs import predict, prepare_split
from lorank.finetune.metrics import delta_stats
from lorank.finetune.run import finetune, prepare_data
from lorank.finetune.train import fit
from lorank.models import build_classifier, load_encoder
from lorank.models.arch import ARCHITECTURES
from lorank.models.lora_shape import AdapterConfig
from lorank.models.tiny import build_tiny_model

torch.set_num_threads(1)

WORDS = ("the", "movie", "was", "great", "good", "bad", "terrible", "fun", "boring", "love",
         "hate", "story", "plot", "actor", "very")
POSITIVE = {"great", "good", "fun", "love"}


def make_split(name: str, n: int, seed: int, pair: bool = False) -> Split:
    rng = random.Random(seed)
    a = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(n)]
    y = [int(any(w in POSITIVE for w in t.split())) for t in a]
    b = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))) for _ in range(n)]
    return Split(name, tuple(a), tuple(b) if pair else None, y)


class Data:
    """The few fields of lorank.data.FewShotData that finetune() reads."""

    def __init__(self, n: int = 16, pair: bool = False) -> None:
        self.train = make_split("train", n, 0, pair)
        self.dev = make_split("dev", n, 1, pair)
        self.test = make_split("test", 24, 2, pair)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_model("bert", tmp_path_factory.mktemp("m") / "tiny-bert")


def classifier(path, dtype=torch.float32, head="verbalizer", task="sst2", data=None):
    enc = load_encoder(str(path), dtype=dtype)
    if head in ("probe", "pair"):
        return build_classifier(enc, get_task(task), head=head, train=data.train, dev=data.dev)
    return build_classifier(enc, get_task(task), head=head)


@pytest.fixture(scope="module")
def data():
    return Data()


# ---------------------------------------------------------------- invariants of the adapter


@pytest.mark.parametrize("arch", ["bert", "roberta", "deberta-v2", "electra", "mpnet"])
def test_b_zero_reproduces_base_and_merge_is_exact(arch, tmp_path):
    path = build_tiny_model(arch, tmp_path / arch)
    clf = classifier(path)
    x = clf.encode(make_split("t", 6, 3))
    with torch.no_grad():
        base = clf(x)
    adapter = attach_lora(clf, AdapterConfig(ranks=(2,), layers="all"), seed=1)
    assert len(adapter.matrices) == 2 * clf.num_layers
    with torch.no_grad():
        assert torch.equal(clf(x), base)  # B = 0: ΔW = 0 exactly
        for p in adapter.parameters().values():
            if ".lora_B." in "".join(n for n, q in adapter.parameters().items() if q is p):
                p.normal_(0, 0.3)
        adapted = clf(x)
        assert (adapted - base).abs().max() > 1e-3  # the adapter now changes the logits
        with adapter.merged():
            merged = clf(x)
        assert torch.allclose(merged, adapted, atol=1e-5)
        assert torch.allclose(clf(x), adapted, atol=1e-6)  # unmerge restores W0
    adapter.detach()
    with torch.no_grad():
        assert torch.equal(clf(x), base)


def test_delta_weight_is_s_times_BA(tiny_path):
    clf = classifier(tiny_path)
    lora = AdapterConfig(ranks=(3,), alpha=6.0, scaling="rslora", layers="last", targets=("query",))
    adapter = attach_lora(clf, lora, seed=0)
    (mat,) = adapter.matrices
    mod = adapter.module(mat)
    with torch.no_grad():
        mod.lora_B["default"].weight.normal_()
    B, A = mod.lora_B["default"].weight, mod.lora_A["default"].weight
    torch.testing.assert_close(adapter.delta_weights()[mat.path],
                               (6.0 / math.sqrt(3) * B @ A).detach(), rtol=1e-5, atol=1e-5)
    assert adapter.num_parameters() == 3 * (32 + 32)


def test_lora_params_only_are_trainable(tiny_path):
    clf = classifier(tiny_path)
    adapter = attach_lora(clf, AdapterConfig(ranks=(1,), layers="last"))
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert trainable == set(adapter.parameters())
    assert len(trainable) == 4


def test_gaussian_init_statistics(tiny_path):
    clf = classifier(tiny_path)
    adapter = attach_lora(clf, AdapterConfig(ranks=(4,), init="gaussian", layers="all"),
                          seed=0)
    params = {n: p.detach() for n, p in adapter.parameters().items()}
    A = torch.cat([p.flatten() for n, p in params.items() if ".lora_A." in n])
    B = torch.cat([p.flatten() for n, p in params.items() if ".lora_B." in n])
    assert torch.count_nonzero(B) == 0
    # peft "gaussian": A ~ N(0, (1/r)^2); 512 draws: std within 10 %
    assert abs(float(A.std()) - 0.25) < 0.025 and abs(float(A.mean())) < 0.03


# ---------------------------------------------------------------- peft target selection


def test_peft_targets_readable_and_exact():
    bert = ARCHITECTURES["bert"]
    assert peft_targets(bert, ["query", "value"], [5], 6) == {
        "target_modules": ["attention.self.query", "attention.self.value"],
        "layers_to_transform": [5], "layers_pattern": "layer"}
    assert peft_targets(bert, ["query"], list(range(6)), 6) == {
        "target_modules": ["attention.self.query"]}
    # output.dense is a suffix of attention.output.dense: exact paths instead
    assert peft_targets(bert, ["output.dense"], [0, 1], 2) == {
        "target_modules": ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]}


def test_ambiguous_target_adapts_exactly_the_selected_matrices(tiny_path):
    clf = classifier(tiny_path)
    adapter = attach_lora(clf, AdapterConfig(ranks=(1,), targets=("output.dense",), layers="last"))
    assert [m.path for m in adapter.matrices] == ["encoder.layer.1.output.dense"]
    assert adapter.matrices[0].shape == (32, 37)


def test_mpnet_query_alias(tmp_path):
    clf = classifier(build_tiny_model("mpnet", tmp_path / "mp"))
    adapter = attach_lora(clf, AdapterConfig(ranks=(1,), targets=("query", "value"), layers="last"))
    assert [m.path for m in adapter.matrices] == ["encoder.layer.1.attention.attn.q",
                                                  "encoder.layer.1.attention.attn.v"]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, message", [
    ({"ranks": (0,)}, "ranks must be positive integers"),
    ({"ranks": (-2,)}, "ranks must be positive integers"),
    ({"ranks": (1.5,)}, "ranks must be positive integers"),
    ({"ranks": ()}, "ranks must be positive integers"),
    ({"ranks": (2, 2)}, "ranks must be distinct"),
    ({"alpha": 0.0}, "alpha must be > 0"),
    ({"init": "orthogonal"}, "init must be one of fan_in, gaussian, kaiming"),
    ({"dropout": 1.0}, "dropout must be in [0, 1)"),
    ({"scaling": "dora"}, "unknown scaling 'dora'; choose from: lora, rslora, none"),
    ({"layers": "first"}, "layers must be 'all', 'last'"),
])
def test_bad_lora_settings(kwargs, message):
    with pytest.raises(LorankError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        AdapterConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": 0.0}, "lr (learning rate) must be > 0"),
    ({"lr": -1e-3}, "lr (learning rate) must be > 0"),
    ({"lr": float("nan")}, "must be a finite number"),
    ({"steps": 0}, "steps must be a positive integer"),
    ({"steps": 5, "epochs": 2}, "give steps or epochs, not both"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
    ({"schedule": "cosine"}, "schedule must be one of constant, linear"),
    ({"optimizer": "lion"}, "optimizer must be one of adamw, adam, sgd, gd"),
    ({"optimizer": "gd", "batch_size": 4}, "optimizer gd is full-batch"),
    ({"metric": "auc"}, "metric must be one of accuracy, f1"),
])
def test_bad_train_settings(kwargs, message):
    with pytest.raises(LorankError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LoraTraining(**kwargs)


def test_rank_above_min_m_n_and_unknown_target(tiny_path):
    clf = classifier(tiny_path)
    with pytest.raises(LorankError, match=r"rank r=33 exceeds min\(m, n\)=32"):
        attach_lora(clf, AdapterConfig(ranks=(33,)))
    with pytest.raises(LorankError, match="unknown target module 'foo' for bert"):
        attach_lora(clf, AdapterConfig(ranks=(1,), targets=("foo",)))
    with pytest.raises(LorankError, match="layer index 7 out of range"):
        attach_lora(clf, AdapterConfig(ranks=(1,), layers=(7,)))
    attach_lora(clf, AdapterConfig(ranks=(32,), layers="last"))  # r = min(m, n) is allowed
    with pytest.raises(LorankError, match="already holds a LoRA adapter"):
        attach_lora(clf, AdapterConfig(ranks=(1,)))


def test_train_head_without_head_parameters(tiny_path, data):
    clf = classifier(tiny_path)
    adapter = attach_lora(clf, AdapterConfig(ranks=(1,), layers="last"))
    prep = prepare_data(clf, data, adapter.start)
    with pytest.raises(LorankError, match="verbalizer head has no trainable parameters"):
        fit(adapter, prep.train, prep.dev, LoraTraining(steps=2, train_head=True))


# ---------------------------------------------------------------- scaling property


@settings(max_examples=50, deadline=None)
@given(r=st.integers(1, 64), alpha=st.one_of(st.none(), st.floats(0.01, 100)),
       scaling=st.sampled_from(["lora", "rslora", "none"]))
def test_scaling_property(r, alpha, scaling):
    lora = AdapterConfig(ranks=(r,), alpha=alpha, scaling=scaling)
    root = math.sqrt(r) if scaling == "rslora" else r
    expected = 1.0 if alpha is None or scaling == "none" else alpha / root
    assert lora.s == pytest.approx(expected)
    assert lora.lora_alpha / root == pytest.approx(lora.s)  # what peft computes from α


def test_fan_in_init_and_scaling_none(tiny_path):
    clf = classifier(tiny_path)
    adapter = attach_lora(clf, AdapterConfig(ranks=(8,), init="fan_in", scaling="none", alpha=5.0),
                          seed=0)
    mod = adapter.module(adapter.matrices[0])
    assert mod.scaling["default"] == 1.0
    A = torch.cat([p.detach().flatten() for n, p in adapter.parameters().items()
                   if ".lora_A." in n])
    assert abs(float(A.std()) - 1 / math.sqrt(32)) < 0.015  # 1024 draws of N(0, 1/n), n = 32
    state = adapter.state()
    rng = torch.random.get_rng_state()
    adapter.reset(0)  # same seed: same init, global RNG untouched
    assert all(torch.equal(v, adapter.state()[k]) for k, v in state.items())
    assert torch.equal(rng, torch.random.get_rng_state())


# ---------------------------------------------------------------- cached prefix


@pytest.mark.parametrize("batch_size, dropout", [(None, 0.0), (5, 0.1)])
def test_cached_prefix_training_equals_full_forward(tiny_path, data, batch_size, dropout):
    runs = []
    for cache in (True, False):
        clf = classifier(tiny_path)
        lora = AdapterConfig(ranks=(2,), layers="last", dropout=dropout)
        adapter = attach_lora(clf, lora, seed=3)
        start = adapter.start if cache else None
        train = prepare_split(clf, data.train, start)
        dev = prepare_split(clf, data.dev, start)
        res = fit(adapter, train, dev, LoraTraining(lr=5e-2, steps=12, eval_every=3,
                                                    batch_size=batch_size))
        runs.append((res, adapter.state(), predict(clf, prepare_split(clf, data.test, start))))
    (a, sa, pa), (b, sb, pb) = runs
    assert runs[0][0].steps == 12
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5, atol=1e-6)
    assert [e.dev_accuracy for e in a.evals] == [e.dev_accuracy for e in b.evals]
    assert a.best_step == b.best_step
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
    assert max(a.losses) - min(a.losses) > 1e-3  # it actually trained


def test_training_is_deterministic(tiny_path, data):
    curves = []
    for _ in range(2):
        clf = classifier(tiny_path)
        adapter = attach_lora(clf, AdapterConfig(ranks=(1,), dropout=0.2), seed=5)
        prep = prepare_data(clf, data, adapter.start)
        curves.append(fit(adapter, prep.train, prep.dev,
                          LoraTraining(lr=1e-2, steps=6, batch_size=4, seed=9)).losses)
    assert curves[0] == curves[1]


# ---------------------------------------------------------------- linearization gap


def test_real_and_linearized_agree_to_first_order(tiny_path, data):
    """f(W0+tΔW) − [f(W0) + t⟨G, ΔW⟩] = O(t²): halving t divides the gap by ≈ 4.

    float64, so the gap at the smallest t (≈1.5e-5) is far above rounding (≈1e-13). A wrong
    directional derivative (e.g. missing f(W0), wrong scaling s, transposed ΔW) leaves an O(t)
    error and the ratio near 2 or 1.
    """
    from lorank.finetune.gap import linearization_gap

    clf = classifier(tiny_path, dtype=torch.float64)
    adapter = attach_lora(clf, AdapterConfig(ranks=(2,), alpha=3.0, layers="all"), seed=0)
    prep = prepare_data(clf, data, adapter.start)
    fit(adapter, prep.train, prep.dev, LoraTraining(lr=1e-2, steps=5, optimizer="sgd",
                                                    keep="last"))
    B = {n: p.detach().clone() for n, p in adapter.parameters().items() if ".lora_B." in n}
    assert all(b.abs().max() > 0 for b in B.values())
    gaps = []
    for t in (1.0, 0.5, 0.25):
        with torch.no_grad():
            for n, p in adapter.parameters().items():
                if n in B:
                    p.copy_(t * B[n])
        gaps.append(linearization_gap(adapter, prep.test))
    g = [x.max_abs for x in gaps]
    # small lr, 5 steps: the linear model already explains > 95 % of the change of the logits
    # (measured 1.6 %); the relative gap ‖f − f_lin‖/‖f − f0‖ is O(t), so it halves with t
    assert gaps[0].relative < 0.05 and gaps[0].agreement == 1.0
    assert 3.8 < g[0] / g[1] < 4.2 and 3.8 < g[1] / g[2] < 4.2
    assert 1.9 < gaps[0].relative / gaps[1].relative < 2.1


# ---------------------------------------------------------------- divergence, selection, runs


def test_nan_loss_is_recorded_as_diverged(tiny_path, data):
    clf = classifier(tiny_path)
    sel = finetune(clf, data, AdapterConfig(ranks=(1,)), LoraTraining(
        lr=1e30, steps=20, optimizer="sgd", eval_every=1), gap=False)
    rec = sel.record
    assert rec.status == "diverged" and rec.diverged_step is not None
    assert 1 < rec.diverged_step <= 20 and rec.steps == rec.diverged_step - 1
    assert len(rec.loss_curve) == rec.steps
    assert rec.best_step < rec.diverged_step
    assert rec.test_accuracy is not None and math.isfinite(rec.test_accuracy)
    json.dumps(rec.to_dict(), allow_nan=True)


def test_finetune_grid_selects_on_dev_and_measures(tiny_path, data):
    clf = classifier(tiny_path)
    lora = AdapterConfig(ranks=(2,), layers="last")
    sel = finetune(clf, data, lora, LoraTraining(steps=15, eval_every=5),
                   lrs=[3e-2, 1e-3], batch_sizes=[None, 8])
    assert [r.lr for r in sel.runs] == [1e-3, 1e-3, 3e-2, 3e-2]
    assert [r.train["batch_size"] for r in sel.runs] == [None, 8, None, 8]
    best = sel.record
    assert best.selected and sum(r.selected for r in sel.runs) == 1
    key = (-best.dev_accuracy, best.best_step)
    assert all(key <= (-r.dev_accuracy, r.best_step) for r in sel.runs)
    assert best.test_accuracy is not None and best.gap is not None and best.gap.n == 24
    assert best.zero_shot_test_accuracy == best.gap.accuracy_base
    if best.best_step != best.steps:
        assert best.final_gap is not None and best.final_gap.n == 24
    assert len(best.delta) == 2 and all(d.numerical_rank <= 2 for d in best.delta)
    assert best.num_parameters == 2 * 2 * (32 + 32)
    assert [n for n, p in clf.named_parameters() if "lora" in n] == []  # detached again
    out = best.to_dict()
    assert out["lora"]["r"] == 2 and out["gap"]["n"] == 24
    json.dumps(out, allow_nan=True)


@pytest.mark.parametrize("head, task", [("probe", "sst2"), ("prompt", "sst2"), ("pair", "rte")])
def test_other_heads_train(tiny_path, head, task):
    pair = task == "rte"
    d = Data(pair=pair)
    clf = classifier(tiny_path, head=head, task=task, data=d)
    x = clf.encode(d.test)
    with torch.no_grad():
        base = clf(x)
    sel = finetune(clf, d, AdapterConfig(ranks=(1,), layers="last"),
                   LoraTraining(lr=1e-2, steps=4, eval_every=2))
    assert sel.record.steps == 4
    with torch.no_grad():
        torch.testing.assert_close(clf(x), base)  # adapter removed after the run


# ---------------------------------------------------------------- ΔW statistics


def test_delta_stats_match_numpy():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(20, 3, generator=g) @ torch.randn(3, 15, generator=g)
    st_ = delta_stats("w", delta)
    sv = np.linalg.svd(delta.double().numpy(), compute_uv=False)
    np.testing.assert_allclose(st_.singular_values, sv, rtol=1e-10, atol=1e-12)
    assert st_.numerical_rank == 3 == np.linalg.matrix_rank(delta.numpy())
    assert st_.fro == pytest.approx(float(np.linalg.norm(delta.double().numpy())))
    assert st_.nuclear == pytest.approx(sv.sum()) and st_.spectral == pytest.approx(sv[0])
    assert delta_stats("z", torch.zeros(4, 4)).numerical_rank == 0


# ---------------------------------------------------------------- export


def test_adapter_export_round_trip(tiny_path, data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel

    clf = classifier(tiny_path)
    adapter = attach_lora(clf, AdapterConfig(ranks=(2,), layers="last", scaling="rslora",
                                             alpha=4.0))
    prep = prepare_data(clf, data, adapter.start)
    fit(adapter, prep.train, prep.dev, LoraTraining(lr=5e-2, steps=5))
    x = clf.encode(data.test)
    with torch.no_grad():
        trained = clf(x)
        hidden = clf.model(**{k: v for k, v in x.items()}).last_hidden_state
    folder = adapter.save(tmp_path / "adapter")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["r"] == 2 and cfg["use_rslora"] and cfg["layers_to_transform"] == [1]
    assert (folder / "adapter_model.safetensors").is_file()
    # 1) into a fresh lorank classifier
    clf2 = classifier(tiny_path)
    load_adapter(clf2, folder)
    with torch.no_grad():
        torch.testing.assert_close(clf2(x), trained, rtol=0, atol=1e-6)
    # 2) plain peft on the Hugging Face base model
    base = AutoModel.from_pretrained(str(tiny_path), attn_implementation="eager").eval()
    peft_model = PeftModel.from_pretrained(base, str(folder)).eval()
    with torch.no_grad():
        out = peft_model(**x).last_hidden_state
    torch.testing.assert_close(out, hidden, rtol=0, atol=1e-5)
