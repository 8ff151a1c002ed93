"""Shared fixtures: the data directory and quiet, single-threaded torch for fast CPU tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (reproducible CI); explore more locally with
# `pytest --hypothesis-seed=random` or HYPOTHESIS_PROFILE=explore.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> str:
    """A tiny random-init BERT saved to disk (its path), shared by the CLI tests."""
    from lorank.models.tiny import build_tiny_model

    return str(build_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert"))
