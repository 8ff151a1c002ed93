"""The batched real-LoRA trainer against peft one configuration at a time (issue #21).

Reference = :func:`lorank.finetune.train.fit` on a peft adapter, one configuration at a time,
from the same peft-drawn init, on the same prepared splits. Every configuration of a batched
call must reproduce its loss curve, dev curve, kept step, final adapter weights and logits:
float64 to 1e-8, float32 to 1e-4, on tiny models of every supported architecture; the MiniLM
version is marked slow.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lorank.data import Split, get_task
from lorank.errors import LorankError
from lorank.finetune.adapter import attach_lora, load_adapter
from lorank.finetune.batched import (
    BatchedSettings,
    Cell,
    Configuration,
    Problem,
    finetune_batched,
    predict_states,
    save_adapter,
    train_batched,
)
from lorank.finetune.buckets import cut_rows, padded_tokens, plan_buckets, row_lengths
from lorank.finetune.config import LoraTraining
from lorank.finetune.inputs import predict, prepare_split
from lorank.finetune.run import finetune, prepare_data
from lorank.finetune.stacked import (
    StackedOptimizer,
    lora_hooks,
    stack_factors,
    stacked_logits,
)
from lorank.finetune.train import fit
from lorank.models import build_classifier, load_encoder
from lorank.models.lora_shape import AdapterConfig
from lorank.models.tiny import build_tiny_model, tiny_config, tiny_tokenizer

torch.set_num_threads(1)

WORDS = ("the", "movie", "was", "great", "good", "bad", "terrible", "fun", "boring", "love",
         "hate", "story", "plot", "actor", "very")
POSITIVE = {"great", "good", "fun", "love"}


def make_split(name: str, n: int, seed: int, pair: bool = False) -> Split:
    """n rows of 3–8 words (label: a positive word occurs), pairs with a second text."""
    rng = random.Random(seed)
    a = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(n)]
    y = [int(any(w in POSITIVE for w in t.split())) for t in a]
    b = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))) for _ in range(n)]
    return Split(name, tuple(a), tuple(b) if pair else None, y)

ARCHS = ("bert", "roberta", "xlm-roberta", "deberta-v2", "electra", "mpnet")
#: one optimiser setting per architecture, so that the table covers every optimiser, mini-batch
#: and full-batch, constant and linear schedules, weight decay
TRAIN = {
    "bert": dict(optimizer="adamw", batch_size=5, weight_decay=0.01, schedule="linear"),
    "roberta": dict(optimizer="adam", batch_size=None, weight_decay=0.01),
    "xlm-roberta": dict(optimizer="sgd", batch_size=4, weight_decay=0.1),
    "deberta-v2": dict(optimizer="gd", weight_decay=0.0, schedule="linear"),
    "electra": dict(optimizer="adamw", batch_size=None),
    "mpnet": dict(optimizer="adam", batch_size=6, schedule="linear"),
}
LRS = {"adamw": (0.01, 0.05), "adam": (0.01, 0.05), "sgd": (0.5, 2.0), "gd": (0.5, 2.0)}


class Data:
    """train/dev/test splits of one seed (the fields prepare_data reads)."""

    def __init__(self, seed: int, n: int = 12, pair: bool = False) -> None:
        self.train, self.dev, self.test = (
            next(s for k in range(100) if len(set((s := make_split(
                name, size, 1000 * seed + 10 * k + i, pair)).labels)) == 2)
            for i, (name, size) in enumerate((("train", n), ("dev", 10), ("test", 14))))


def build_tiny(arch: str, folder: Path) -> Path:
    """lorank's tiny model, or for XLM-R (not among lorank.models.tiny's) the same sizes."""
    if arch != "xlm-roberta":
        return build_tiny_model(arch, folder)
    from transformers import AutoConfig, AutoModelForMaskedLM

    tok = tiny_tokenizer()
    kwargs = tiny_config("roberta", vocab_size=len(tok)).to_diff_dict()
    kwargs = {k: v for k, v in kwargs.items() if k not in ("model_type", "transformers_version")}
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(AutoConfig.for_model("xlm-roberta", **kwargs),
                                             attn_implementation="eager")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tiny-batched")
    return {arch: build_tiny(arch, root / arch) for arch in ARCHS}


def problems_for(path: Path, dtype: torch.dtype, layers: str = "all", cache: bool = True,
                 head: str = "verbalizer", task: str = "sst2") -> dict:
    """Two problems (data seeds 1 and 2) on one encoder."""
    enc = load_encoder(str(path), dtype=dtype)
    out = {}
    for seed in (1, 2):
        d = Data(seed, pair=task != "sst2")
        clf = build_classifier(enc, get_task(task), head,
                               **({"train": d.train, "dev": d.dev} if head == "pair" else {}))
        start = None
        if cache:
            start = min(m.layer for m in clf.adapted_matrices(None, layers))
        out[seed] = Problem(clf, prepare_data(clf, d, start, 32))
    return out


def configurations(arch: str, layers: str = "all", steps: int = 7) -> list[Configuration]:
    kw = dict(TRAIN[arch])
    out = []
    for seed, r, lr in itertools.product((1, 2), (1, 3), LRS[kw["optimizer"]]):
        lora = AdapterConfig(ranks=(r,), layers=layers, init="fan_in", scaling="lora", alpha=2.0)
        train = LoraTraining(lr=lr, steps=steps, eval_every=3, seed=seed + 4, **kw)
        out.append(Configuration(seed, lora, train, init_seed=seed + 10))
    return out


def solo(problem: Problem, cfg: Configuration):
    """The reference: peft, one configuration, fit(); returns (FitResult, final test logits)."""
    adapter = attach_lora(problem.clf, cfg.lora, seed=cfg.adapter_seed)
    try:
        res = fit(adapter, problem.data.train, problem.data.dev, cfg.train)
        logits = None
        if res.final_state is not None:
            adapter.load_state(res.final_state)
            logits = predict(problem.clf, problem.data.test)
        return res, logits
    finally:
        adapter.detach()


def assert_same_run(ref, got, tol: float) -> None:
    assert got.steps == ref.steps and got.diverged_step == ref.diverged_step
    np.testing.assert_allclose(got.losses, ref.losses, rtol=0, atol=tol)
    assert [e.step for e in got.evals] == [e.step for e in ref.evals]
    assert [e.dev_accuracy for e in got.evals] == [e.dev_accuracy for e in ref.evals]
    np.testing.assert_allclose([e.dev_loss for e in got.evals],
                               [e.dev_loss for e in ref.evals], rtol=0, atol=tol)
    assert got.best_step == ref.best_step
    for states in (("best_state",), ("final_state",)):
        a, b = getattr(ref, states[0]), getattr(got, states[0])
        assert (a is None) == (b is None)
        if a is not None:
            assert a.keys() == b.keys()
            for k in a:
                assert a[k].shape == b[k].shape
                torch.testing.assert_close(b[k], a[k], rtol=0, atol=tol)


def check_equal_to_peft(problems: dict, configs: list[Configuration], tol: float) -> None:
    fit_all = train_batched(problems, configs)
    assert len(fit_all.fits) == len(configs) and fit_all.cohorts >= 2
    finals = predict_states(problems[1].clf, problems[1].data.test,
                            [c.lora for c in configs if c.problem == 1],
                            [f.final_state for c, f in zip(configs, fit_all.fits, strict=True)
                             if c.problem == 1])
    moved = 0.0
    for cfg, got in zip(configs, fit_all.fits, strict=True):
        ref, logits = solo(problems[cfg.problem], cfg)
        assert_same_run(ref, got, tol)
        moved = max(moved, max(ref.losses) - min(ref.losses))
    i1 = [i for i, c in enumerate(configs) if c.problem == 1]
    for j, i in enumerate(i1):
        _, logits = solo(problems[1], configs[i])
        torch.testing.assert_close(finals[j], logits, rtol=0, atol=tol)
    assert moved > 1e-3  # the configurations actually trained


@pytest.mark.parametrize("arch", ARCHS)
def test_equal_to_peft_float64(tiny_paths, arch):
    check_equal_to_peft(problems_for(tiny_paths[arch], torch.float64), configurations(arch),
                        tol=1e-8)


@pytest.mark.parametrize("arch", ["bert", "deberta-v2"])
def test_equal_to_peft_float32_last_layer(tiny_paths, arch):
    check_equal_to_peft(problems_for(tiny_paths[arch], torch.float32, layers="last"),
                        configurations(arch, layers="last"), tol=1e-4)


def test_full_forward_and_cached_prefix_agree(tiny_paths):
    """Problems without a cached prefix (start None: token inputs) train identically."""
    configs = configurations("bert", steps=4)
    cached = train_batched(problems_for(tiny_paths["bert"], torch.float64), configs)
    full = train_batched(problems_for(tiny_paths["bert"], torch.float64, cache=False), configs)
    for a, b in zip(cached.fits, full.fits, strict=True):
        assert_same_run(a, b, 1e-10)


@pytest.mark.parametrize("head, task", [("prompt", "sst2"), ("pair", "rte")])
def test_other_heads_equal_to_peft(tiny_paths, head, task):
    problems = problems_for(tiny_paths["roberta"], torch.float64, layers="last", head=head,
                            task=task)
    configs = [Configuration(seed, AdapterConfig(ranks=(r,), layers="last"),
                             LoraTraining(lr=0.05, steps=4, eval_every=2, seed=seed))
               for seed in (1, 2) for r in (1, 2)]
    fit_all = train_batched(problems, configs)
    for cfg, got in zip(configs, fit_all.fits, strict=True):
        assert_same_run(solo(problems[cfg.problem], cfg)[0], got, 1e-8)


def test_divergence_is_isolated(tiny_paths):
    problems = problems_for(tiny_paths["bert"], torch.float32)
    lora = AdapterConfig(ranks=(2,))
    configs = [Configuration(1, lora, LoraTraining(lr=lr, steps=20, eval_every=1,
                                                   optimizer="sgd"))
               for lr in (0.5, 1e30, 1.0)]
    fit_all = train_batched(problems, configs)
    bad = fit_all.fits[1]
    ref_bad, _ = solo(problems[1], configs[1])
    assert ref_bad.diverged_step is not None
    assert bad.diverged_step == ref_bad.diverged_step and bad.final_state is None
    assert bad.steps == bad.diverged_step - 1 and len(bad.losses) == bad.steps
    assert bad.best_step < bad.diverged_step and math.isfinite(bad.best_dev_metric)
    for i in (0, 2):
        got = fit_all.fits[i]
        assert got.diverged_step is None and got.steps == 20
        assert all(math.isfinite(x) for x in got.losses)
        assert all(bool(torch.isfinite(v).all()) for v in got.final_state.values())
        assert_same_run(solo(problems[1], configs[i])[0], got, 1e-4)


# ---------------------------------------------------------------- stacked pieces


def test_rank_padding_is_inert(tiny_paths):
    """Padded rank slots contribute exact zeros and receive exactly zero gradient."""
    problems = problems_for(tiny_paths["bert"], torch.float64, layers="last")
    clf, split = problems[1].clf, problems[1].data.train
    paths = [m.path for m in clf.adapted_matrices(None, "last")]
    g = torch.Generator().manual_seed(0)
    factors = [{p: (torch.randn(r, 32, generator=g, dtype=torch.float64),
                    torch.randn(32, r, generator=g, dtype=torch.float64)) for p in paths}
               for r in (1, 4)]
    stack = stack_factors(factors, [1.0, 0.5])
    for p in paths:
        stack.A[p].requires_grad_(True)
        stack.B[p].requires_grad_(True)
    with lora_hooks(clf.model, paths) as slot:
        logits = stacked_logits(clf, split.x, split.start, slot, stack.A, stack.B, stack.s)
        logits.pow(2).sum().backward()
        # configuration 0 alone, unpadded: the same logits
        alone = stacked_logits(clf, split.x, split.start, slot,
                               {p: factors[0][p][0][None] for p in paths},
                               {p: factors[0][p][1][None] for p in paths}, stack.s[:1])
    torch.testing.assert_close(logits[0], alone[0], rtol=0, atol=1e-12)
    for p in paths:
        assert torch.count_nonzero(stack.A[p].grad[0, 1:]) == 0
        assert torch.count_nonzero(stack.B[p].grad[0, :, 1:]) == 0
        assert torch.count_nonzero(stack.A[p].grad[1]) > 0


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_stacked_optimizer_equals_torch_optim(kind):
    g = torch.Generator().manual_seed(1)
    C, R, n = 3, 4, 5
    ranks = torch.tensor([1, 4, 2])
    mask = (torch.arange(R)[None] < ranks[:, None]).double()
    A = torch.randn(C, R, n, generator=g, dtype=torch.float64) * mask[:, :, None]
    lrs, wds = torch.tensor([0.1, 0.03, 0.3]), torch.tensor([0.0, 0.1, 0.5])
    opt = StackedOptimizer(kind, [A], [mask[:, :, None]], lrs, wds)
    refs = []
    for c in range(C):
        p = torch.nn.Parameter(A[c, :ranks[c]].clone())
        cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
        refs.append((p, cls[kind]([p], lr=float(lrs[c]), weight_decay=float(wds[c]))))
    active = torch.tensor([True, True, True])
    for t in range(6):
        grad = torch.randn(C, R, n, generator=g, dtype=torch.float64)  # noise in the padding
        if t == 3:
            active = torch.tensor([True, False, True])  # configuration 1 stops (diverged)
        factor = torch.full((C,), 1.0 - t / 10)
        opt.step([grad], factor, active)
        for c, (p, o) in enumerate(refs):
            if not active[c]:
                continue
            for group in o.param_groups:
                group["lr"] = float(lrs[c]) * float(factor[c])
            p.grad = grad[c, :ranks[c]].clone()
            o.step()
    for c, (p, _) in enumerate(refs):
        torch.testing.assert_close(A[c, :ranks[c]], p.detach(), rtol=0, atol=1e-12)
        assert torch.count_nonzero(A[c, ranks[c]:]) == 0


# ---------------------------------------------------------------- length buckets


def _brute_force(lengths: list[int], k: int) -> int:
    """Minimal padded tokens over every partition of the rows into ≤ k groups."""
    n = len(lengths)
    best = None
    for labels in itertools.product(range(k), repeat=n):
        groups = [[lengths[i] for i in range(n) if labels[i] == g] for g in range(k)]
        cost = sum(len(x) * max(x) for x in groups if x)
        best = cost if best is None else min(best, cost)
    return best


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=6), k=st.integers(1, 3))
def test_plan_buckets_is_optimal_for_one_tower(lengths, k):
    arr = np.array(lengths)[:, None]
    groups = plan_buckets(arr, k)
    assert len(groups) <= k and all(len(g) for g in groups)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    assert padded_tokens(arr, groups) == _brute_force(lengths, k)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=1,
                        max_size=40), k=st.integers(1, 5))
def test_plan_buckets_two_towers_partition_and_never_worse_than_padding(lengths, k):
    arr = np.array(lengths)
    groups = plan_buckets(arr, k)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    assert padded_tokens(arr, groups) <= len(lengths) * int(arr.max(axis=0).sum())


def test_row_lengths_right_and_left_padding():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]])
    assert row_lengths({"attention_mask": mask}, ("",))[:, 0].tolist() == [2, 4, 4]
    x = {"hidden": torch.randn(3, 4, 2), "attention_mask": mask, "mask_position": mask * 0,
         "other": "kept"}
    cut = cut_rows(x, np.array([2, 0]), ("",), [3])
    assert cut["hidden"].shape == (2, 3, 2) and cut["mask_position"].shape == (2, 3)
    torch.testing.assert_close(cut["hidden"], x["hidden"][[2, 0], :3])
    assert cut["other"] == "kept"


@pytest.mark.parametrize("head, task, cache", [("verbalizer", "sst2", True),
                                               ("prompt", "sst2", False),
                                               ("pair", "rte", True), ("probe", "rte", True)])
def test_buckets_leave_logits_unchanged(tiny_paths, head, task, cache):
    enc = load_encoder(str(tiny_paths["deberta-v2"]), dtype=torch.float64)
    d = Data(3, n=20, pair=task == "rte")
    kw = {"train": d.train, "dev": d.dev} if head in ("pair", "probe") else {}
    clf = build_classifier(enc, get_task(task), head, **kw)
    split = prepare_split(clf, d.train, 1 if cache else None, 32)
    lora = AdapterConfig(ranks=(2,), layers="last")
    adapter = attach_lora(clf, lora, seed=0)
    with torch.no_grad():
        for p in adapter.parameters().values():
            p.normal_(0, 0.3)
    state = adapter.state()
    ref = predict(clf, split)
    adapter.detach()
    for buckets in (1, 3, 8):
        got = predict_states(clf, split, [lora], [state], BatchedSettings(max_buckets=buckets))
        torch.testing.assert_close(got[0], ref, rtol=0, atol=1e-10)


# ---------------------------------------------------------------- cells, export, errors


def test_finetune_batched_equals_finetune(tiny_paths):
    problems = problems_for(tiny_paths["bert"], torch.float64, layers="last")
    data = {seed: Data(seed) for seed in (1, 2)}
    train = LoraTraining(steps=6, eval_every=2, optimizer="gd")
    cells = [Cell(seed, AdapterConfig(ranks=(r,), layers="last", init="fan_in", scaling="none"),
                  train, lrs=(2.0, 0.5), init_seed=seed) for seed in (1, 2) for r in (1, 2)]
    selections = finetune_batched(problems, cells)
    for cell, sel in zip(cells, selections, strict=True):
        clf = problems[cell.problem].clf
        ref = finetune(clf, data[cell.problem], cell.lora, cell.train, lrs=cell.lrs,
                       init_seed=cell.init_seed, prepared=problems[cell.problem].data)
        assert sel.best == ref.best and [r.lr for r in sel.runs] == [0.5, 2.0]
        a, b = sel.record, ref.record
        assert (a.best_step, a.steps, a.selected) == (b.best_step, b.steps, True)
        assert a.test_accuracy == b.test_accuracy
        assert a.final_test_accuracy == b.final_test_accuracy
        assert a.zero_shot_test_accuracy == b.zero_shot_test_accuracy
        np.testing.assert_allclose(a.norms["delta_fro"], b.norms["delta_fro"], atol=1e-9)
        if b.gap is not None:
            assert a.gap.max_abs == pytest.approx(b.gap.max_abs, abs=1e-8)
        json.dumps(a.to_dict(), allow_nan=True)
        assert [n for n, _ in clf.named_parameters() if "lora" in n] == []


def test_trained_adapters_export_in_peft_format(tiny_paths, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel

    path = tiny_paths["roberta"]
    problems = problems_for(path, torch.float32, layers="last")
    clf = problems[1].clf
    configs = [Configuration(1, AdapterConfig(ranks=(r,), layers="last", scaling="rslora",
                                              alpha=3.0),
                             LoraTraining(lr=0.05, steps=5, eval_every=5)) for r in (1, 3)]
    fit_all = train_batched(problems, configs)
    x = clf.encode(Data(1).test)
    x_split = prepare_split(clf, Data(1).test, None)
    logits = predict_states(clf, x_split, [c.lora for c in configs],
                            [f.final_state for f in fit_all.fits])
    for i, (cfg, res) in enumerate(zip(configs, fit_all.fits, strict=True)):
        folder = save_adapter(clf, cfg.lora, res.final_state, tmp_path / f"a{i}")
        assert json.loads((folder / "adapter_config.json").read_text())["r"] == cfg.lora.r
        base = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()
        peft_model = PeftModel.from_pretrained(base, str(folder)).eval()
        clf2 = build_classifier(load_encoder(str(path)), get_task("sst2"), "verbalizer")
        load_adapter(clf2, folder)
        with torch.no_grad():
            torch.testing.assert_close(clf2(x), logits[i], rtol=0, atol=1e-5)
            hidden = peft_model(**x).last_hidden_state
            torch.testing.assert_close(hidden, clf2.model(**x).last_hidden_state,
                                       rtol=0, atol=1e-5)
        assert [n for n, _ in clf.named_parameters() if "lora" in n] == []


@pytest.fixture(scope="module")
def bert_problems(tiny_paths) -> dict:
    return problems_for(tiny_paths["bert"], torch.float32, layers="last")


@pytest.mark.parametrize("change, message", [
    (dict(lora=AdapterConfig(ranks=(1,), layers="all")), "must share lora.layers"),
    (dict(train=LoraTraining(steps=3, optimizer="sgd")), "must share train.optimizer"),
    (dict(train=LoraTraining(steps=3, loss="mse")), "must share train.loss"),
    (dict(problem=7), "unknown problem 7"),
])
def test_configurations_that_cannot_share_a_program(bert_problems, change, message):
    base = Configuration(1, AdapterConfig(ranks=(1,), layers="last"), LoraTraining(steps=3))
    other = Configuration(**{**vars(base), **change})
    with pytest.raises(LorankError, match=message):
        train_batched(bert_problems, [base, other])


def test_bad_batched_inputs(bert_problems, tiny_paths):
    lora = AdapterConfig(ranks=(1,), layers="last")
    with pytest.raises(LorankError, match="no configurations to train"):
        train_batched(bert_problems, [])
    with pytest.raises(LorankError, match="without dropout"):
        train_batched(bert_problems, [Configuration(1, AdapterConfig(ranks=(1,), layers="last",
                                                                    dropout=0.1),
                                                    LoraTraining(steps=2))])
    with pytest.raises(LorankError, match="keeps the head frozen"):
        train_batched(bert_problems, [Configuration(1, lora, LoraTraining(steps=2,
                                                                          train_head=True))])
    other = problems_for(tiny_paths["bert"], torch.float32, layers="last")
    with pytest.raises(LorankError, match="share one encoder"):
        train_batched({1: bert_problems[1], 2: other[2]},
                      [Configuration(k, lora, LoraTraining(steps=2)) for k in (1, 2)])
    with pytest.raises(LorankError, match="rank r=40 exceeds"):
        train_batched(bert_problems, [Configuration(1, AdapterConfig(ranks=(40,), layers="last"),
                                                    LoraTraining(steps=2))])
    above = Problem(bert_problems[1].clf, prepare_data(bert_problems[1].clf, Data(1), 1))
    with pytest.raises(LorankError, match=r"caches layers \[0, 1\) but LoRA adapts layer 0"):
        train_batched({1: above}, [Configuration(1, AdapterConfig(ranks=(1,), layers="all"),
                                                 LoraTraining(steps=2))])
    adapter = attach_lora(bert_problems[1].clf, lora)
    try:
        with pytest.raises(LorankError, match="already holds a LoRA adapter"):
            train_batched(bert_problems, [Configuration(1, lora, LoraTraining(steps=2))])
    finally:
        adapter.detach()
    for kwargs in ({"max_buckets": 0}, {"max_rows": -1}, {"max_rows": 2.5}):
        with pytest.raises(LorankError, match="must be a positive integer"):
            BatchedSettings(**kwargs)
    # nothing half-done: the classifier trains normally afterwards, requires_grad restored
    flags = {n: p.requires_grad for n, p in bert_problems[1].clf.named_parameters()}
    train_batched(bert_problems, [Configuration(1, lora, LoraTraining(steps=1))])
    assert flags == {n: p.requires_grad for n, p in bert_problems[1].clf.named_parameters()}


# ---------------------------------------------------------------- bundled MiniLM


@pytest.mark.slow
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-8), (torch.float32, 1e-4)])
def test_minilm_equal_to_peft(data_dir, dtype, tol):
    from lorank.data import load_task

    enc = load_encoder("minilm", dtype=dtype)
    problems = {}
    for seed in (13, 42):
        data = load_task("sst2", k=16, seed=seed, data_dir=str(data_dir), test_max=40)
        clf = build_classifier(enc, data.task, "verbalizer")
        problems[seed] = Problem(clf, prepare_data(clf, data, 5, 64))
    configs = [Configuration(seed, AdapterConfig(ranks=(r,), layers="last", init="fan_in",
                                                scaling="none"),
                             LoraTraining(lr=lr, steps=4, eval_every=2, optimizer="gd",
                                          seed=seed))
               for seed in (13, 42) for r in (1, 8) for lr in (0.03, 0.1)]
    fit_all = train_batched(problems, configs)
    for cfg, got in zip(configs, fit_all.fits, strict=True):
        ref, logits = solo(problems[cfg.problem], cfg)
        assert_same_run(ref, got, tol)
        mine = predict_states(problems[cfg.problem].clf, problems[cfg.problem].data.test,
                              [cfg.lora], [got.final_state])
        torch.testing.assert_close(mine[0], logits, rtol=0, atol=tol)


# ---------------------------------------------------------------- the sweep method


def test_sweep_method_trains_the_group_in_one_call(tiny_paths, data_dir):
    """The ``lora`` method is grouped: it trains every rank of its batch in one batched call and
    gives the results of the one-at-a-time engine (``engine: sequential``)."""
    from lorank.experiments.config import RunConfig
    from lorank.experiments.registry import RunContext, get_method

    method = get_method("lora")
    base = dict(sweep="t", method="lora", task="sst2", model=str(tiny_paths["bert"]), seed=13,
                lrs=(0.1, 0.3), steps=6, eval_interval=2, max_length=24, test_cap=30,
                dtype="float64")
    batched = [RunConfig(rank=r, **base) for r in (1, 2)]
    assert method.grouped and len({c.batch_key for c in batched}) == 1
    results = method.run(batched, RunContext(data_dir=data_dir))
    out = [results[c.run_id] for c in batched]
    assert [m["metrics"]["computed_here"] for m in out] == [True, False]
    assert all(m["metrics"]["ranks_trained_together"] == [1, 2] for m in out)
    assert out[1]["metrics"]["train_s"] == out[0]["metrics"]["train_s"]
    seq_ctx = RunContext(data_dir=data_dir)
    for r, got in zip((1, 2), out, strict=True):
        one = RunConfig(rank=r, **base, options={"engine": "sequential"})
        ref = method.run([one], seq_ctx)[one.run_id]
        a, b = got["metrics"], ref["metrics"]
        assert (a["engine"], b["engine"]) == ("batched", "sequential")
        for key in ("test_acc", "test_acc_final", "w0_test_acc", "dev_acc",
                    "selected_lr", "selected_step", "numerical_rank"):
            assert a[key] == b[key], key
        np.testing.assert_allclose(got["curves"]["train_loss"], ref["curves"]["train_loss"],
                                   rtol=0, atol=1e-8)
        assert a["ntk_gap"] == pytest.approx(b["ntk_gap"], rel=1e-6, nan_ok=True)


def test_sweep_method_rejects_unknown_engine():
    from lorank.experiments.config import RunConfig
    from lorank.experiments.methods.lora import settings

    config = RunConfig(sweep="t", method="lora", task="sst2", model="m", rank=1, seed=13,
                       options={"engine": "gpu"})
    with pytest.raises(LorankError, match="engine must be one of batched, sequential"):
        settings(config)
