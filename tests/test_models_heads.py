"""Head math against simple references: verbaliser, prompt (HF MLM), probe/pair (sklearn)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lorank.data.dataset import Split
from lorank.data.tasks import get_task
from lorank.errors import LorankError
from lorank.models import build_classifier, load_encoder
from lorank.models.fit import fit_logistic
from lorank.models.heads import alignment_scores
from lorank.models.prompt import label_word_ids
from lorank.models.tiny import build_tiny_model

torch.set_num_threads(1)

SINGLE = Split("train", ["the movie was great", "a bad film", "i love this story",
                         "boring plot and the actor was bad"], None, [1, 0, 1, 0])
PAIRS = Split("train", ["is it good ?", "was the dog there ?", "is she a woman ?", "is it fun ?"],
              ["it was good", "no cat", "the man sat on the dog", "very fun"], [0, 1, 1, 0])


@pytest.fixture(scope="module")
def roberta(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_model("roberta", tmp_path_factory.mktemp("tiny") / "roberta"))


def _pooled_ref(model, tok, texts: list[str]) -> torch.Tensor:
    x = tok(texts, padding=True, return_tensors="pt")
    h = model(**x).last_hidden_state
    m = x["attention_mask"][..., None].float()
    e = (h * m).sum(1) / m.sum(1)
    return e / e.norm(dim=-1, keepdim=True)


def test_verbalizer_logits_are_cosines_over_tau(roberta: str) -> None:
    enc = load_encoder(roberta)
    task = get_task("sst2")
    clf = build_classifier(enc, task, "verbalizer", tau=0.1)
    with torch.no_grad():
        E = _pooled_ref(enc.model, enc.tokenizer, list(task.label_descriptions))
        e = _pooled_ref(enc.model, enc.tokenizer, list(SINGLE.text_a))
        got = clf(clf.encode(SINGLE))
    torch.testing.assert_close(got, e @ E.T / 0.1, atol=1e-4, rtol=1e-5)
    assert json.loads(json.dumps(clf.config_dict()))["tau"] == 0.1


def test_verbalizer_label_embeddings_frozen_at_w0(roberta: str) -> None:
    clf = build_classifier(load_encoder(roberta), "sst2", "verbalizer")
    before = clf.label_embeddings.clone()
    with torch.no_grad():
        for p in clf.adapted_parameters().values():
            p.add_(torch.randn_like(p))
    x = clf.encode(SINGLE)
    torch.testing.assert_close(clf.label_embeddings, before)
    torch.testing.assert_close(clf(x), clf.pooled(clf.run_layers(clf.embed(x), 0, 2))
                               @ before.T / 0.05)


def test_prompt_head_equals_hf_mlm_logits_at_mask(roberta: str) -> None:
    from transformers import AutoModelForMaskedLM

    enc = load_encoder(roberta)
    task = get_task("rte")
    clf = build_classifier(enc, task, "prompt")
    mlm = AutoModelForMaskedLM.from_pretrained(roberta, attn_implementation="eager").eval()
    ids = label_word_ids(enc.tokenizer, task.label_words)
    x = clf.encode(PAIRS)
    with torch.no_grad():
        full = mlm(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
        pos = (x["input_ids"] == enc.tokenizer.mask_token_id).float().argmax(-1)
        ref = full[torch.arange(len(PAIRS)), pos][:, ids]
        torch.testing.assert_close(clf(x), ref, atol=1e-5, rtol=1e-5)
    assert clf.config_dict()["label_words"] == ["Yes", "No"]


def test_prompt_truncation_keeps_the_mask(roberta: str) -> None:
    clf = build_classifier(load_encoder(roberta), "sst2", "prompt")
    long = Split("test", ["the movie was great " * 60], None, [1])
    x = clf.encode(long, max_length=32)
    assert x["input_ids"].shape[1] <= 32 and x["mask_position"].sum() == 1


def test_label_word_ids_first_subtoken_with_leading_space() -> None:
    class Tok:  # a BPE-like vocabulary where " great" differs from "great"
        unk_token_id = 0

        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return {" great": [5, 9], " terrible": [7], " Yes": [0]}.get(text, [0])

    assert label_word_ids(Tok(), ("terrible", "great")) == [7, 5]
    with pytest.raises(LorankError, match="not in the tokenizer"):
        label_word_ids(Tok(), ("Yes", "great"))


def test_probe_equals_sklearn_on_pair_features(roberta: str) -> None:
    from sklearn.linear_model import LogisticRegression

    enc = load_encoder(roberta)
    clf = build_classifier(enc, "qnli", "probe", train=PAIRS, C_grid=(1.0,))
    with torch.no_grad():
        u = _pooled_ref(enc.model, enc.tokenizer, list(PAIRS.text_a))
        v = _pooled_ref(enc.model, enc.tokenizer, list(PAIRS.text_b))
    X = torch.cat([u, v, (u - v).abs(), u * v], -1).double().numpy()
    assert np.allclose(clf.feature_matrix(PAIRS), X, atol=1e-5)
    mu, sd = X.mean(0), X.std(0)
    ref = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8).fit((X - mu) / sd, PAIRS.labels)
    p_ref = ref.predict_proba((X - mu) / sd)
    p = torch.softmax(clf(clf.encode(PAIRS)).double(), -1).detach().numpy()
    assert np.allclose(p, p_ref, atol=1e-4)


def test_pair_head_cosine_feature_and_few_scalars(roberta: str) -> None:
    enc = load_encoder(roberta)
    clf = build_classifier(enc, "mrpc", "pair", train=PAIRS, dev=PAIRS, features=("cos",))
    with torch.no_grad():
        u = _pooled_ref(enc.model, enc.tokenizer, list(PAIRS.text_a))
        v = _pooled_ref(enc.model, enc.tokenizer, list(PAIRS.text_b))
    assert np.allclose(clf.feature_matrix(PAIRS)[:, 0], (u * v).sum(-1).numpy(), atol=1e-5)
    assert clf.head_weight.shape == (2, 1) and clf.head_bias.shape == (2,)
    cfg = json.loads(json.dumps(clf.config_dict()))
    assert cfg["pair_features"] == ["cos"] and len(cfg["weight"]) == 2 and cfg["C"] > 0


def _align_ref(ha, ma, hb, mb):
    a = [h / np.linalg.norm(h) for h, m in zip(ha, ma, strict=True) if m]
    b = [h / np.linalg.norm(h) for h, m in zip(hb, mb, strict=True) if m]
    S = np.array([[x @ y for y in b] for x in a])
    return S.max(1).mean(), S.max(0).mean()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(0, 2), st.integers(0, 2),
       st.integers(0, 10_000))
def test_alignment_scores_match_reference(ta: int, tb: int, pa: int, pb: int, seed: int) -> None:
    g = np.random.default_rng(seed)
    ha, hb = g.normal(size=(ta + pa, 4)), g.normal(size=(tb + pb, 4))
    ma, mb = np.r_[np.ones(ta), np.zeros(pa)], np.r_[np.ones(tb), np.zeros(pb)]
    rec, prec = alignment_scores(*(torch.tensor(t)[None] for t in (ha, ma, hb, mb)))
    r_ref, p_ref = _align_ref(ha, ma, hb, mb)
    assert np.isclose(rec.item(), r_ref) and np.isclose(prec.item(), p_ref)
    same = alignment_scores(*(torch.tensor(t)[None] for t in (ha, ma, ha, ma)))
    assert np.isclose(same[0].item(), 1.0) and np.isclose(same[1].item(), 1.0)


def test_fit_logistic_binary_logits_reproduce_sklearn_probabilities() -> None:
    from sklearn.linear_model import LogisticRegression

    g = np.random.default_rng(0)
    X, y = g.normal(size=(40, 3)), np.r_[np.zeros(20, int), np.ones(20, int)]
    X[y == 1] += 1.0
    fit = fit_logistic(X, y, 2)
    mu, sd = X.mean(0), X.std(0)
    ref = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8).fit((X - mu) / sd, y)
    logits = X @ fit.weight.T + fit.bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.allclose(p, ref.predict_proba((X - mu) / sd), atol=1e-6)


def test_fit_logistic_selects_C_on_dev_and_refits_on_train() -> None:
    g = np.random.default_rng(1)
    X, y = g.normal(size=(30, 5)), np.arange(30) % 3
    X[np.arange(30), y] += 2.0
    Xd, yd = g.normal(size=(30, 5)), np.arange(30) % 3
    Xd[np.arange(30), yd] += 2.0
    fit = fit_logistic(X, y, 3, Xd, yd, C_grid=(1e-4, 1.0))
    assert fit.weight.shape == (3, 5) and fit.C in (1e-4, 1.0)
    accs = {}
    for C in (1e-4, 1.0):
        f = fit_logistic(X, y, 3, C_grid=(C,))
        accs[C] = float(((Xd @ f.weight.T + f.bias).argmax(1) == yd).mean())
    assert fit.dev_accuracy == max(accs.values())
    with pytest.raises(LorankError, match="no example of class"):
        fit_logistic(X[y < 2], y[y < 2], 3)


@pytest.mark.parametrize("task,head,data", [("sst2", "verbalizer", SINGLE), ("sst2", "prompt",
                                            SINGLE), ("qnli", "pair", PAIRS)])
def test_trim_padding_keeps_logits_and_cuts_only_padding(roberta: str, task, head, data) -> None:
    """A chunk of short rows cut to its own longest row (``trim_padding``) gives the logits of
    the split-wide padded batch; every tower's tensors (and the prompt head's per-token mask
    position) lose the same all-padding columns, nothing else."""
    from lorank.ntk.jacobian import length_chunks

    enc = load_encoder(roberta)
    kw = {"train": data, "dev": data} if head == "pair" else {}
    clf = build_classifier(enc, task, head, **kw)
    long = ([*list(data.text_a), "a much longer sentence " * 6],
            None if data.text_b is None else [*list(data.text_b), "x " * 20])
    texts = long[0] if long[1] is None else list(zip(*long, strict=True))
    inputs = clf.encode(texts, max_length=64)
    short = {k: v[:-1] for k, v in inputs.items()}
    cut = clf.trim_padding(short)
    for p in clf.towers:
        T = cut[f"{p}attention_mask"].shape[1]
        assert inputs[f"{p}attention_mask"].shape[1] > T
        assert int(short[f"{p}attention_mask"][:, T:].sum()) == 0  # only padding was cut
    assert set(cut) == set(short)
    with torch.no_grad():
        torch.testing.assert_close(clf(cut), clf(short), rtol=1e-5, atol=1e-6)
        pieces = list(length_chunks(clf, inputs, 2))
        assert sorted(torch.cat([i for i, _ in pieces]).tolist()) == list(range(len(long[0])))
        full = clf(inputs)
        for index, batch in pieces:
            torch.testing.assert_close(clf(batch), full[index], rtol=1e-5, atol=1e-6)
