"""lorank.progress: one progress library (tqdm); --no-progress also silences transformers'
per-model "Loading weights" bars, in-process and in spawned workers (environment)."""

from __future__ import annotations

import os

import pytest

from lorank.cli.main import main
from lorank.progress import ENV, bar, library_progress


def test_library_progress_switches_transformers_and_restores():
    from transformers.utils import logging as hf_logging

    before, env = hf_logging.is_progress_bar_enabled(), os.environ.get(ENV)
    with library_progress(False):
        assert not hf_logging.is_progress_bar_enabled() and os.environ[ENV] == "1"
    assert hf_logging.is_progress_bar_enabled() == before and os.environ.get(ENV) == env
    with library_progress(True):
        assert hf_logging.is_progress_bar_enabled() == before


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


@pytest.mark.parametrize("quiet", [True, False])
def test_no_progress_silences_loading_weights(tiny, data_dir, capfd, quiet):
    main(_train(tiny, data_dir, *(["--no-progress"] if quiet else [])))
    err = capfd.readouterr().err
    if quiet:
        assert "Loading weights" not in err and "%|" not in err
    else:  # the control: the same command draws transformers' bar without the flag
        assert "Loading weights" in err
