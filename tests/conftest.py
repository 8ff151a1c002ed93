"""Shared fixtures: the data directory and quiet, single-threaded torch for fast CPU tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data (via LORANK_DATA_DIR); tests that need it skip when it is not set."""
    value = os.environ.get("LORANK_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("LORANK_DATA_DIR not set (point it at ../shared/data)")
    return Path(value)
