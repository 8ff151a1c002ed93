"""Hugging Face hub loader: the offline error path, and the sampling on local datasets objects."""

from __future__ import annotations

import time

import pytest

from lorank.data import from_hub_splits, get_task, lmbff_sample, load_hub, load_task
from lorank.data.hub import hub_offline, hub_reachable
from lorank.errors import LorankError


def test_offline_fails_fast_naming_data_dir(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LORANK_DATA_DIR", raising=False)
    assert hub_offline()
    start = time.perf_counter()
    with pytest.raises(LorankError) as exc:
        load_task("rte", 16, 42)
    assert time.perf_counter() - start < 15
    message = str(exc.value)
    assert "\n" not in message and "cannot load glue/rte" in message
    assert "--data-dir" in message and "LORANK_DATA_DIR" in message
    assert "LORANK_DATA_DIR is unset" in message


def test_unreachable_hub_fails_fast(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    assert not hub_reachable(timeout=1.0)
    start = time.perf_counter()
    with pytest.raises(LorankError, match=r"hub is unreachable.*--data-dir"):
        load_hub("sst2", 16, 42)
    assert time.perf_counter() - start < 5


def test_auto_falls_back_to_hub_with_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LorankError, match=r"neither .*k-shot/MNLI/64-13 nor .*pool/MNLI.jsonl "
                                          r"exists"):
        load_task("mnli", 64, 13, data_dir=tmp_path)


def _dataset_dict(data_dir, task: str):
    """The task's local pool and test as a ``datasets.DatasetDict`` shaped like glue/<task>."""
    datasets = pytest.importorskip("datasets")
    spec = get_task(task)
    pool = load_task(task, 64, 13, data_dir, source="pool")
    from lorank.data.readers import read_labelled
    full_pool = read_labelled(data_dir / "pool" / f"{spec.lmbff.folder}.jsonl", name="pool",
                              text_columns=("text_a", "text_b")[: len(spec.text_fields)],
                              label_column="label", labels=spec.labels)[0]
    features = datasets.Features({
        **{c: datasets.Value("string") for c in spec.hub.text_columns},
        "label": datasets.ClassLabel(names=list(spec.hub.label_names))})

    def as_hf(split):
        cols = {spec.hub.text_columns[0]: list(split.text_a), "label": split.labels.tolist()}
        if split.text_b is not None:
            cols[spec.hub.text_columns[1]] = list(split.text_b)
        return datasets.Dataset.from_dict(cols, features=features)

    return datasets.DatasetDict({"train": as_hf(full_pool),
                                 spec.hub.test_split: as_hf(pool.test)}), full_pool


@pytest.mark.parametrize("task", ["rte", "mnli"])
def test_hub_sampling_on_local_pool(data_dir, task):
    dsd, full_pool = _dataset_dict(data_dir, task)
    spec = get_task(task)
    data = from_hub_splits(spec, dsd, 16, 87, test_max=100)
    train_idx, dev_idx = lmbff_sample(full_pool.labels, 16, 87)  # no dedup on hub data
    assert data.train == full_pool.subset(train_idx, "train")
    assert data.dev == full_pool.subset(dev_idx, "dev")
    assert data.source == f"hub:glue/{spec.hub.name}" and len(data.test) == 100
    assert data.train.counts(spec.K).tolist() == [16] * spec.K
    assert data.meta["test_overlap"] == 0 and data.meta["duplicates"] == 0


def test_hub_checks_label_names_and_unlabelled(data_dir):
    datasets = pytest.importorskip("datasets")
    spec = get_task("rte")
    bad = datasets.Dataset.from_dict(
        {"sentence1": ["a"], "sentence2": ["b"], "label": [0]},
        features=datasets.Features({"sentence1": datasets.Value("string"),
                                    "sentence2": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["yes", "no"])}))
    with pytest.raises(LorankError, match="hub label names"):
        from_hub_splits(spec, datasets.DatasetDict({"train": bad, "validation": bad}), 1, 1)
    unlabelled = datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"],
                                             "label": [-1]})
    dsd, _ = _dataset_dict(data_dir, "rte")
    with pytest.raises(LorankError, match="label ids outside"):
        from_hub_splits(spec, datasets.DatasetDict({"train": dsd["train"],
                                                    "validation": unlabelled}), 16, 1)
    with pytest.raises(LorankError, match="no split 'validation'"):
        from_hub_splits(spec, datasets.DatasetDict({"train": dsd["train"]}), 16, 1)
