"""LM-BFF folders and pool resampling on the real data in LORANK_DATA_DIR."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lorank.data import SEEDS, get_task, load_lmbff, load_pool, load_task, majority_rate
from lorank.errors import LorankError

PUBLISHED = {  # task: (train, dev, test) rows, data/README.md
    "SST-2": (32, 32, 872), "QNLI": (32, 32, 5463), "MRPC": (32, 32, 408),
    "RTE": (32, 32, 277), "MNLI": (48, 48, 9815),
}


@pytest.mark.parametrize("task", sorted(PUBLISHED))
@pytest.mark.parametrize("seed", SEEDS)
def test_published_counts_and_balance(data_dir, task, seed):
    data = load_task(task, k=16, seed=seed, data_dir=data_dir)
    assert data.source.startswith("lmbff:") and data.k == 16 and data.seed == seed
    assert (len(data.train), len(data.dev), len(data.test)) == PUBLISHED[task]
    assert PUBLISHED[task][0] == data.N and data.K == get_task(task).K
    assert data.train.counts(data.K).tolist() == [16] * data.K
    assert data.dev.counts(data.K).tolist() == [16] * data.K
    assert majority_rate(data.train) == pytest.approx(1 / data.K)
    assert (data.train.text_b is None) == (task == "SST-2")
    assert not set(data.train.keys()) & set(data.test.keys())
    assert not set(data.train.keys()) & set(data.dev.keys())


def test_quirks_read_the_right_columns(data_dir):
    mrpc = load_task("mrpc", 16, 42, data_dir)  # BOM + label-first columns
    assert mrpc.train.text_a[0].startswith("Tibco has used the Rendezvous name since 1994")
    assert mrpc.train.text_b[0].endswith("it said .")
    assert mrpc.train.labels[0] == get_task("mrpc").label_index("1")
    mnli = load_task("mnli", 16, 42, data_dir)  # 12 columns, parse columns empty in test
    assert (mnli.train.text_a[0], mnli.train.text_b[0]) == ("That's all right.", "That's fine.")
    assert mnli.test.text_a[0] == "The new rights are nice enough"
    assert mnli.test.labels[0] == get_task("mnli").label_index("neutral")
    qnli = load_task("qnli", 16, 42, data_dir)
    assert qnli.train.text_a[0] == "In what year did Robert Louis Stevenson die?"
    sst2 = load_task("sst2", 16, 42, data_dir)
    assert sst2.train.text_a[0] == "... overly melodramatic ..."
    assert sst2.test.counts(2).tolist() == [428, 444]
    assert majority_rate(sst2.test) == pytest.approx(444 / 872)


def test_test_is_identical_across_seeds(data_dir):
    a, b = (load_task("rte", 16, s, data_dir) for s in (13, 100))
    assert a.test == b.test and a.train != b.train


def test_test_cap(data_dir):
    data = load_task("qnli", 16, 42, data_dir, test_max=1000)
    full = load_task("qnli", 16, 42, data_dir)
    assert len(data.test) == 1000 and data.meta["test_rows_full"] == 5463
    assert set(data.test.keys()) <= set(full.test.keys())
    assert load_task("rte", 16, 42, data_dir, test_max=1000).test == \
        load_task("rte", 16, 42, data_dir).test  # 277 rows < cap: unchanged


@pytest.mark.parametrize("task", sorted(PUBLISHED))
@pytest.mark.parametrize("k", [16, 64, 512])
def test_pool_resampling_counts(data_dir, task, k):
    data = load_task(task, k=k, seed=13, data_dir=data_dir, source="pool")
    K = get_task(task).K
    assert data.source.startswith("pool:") and k * K == data.N
    assert data.train.counts(K).tolist() == [k] * K and data.dev.counts(K).tolist() == [k] * K
    keys_train, keys_dev = set(data.train.keys()), set(data.dev.keys())
    assert len(keys_train) == k * K and not keys_train & keys_dev
    assert not (keys_train | keys_dev) & set(data.test.keys())
    assert len(data.test) == PUBLISHED[task][2]


def test_pool_resampling_is_deterministic(data_dir):
    a = load_pool("sst2", 64, 21, data_dir)
    b = load_pool("sst2", 64, 21, data_dir)
    c = load_pool("sst2", 64, 87, data_dir)
    assert a.train == b.train and a.dev == b.dev
    assert a.train != c.train
    assert a.meta["duplicates"] == 9 and a.meta["pool_rows_used"] == 6910


def test_auto_prefers_folder_then_pool(data_dir):
    assert load_task("rte", 16, 42, data_dir).source.startswith("lmbff:")
    assert load_task("rte", 64, 42, data_dir).source.startswith("pool:")
    assert load_task("rte", 64, 42, data_dir / "k-shot").source.startswith("pool:")


def test_pool_dedups_against_test(data_dir, tmp_path):
    """A pool row equal to a test row is never sampled."""
    root = tmp_path / "data"
    shutil.copytree(data_dir / "k-shot" / "RTE", root / "k-shot" / "RTE")
    (root / "pool").mkdir()
    test = load_task("rte", 16, 42, data_dir).test
    lines = (data_dir / "pool" / "RTE.jsonl").read_text(encoding="utf-8").splitlines()
    import json
    leaked = [json.dumps({"text_a": a, "text_b": b, "label": get_task("rte").labels[y]})
              for a, b, y in zip(test.text_a, test.text_b, test.labels, strict=True)]
    (root / "pool" / "RTE.jsonl").write_text("\n".join(leaked + lines) + "\n", encoding="utf-8")
    data = load_pool("rte", 512, 42, root)
    assert data.meta["test_overlap"] == len(test)
    assert not (set(data.train.keys()) | set(data.dev.keys())) & set(test.keys())


def test_truncated_folder_is_rejected(data_dir, tmp_path):
    folder = tmp_path / "k-shot" / "SST-2" / "16-42"
    shutil.copytree(data_dir / "k-shot" / "SST-2" / "16-42", folder)
    lines = (folder / "train.tsv").read_text(encoding="utf-8").splitlines()
    (folder / "train.tsv").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(LorankError, match=r"train.tsv: 31 rows \(0: 16, 1: 15\); an LM-BFF "
                                          r"16-shot train split has 16 per class"):
        load_lmbff("sst2", 16, 42, tmp_path)
    shutil.copy(data_dir / "k-shot" / "SST-2" / "16-42" / "train.tsv", folder / "train.tsv")
    test_lines = (folder / "test.tsv").read_text(encoding="utf-8").splitlines()
    (folder / "test.tsv").write_text("\n".join(test_lines[:100]) + "\n", encoding="utf-8")
    with pytest.raises(LorankError, match="99 rows, expected 872"):
        load_lmbff("sst2", 16, 42, tmp_path)


def test_missing_folder_and_pool(data_dir, tmp_path):
    with pytest.raises(LorankError, match=r"16-7: no such LM-BFF split folder"):
        load_task("sst2", 16, 7, data_dir, source="lmbff")
    with pytest.raises(LorankError, match=r"pool/SST-2.jsonl: no pool file"):
        load_pool("sst2", 16, 42, tmp_path)
    (tmp_path / "pool").mkdir()
    shutil.copy(data_dir / "pool" / "SST-2.jsonl", tmp_path / "pool")
    with pytest.raises(LorankError, match="no test file"):
        load_pool("sst2", 16, 42, tmp_path)


def test_labels_are_indices(data_dir):
    data = load_task("mnli", 16, 42, data_dir)
    assert data.train.labels.dtype == np.int64
    assert set(data.test.labels.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError):
        data.train.labels[0] = 1  # read-only
