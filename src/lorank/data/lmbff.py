"""Load LM-BFF-layout data folders and resample k-shot splits from a local pool.

Layout (Gao et al. 2021; reused by LM-Kernel-FT and LoRA-NTK)::

    <data_dir>/k-shot/<TASK>/<k>-<seed>/train.tsv   k examples per class
    <data_dir>/k-shot/<TASK>/<k>-<seed>/dev.tsv     the next k per class (MNLI: dev_matched.tsv)
    <data_dir>/k-shot/<TASK>/<k>-<seed>/test.tsv    the original GLUE dev set (MNLI: test_matched)
    <data_dir>/pool/<TASK>.jsonl                    {"text_a", "text_b", "label"} per line

Files are read by header name (MRPC puts its label first, SST-2 last), with ``QUOTE_NONE`` and
the UTF-8 BOM removed, and every split's row count and class balance is checked (train and dev
k per class; test the GLUE dev size in :attr:`LmbffFiles.test_rows`).
"""

from __future__ import annotations

import re
from pathlib import Path

from lorank.data.dataset import FewShotData, Split
from lorank.data.readers import read_labelled
from lorank.data.sampling import cap_test, remove_overlap, sample_splits
from lorank.data.tasks import LmbffFiles, TaskSpec, get_task
from lorank.errors import LorankError


def _files(task: TaskSpec) -> LmbffFiles:
    if task.lmbff is None:
        raise LorankError(f"task {task.name} has no LM-BFF folder layout; load it with "
                          "load_custom or from the hub")
    return task.lmbff


def kshot_root(data_dir: str | Path) -> Path:
    """The ``k-shot`` folder: ``data_dir/k-shot``, or ``data_dir`` itself if it is one."""
    data_dir = Path(data_dir)
    return data_dir if data_dir.name == "k-shot" else data_dir / "k-shot"


def split_dir(data_dir: str | Path, task: str | TaskSpec, k: int, seed: int) -> Path:
    """``<data_dir>/k-shot/<TASK>/<k>-<seed>``."""
    return kshot_root(data_dir) / _files(get_task(task)).folder / f"{k}-{seed}"


def has_split(data_dir: str | Path, task: str | TaskSpec, k: int, seed: int) -> bool:
    """Whether the LM-BFF folder for (task, k, seed) exists with its train file."""
    spec = get_task(task)
    return spec.lmbff is not None and (split_dir(data_dir, spec, k, seed) / "train.tsv").is_file()


def pool_file(data_dir: str | Path, task: str | TaskSpec) -> Path:
    """``<data_dir>/pool/<TASK>.jsonl`` (the larger labelled pool)."""
    data_dir = Path(data_dir)
    root = data_dir.parent if data_dir.name == "k-shot" else data_dir
    return root / "pool" / f"{_files(get_task(task)).folder}.jsonl"


def _check_balanced(split: Split, task: TaskSpec, k: int) -> None:
    """train/dev of an LM-BFF k-shot folder: k·K rows, exactly k per class."""
    counts = split.counts(task.K)
    if len(split) != k * task.K or any(c != k for c in counts):
        shown = ", ".join(f"{lab}: {c}" for lab, c in zip(task.labels, counts, strict=True))
        raise LorankError(f"{split.source}: {len(split)} rows ({shown}); an LM-BFF {k}-shot "
                          f"{split.name} split has {k} per class x {task.K} = {k * task.K}")


def _read(path: Path, name: str, task: TaskSpec) -> Split:
    """Split ``name`` of an LM-BFF folder (a TSV file read by the task's header names)."""
    files = _files(task)
    return read_labelled(path, name=name, text_columns=files.text_columns, fmt="tsv",
                         label_column=files.label_column, labels=task.labels, user_file=False)[0]


def read_test(path: Path, task: TaskSpec) -> Split:
    """The test split of an LM-BFF folder (row count checked)."""
    split, rows = _read(path, "test", task), _files(task).test_rows
    if rows is not None and len(split) != rows:
        raise LorankError(f"{split.source}: {len(split)} rows, expected {rows} "
                          "(the original GLUE dev set); the file is truncated or not LM-BFF's")
    return split


