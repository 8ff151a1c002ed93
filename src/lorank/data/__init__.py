"""Few-shot task data: task registry, one data type, LM-BFF sampling and loaders.

>>> from lorank.data import load_task
>>> data = load_task("sst2", k=16, seed=42)          # LM-BFF folder, pool or hub
>>> data.N, data.K, data.task.label_descriptions
(32, 2, ('It was terrible.', 'It was great.'))

Everything loads into :class:`FewShotData` (train/dev/test :class:`Split`), whatever the source:
an LM-BFF ``k-shot`` folder, a local pool resampled with LM-BFF's exact procedure, the Hugging
Face hub, or a user's CSV/TSV/JSONL file (:func:`load_custom`; :class:`DataSource` and
:func:`load_source` describe and load one for the CLI and sweep specs). No heavy imports
(``datasets`` is imported only by the hub loader, when called).
"""

from __future__ import annotations

from lorank.data.custom import load_custom
from lorank.data.dataset import FewShotData, Split, majority_rate
from lorank.data.hub import from_hub_splits, load_hub
from lorank.data.lmbff import load_lmbff, load_pool
from lorank.data.load import ENV_DATA_DIR, SOURCES, load_task, resolve_data_dir
from lorank.data.sampling import SEEDS, cap_test, lmbff_order, lmbff_sample
from lorank.data.source import DataSource, load_source
from lorank.data.tasks import (
    BUILTIN_TASKS,
    REGISTRY,
    HubSource,
    LmbffFiles,
    TaskRegistry,
    TaskSpec,
    custom_task,
    get_task,
    label_order,
    parse_label_words,
    parse_labels,
    register_task,
    task_names,
)

__all__ = [
    "BUILTIN_TASKS",
    "ENV_DATA_DIR",
    "REGISTRY",
    "SEEDS",
    "SOURCES",
    "DataSource",
    "FewShotData",
    "HubSource",
    "LmbffFiles",
    "Split",
    "TaskRegistry",
    "TaskSpec",
    "cap_test",
    "custom_task",
    "from_hub_splits",
    "get_task",
    "label_order",
    "lmbff_order",
    "lmbff_sample",
    "load_custom",
    "load_hub",
    "load_lmbff",
    "load_pool",
    "load_source",
    "load_task",
    "majority_rate",
    "parse_label_words",
    "parse_labels",
    "register_task",
    "resolve_data_dir",
    "task_names",
]
