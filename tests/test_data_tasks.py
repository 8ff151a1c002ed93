"""Task registry: built-in specs, aliases, duplicates, custom tasks, spec validation."""

from __future__ import annotations

import dataclasses

import pytest

from lorank.data import (
    BUILTIN_TASKS,
    TaskRegistry,
    TaskSpec,
    custom_task,
    get_task,
    parse_labels,
    task_names,
)
from lorank.errors import LorankError


def test_builtin_tasks_and_K():
    assert task_names() == ["SST-2", "QNLI", "MRPC", "RTE", "MNLI"]
    assert {t.name: t.K for t in BUILTIN_TASKS} == {
        "SST-2": 2, "QNLI": 2, "MRPC": 2, "RTE": 2, "MNLI": 3}
    assert get_task("mrpc").metrics == ("accuracy", "f1")
    assert get_task("rte").metrics == ("accuracy",)


@pytest.mark.parametrize("alias,name", [
    ("sst2", "SST-2"), ("sst-2", "SST-2"), ("SST-2", "SST-2"), ("SST_2", "SST-2"),
    ("sst", "SST-2"), ("qnli", "QNLI"), ("Mrpc", "MRPC"), ("rte", "RTE"), ("mnli", "MNLI"),
    ("mnli-m", "MNLI"),
])
def test_aliases(alias, name):
    assert get_task(alias).name == name


def test_lmbff_label_words_and_templates():
    sst2, qnli, mrpc, rte, mnli = (get_task(n) for n in task_names())
    assert sst2.label_word_map == {"0": "terrible", "1": "great"}
    assert sst2.prompt("a gem") == "a gem It was <mask> ."
    assert qnli.label_word_map == {"entailment": "Yes", "not_entailment": "No"}
    assert rte.label_word_map == qnli.label_word_map
    assert mrpc.label_word_map == {"0": "No", "1": "Yes"}
    assert mrpc.prompt("A", "B", mask="[MASK]") == "A [MASK] , B"
    assert mnli.label_word_map == {"entailment": "Yes", "neutral": "Maybe", "contradiction": "No"}
    assert mnli.prompt("P", "H") == "P ? <mask> , H"
    assert sst2.label_descriptions == ("It was terrible.", "It was great.")
    for spec in BUILTIN_TASKS:
        assert len(set(spec.label_descriptions)) == spec.K


def test_hub_label_order_matches_labels():
    # hub ids are label indices: GLUE orders (negative, positive), (entailment, neutral, ...)
    for spec in BUILTIN_TASKS:
        assert spec.hub is not None and len(spec.hub.label_names) == spec.K
    assert get_task("mnli").hub.label_names == get_task("mnli").labels


def test_unknown_task_lists_known():
    with pytest.raises(LorankError, match=r"unknown task 'cola'; known tasks: SST-2, QNLI, "
                                          r"MRPC, RTE, MNLI"):
        get_task("cola")


def test_duplicate_registration_is_error():
    reg = TaskRegistry()
    spec = custom_task(["a", "b"], name="mine")
    reg.register(spec)
    with pytest.raises(LorankError, match="already registered"):
        reg.register(spec)
    with pytest.raises(LorankError, match="already registered as 'mine'"):
        reg.register(dataclasses.replace(spec, name="other", aliases=("MINE",)))
    reg.register(dataclasses.replace(spec, name="other2"))
    assert reg.names() == ["mine", "other2"] and "MINE" in reg and len(reg) == 2


def test_builtin_names_cannot_be_reregistered():
    from lorank.data import register_task
    with pytest.raises(LorankError, match="already registered"):
        register_task(dataclasses.replace(get_task("sst2"), name="sst_2", aliases=()))


def test_custom_task_defaults():
    spec = custom_task(["neg", "pos", "mixed"], name="reviews")
    assert spec.K == 3 and not spec.is_pair and spec.metrics == ("accuracy",)
    assert spec.label_words == ("neg", "pos", "mixed")
    assert spec.prompt("ok") == "ok <mask> ."
    pair = custom_task(["yes", "no"], pair=True)
    assert pair.is_pair and pair.metrics == ("accuracy",)  # F1 only when asked for
    assert custom_task(["yes", "no"], metrics=("accuracy", "f1")).primary_metric == "f1"
    assert pair.prompt("q", "s") == "q ? <mask> , s"


def test_fingerprint_is_stable_and_changes_with_spec():
    spec = get_task("sst2")
    assert spec.fingerprint == get_task("SST-2").fingerprint
    assert dataclasses.replace(spec, version=2).fingerprint != spec.fingerprint
    assert dataclasses.replace(spec, label_words=("bad", "good")).fingerprint != spec.fingerprint
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("kwargs,message", [
    ({"labels": ("a",)}, "at least two labels"),
    ({"labels": ("a", "a")}, "distinct"),
    ({"labels": ("a", " ")}, "non-empty"),
    ({"label_words": ("x",)}, "one entry per label"),
    ({"template": "{text_a} It was ."}, "exactly one"),
    ({"template": "{text_a} {mask} {text_b}"}, "text_b"),
    ({"metrics": ("auc",)}, "metrics"),
    ({"labels": ("a", "b", "c"), "label_words": ("x", "y", "z"),
      "label_descriptions": ("1", "2", "3"), "metrics": ("f1",)}, "binary"),
])
def test_spec_validation(kwargs, message):
    base = {"name": "t", "labels": ("a", "b"), "text_fields": ("s",),
            "template": "{text_a} {mask} .", "label_words": ("x", "y"),
            "label_descriptions": ("X.", "Y.")}
    with pytest.raises(LorankError, match=message):
        TaskSpec(**{**base, **kwargs})


def test_parse_labels():
    assert parse_labels("neg, pos,") == ("neg", "pos")
    assert parse_labels(["0", 1]) == ("0", "1")
    with pytest.raises(LorankError, match="at least two"):
        parse_labels("neg")
    with pytest.raises(LorankError, match="distinct"):
        parse_labels("a,b,a")
    with pytest.raises(LorankError, match="text_b is required"):
        get_task("rte").prompt("only a")