def load_lmbff(
    task: str | TaskSpec,
    k: int,
    seed: int,
    data_dir: str | Path,
    *,
    test_max: int | None = None,
) -> FewShotData:
    """The published LM-BFF split ``k-shot/<TASK>/<k>-<seed>`` as FewShotData.

    N = k·K training rows; counts and balance are checked. ``test_max`` caps the test split
    MeZO-style (seed-42 shuffle, first ``test_max`` rows).
    """
    spec = get_task(task)
    files = _files(spec)
    folder = split_dir(data_dir, spec, k, seed)
    if not folder.is_dir():
        raise LorankError(f"{folder}: no such LM-BFF split folder (task {spec.name}, k={k}, "
                          f"seed={seed}); check --data-dir / LORANK_DATA_DIR")
    train = _read(folder / "train.tsv", "train", spec)
    dev = _read(folder / files.dev_file, "dev", spec)
    _check_balanced(train, spec, k)
    _check_balanced(dev, spec, k)
    test = read_test(folder / files.test_file, spec)
    return FewShotData(task=spec, train=train, dev=dev, test=cap_test(test, test_max), k=k,
                       seed=seed, source=f"lmbff:{folder}",
                       meta={"test_rows_full": len(test), "test_max": test_max})


def find_test_file(data_dir: str | Path, task: str | TaskSpec) -> Path | None:
    """A test file of any ``<k>-<seed>`` folder of the task (LM-BFF copies the same GLUE dev
    set into every folder), preferring 16-42; None if there is none."""
    spec = get_task(task)
    files = _files(spec)
    base = kshot_root(data_dir) / files.folder
    if not base.is_dir():
        return None
    folders = sorted(p for p in base.iterdir() if re.fullmatch(r"\d+-\d+", p.name))
    folders.sort(key=lambda p: p.name != "16-42")
    for folder in folders:
        if (folder / files.test_file).is_file():
            return folder / files.test_file
    return None


def read_pool(task: str | TaskSpec, data_dir: str | Path, *, need_test: bool = False
              ) -> tuple[Split, dict[str, int], Split | None, Path | None]:
    """The de-duplicated pool of a task: ``pool/<TASK>.jsonl`` without repeated texts and
    without texts of the task's test split (file order kept); the removal counts; the test
    split and its file (None if there is none; LorankError then when ``need_test``)."""
    spec = get_task(task)
    path = pool_file(data_dir, spec)
    if not path.is_file():
        raise LorankError(f"{path}: no pool file for task {spec.name}; check --data-dir / "
                          "LORANK_DATA_DIR")
    test_path = find_test_file(data_dir, spec)
    if test_path is None and need_test:
        raise LorankError(f"{kshot_root(data_dir) / _files(spec).folder}: no test file; pool "
                          "resampling takes its test split from an LM-BFF folder")
    test = read_test(test_path, spec) if test_path is not None else None
    pool = read_labelled(path, name="pool", labels=spec.labels, label_column="label",
                         text_columns=("text_a", "text_b") if spec.is_pair else ("text_a",),
                         user_file=False)[0]
    return *remove_overlap(pool, test, dedup=True), test, test_path


def pool_sample(task: str | TaskSpec, n: int, seed: int, data_dir: str | Path) -> Split:
    """n rows of the de-duplicated pool (:func:`read_pool`) in LM-BFF's shuffled order for
    ``seed`` (:func:`~lorank.data.sampling.lmbff_order`): texts for controls that relabel their
    examples (the planted teacher); the pool's own labels come along unused."""
    from lorank.data.sampling import lmbff_order

    pool = read_pool(task, data_dir)[0]
    if n > len(pool):
        raise LorankError(f"the {get_task(task).name} pool has {len(pool)} rows; {n} requested")
    return pool.subset(lmbff_order(len(pool), seed)[:n], name="sample")


def load_pool(
    task: str | TaskSpec,
    k: int,
    seed: int,
    data_dir: str | Path,
    *,
    test_max: int | None = None,
) -> FewShotData:
    """A fresh LM-BFF k-shot sample (k = 16, 64, 512, …) from ``pool/<TASK>.jsonl``.

    The pool is first de-duplicated (repeated texts, and texts that occur in the test split are
    removed, order kept), then sampled with :func:`~lorank.data.sampling.lmbff_sample`; test is
    the GLUE dev set of the task's LM-BFF folder. Deterministic per (k, seed).
    """
    spec = get_task(task)
    pool, stats, test, test_path = read_pool(spec, data_dir, need_test=True)
    train, dev = sample_splits(pool, spec.K, k, seed, label_names=spec.labels)
    meta = {**stats, "pool_rows_used": len(pool), "test_file": str(test_path),
            "test_rows_full": len(test), "test_max": test_max}
    return FewShotData(task=spec, train=train, dev=dev, test=cap_test(test, test_max), k=k,
                       seed=seed, source=f"pool:{pool_file(data_dir, spec)}", meta=meta)
