"""lorank.progress: one progress library (tqdm); --no-progress also silences transformers'
per-model "Loading weights" bars, in-process and in spawned workers (environment)."""

from __future__ import annotations

import os

import pytest

from lorank.cli.main import main
from lorank.progress import ENV, bar, library_progress


def test_library_progress_switches_transformers_and_restores(bars_on):
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    env = os.environ.get(ENV)
    with library_progress(False):
        assert not hf_logging.is_progress_bar_enabled() and os.environ[ENV] == "1"
        assert are_progress_bars_disabled()
    assert hf_logging.is_progress_bar_enabled() and os.environ.get(ENV) == env
    assert not are_progress_bars_disabled()
    with library_progress(True):
        assert hf_logging.is_progress_bar_enabled()


def test_bar_is_tqdm_and_silent_when_disabled(capsys):
    from tqdm import tqdm

    with bar(3, "stage", enabled=False) as b:
        assert isinstance(b, tqdm)
        b.update(3)
    assert capsys.readouterr().err == ""


def _train(tiny, data_dir, *extra):
    return ["train", "--mode", "linearized", "--task", "sst2", "--model", tiny, "--data-dir",
            str(data_dir), "--ranks", "1", "--seeds", "13", "--steps", "2", "--eval-every", "1",
            "--lrs", "0.01", "--test-max", "8", "--no-cache", "--json", *extra]


@pytest.fixture()
def bars_on():
    """transformers' bars on for the test (another command, e.g. zeroshot, may have switched
    them off in this process), restored afterwards."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    yield
    if not before:
        hf_logging.disable_progress_bar()


@pytest.mark.parametrize("quiet", [True, False])
def test_no_progress_silences_loading_weights(tiny, data_dir, capfd, bars_on, quiet):
    main(_train(tiny, data_dir, *(["--no-progress"] if quiet else [])))
    err = capfd.readouterr().err
    if quiet:
        assert "Loading weights" not in err and "%|" not in err
    else:  # the control: the same command draws transformers' bar without the flag
        assert "Loading weights" in err
