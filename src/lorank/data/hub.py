"""Load a registered task from the Hugging Face hub (``datasets``) with LM-BFF sampling.

train/dev are sampled from the hub's train split with :func:`~lorank.data.sampling.lmbff_sample`
(no de-duplication, exactly as LM-BFF), test is the hub's validation split
(``validation_matched`` for MNLI). For QNLI, RTE and MNLI the hub keeps GLUE's row order, so the
sample equals LM-BFF's published splits; the hub's ``glue/sst2`` is the phrase-level GLUE train
(67k rows), not LM-BFF's 6.9k-sentence file, so SST-2 samples differ from the published ones.

Offline (``HF_HUB_OFFLINE=1``/``HF_DATASETS_OFFLINE=1`` and nothing cached, or the hub host
unreachable) fails at once with one line that names ``--data-dir`` / ``LORANK_DATA_DIR``,
instead of ``datasets``' ~25 s of retries.
"""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlparse

import numpy as np

from lorank.data.dataset import FewShotData, Split
from lorank.data.sampling import cap_test, remove_overlap, sample_splits
from lorank.data.tasks import HubSource, TaskSpec, get_task
from lorank.errors import LorankError

_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set to a true value."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub host (``HF_ENDPOINT`` or huggingface.co) opens within
    ``timeout`` seconds; True when an HTTPS proxy is configured (the proxy decides)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443),
                                      timeout=timeout):
            return True
    except OSError:
        return False


def offline_message(spec: TaskSpec, reason: str, hint: str = "") -> str:
    """The one-line error for an unreachable hub, naming the data-directory option."""
    hub = spec.hub
    target = f"{hub.path}/{hub.name}" if hub else spec.name
    extra = f" ({hint})" if hint else ""
    return (f"cannot load {target} from the Hugging Face hub: {reason}{extra}; pass --data-dir "
            f"DIR or set LORANK_DATA_DIR to a folder holding k-shot/{spec.name}/ (LM-BFF layout)")


def hf_to_split(hf_split: Any, hub: HubSource, name: str, source: str) -> Split:
    """Convert a ``datasets.Dataset`` (columns ``hub.text_columns`` + ``hub.label_column``)
    into a Split; hub label ids are lorank label indices (label orders are aligned)."""
    columns = list(hf_split.column_names)
    for column in (*hub.text_columns, hub.label_column):
        if column not in columns:
            raise LorankError(f"{source}: no column {column!r} in the hub split {name!r} "
                              f"(columns: {', '.join(columns)})")
    labels = np.asarray(hf_split[hub.label_column], dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(hub.label_names)):
        raise LorankError(f"{source}: split {name!r} has label ids outside 0..."
                          f"{len(hub.label_names) - 1} (unlabelled GLUE test split?)")
    texts = [tuple(str(t) for t in hf_split[c]) for c in hub.text_columns]
    return Split(name=name, text_a=texts[0], text_b=texts[1] if len(texts) == 2 else None,
                 labels=labels, source=source)


def _check_label_names(hf_split: Any, hub: HubSource, source: str) -> None:
    feature = getattr(hf_split, "features", {}).get(hub.label_column)
    names = getattr(feature, "names", None)
    if names is not None and tuple(names) != hub.label_names:
        raise LorankError(f"{source}: hub label names {list(names)} differ from the expected "
                          f"{list(hub.label_names)}; the hub data set changed")


def from_hub_splits(
    spec: TaskSpec, dataset: Any, k: int, seed: int, *, test_max: int | None = None
) -> FewShotData:
    """LM-BFF sample from an already loaded ``DatasetDict`` (train -> train/dev, validation ->
    test). Split out of :func:`load_hub` so it runs on local ``datasets`` objects."""
    hub = spec.hub
    if hub is None:
        raise LorankError(f"task {spec.name} has no Hugging Face hub source")
    source = f"hub:{hub.path}/{hub.name}"
    for split in (hub.train_split, hub.test_split):
        if split not in dataset:
            raise LorankError(f"{source}: no split {split!r} (splits: {', '.join(dataset)})")
    _check_label_names(dataset[hub.train_split], hub, source)
    pool = hf_to_split(dataset[hub.train_split], hub, "pool", f"{source}[{hub.train_split}]")
    test = hf_to_split(dataset[hub.test_split], hub, "test", f"{source}[{hub.test_split}]")
    pool, stats = remove_overlap(pool, test, dedup=False)
    train, dev = sample_splits(pool, spec.K, k, seed, label_names=spec.labels)
    meta = {**stats, "test_rows_full": len(test), "test_max": test_max}
    return FewShotData(task=spec, train=train, dev=dev, test=cap_test(test, test_max), k=k,
                       seed=seed, source=source, meta=meta)


def load_hub(
    task: str | TaskSpec,
    k: int,
    seed: int,
    *,
    test_max: int | None = None,
    hint: str = "",
) -> FewShotData:
    """Download (or read from the ``datasets`` cache) a GLUE task and draw the LM-BFF sample.

    Fails fast with a one-line LorankError when offline; ``hint`` is added to that message
    (e.g. which data directory was searched first).
    """
    spec = get_task(task)
    if spec.hub is None:
        raise LorankError(f"task {spec.name} has no Hugging Face hub source; use --data-dir "
                          "or --data")
    if not hub_offline() and not hub_reachable():
        raise LorankError(offline_message(spec, "the hub is unreachable (no network)", hint))
    try:
        import datasets

        dataset = datasets.load_dataset(spec.hub.path, spec.hub.name)
    except Exception as exc:  # datasets raises ConnectionError, OSError, FileNotFoundError …
        reason = "offline mode (HF_HUB_OFFLINE=1) and no cached copy" if hub_offline() else (
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise LorankError(offline_message(spec, reason, hint)) from None
    return from_hub_splits(spec, dataset, k, seed, test_max=test_max)
