"""One front door for the registered tasks: :func:`load_task`, and :func:`resolve_data_dir`.

The data directory comes from an explicit argument (the ``--data-dir`` flag) or the environment
variable ``LORANK_DATA_DIR``; it is never hard-coded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from lorank.data.dataset import FewShotData
from lorank.data.hub import load_hub
from lorank.data.lmbff import has_split, load_lmbff, load_pool, pool_file, split_dir
from lorank.data.tasks import TaskSpec, get_task
from lorank.errors import LorankError, check_choice

ENV_DATA_DIR = "LORANK_DATA_DIR"
Source = Literal["auto", "lmbff", "pool", "hub"]
SOURCES: tuple[str, ...] = ("auto", "lmbff", "pool", "hub")


def resolve_data_dir(flag: str | Path | None) -> Path | None:
    """The data directory: ``flag`` if given, else ``$LORANK_DATA_DIR``, else None.

    A given directory must exist (LorankError naming where it came from).
    """
    if flag is not None and str(flag).strip():
        origin, value = "--data-dir", str(flag)
    else:
        value = os.environ.get(ENV_DATA_DIR, "").strip()
        if not value:
            return None
        origin = ENV_DATA_DIR
    path = Path(value).expanduser()
    if not path.is_dir():
        raise LorankError(f"data directory {path} (from {origin}) does not exist or is not a "
                          "directory")
    return path


def _require_dir(data_dir: Path | None, source: str) -> Path:
    if data_dir is None:
        raise LorankError(f"source {source!r} needs a data directory: pass --data-dir DIR or "
                          f"set {ENV_DATA_DIR}")
    return data_dir


def load_task(
    task: str | TaskSpec,
    k: int = 16,
    seed: int = 42,
    data_dir: str | Path | None = None,
    source: Source = "auto",
    test_max: int | None = None,
) -> FewShotData:
    """Few-shot data for a registered task (LM-BFF protocol, Gao et al. 2021).

    Args:
        task: name or alias (``"sst2"``, ``"SST-2"``, ``"mnli"`` …) or a TaskSpec.
        k: examples per class in train (N = k·K) and in dev.
        seed: LM-BFF split seed (13, 21, 42, 87, 100).
        data_dir: data directory; None reads ``$LORANK_DATA_DIR``.
        source: ``"lmbff"`` the published folder ``k-shot/<TASK>/<k>-<seed>``; ``"pool"`` a fresh
            LM-BFF sample from ``pool/<TASK>.jsonl``; ``"hub"`` the Hugging Face hub; ``"auto"``
            the folder if present, else the pool if present, else the hub.
        test_max: cap the test split at this many rows (MeZO / Malladi et al.: 1000, seed 42).
    """
    spec = get_task(task)
    check_choice("source", source, SOURCES)
    directory = resolve_data_dir(data_dir)
    if source == "lmbff":
        return load_lmbff(spec, k, seed, _require_dir(directory, source), test_max=test_max)
    if source == "pool":
        return load_pool(spec, k, seed, _require_dir(directory, source), test_max=test_max)
    if source == "hub":
        return load_hub(spec, k, seed, test_max=test_max)
    if directory is not None and spec.lmbff is not None:
        if has_split(directory, spec, k, seed):
            return load_lmbff(spec, k, seed, directory, test_max=test_max)
        if pool_file(directory, spec).is_file():
            return load_pool(spec, k, seed, directory, test_max=test_max)
        hint = (f"neither {split_dir(directory, spec, k, seed)} nor {pool_file(directory, spec)} "
                "exists")
    else:
        hint = f"no data directory given and {ENV_DATA_DIR} is unset" if directory is None else ""
    return load_hub(spec, k, seed, test_max=test_max, hint=hint)
