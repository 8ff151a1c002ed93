"""The training settings both engines share (lorank.training.TrainSettings) and its subclasses."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest

from lorank.errors import LorankError
from lorank.finetune.config import LoraTraining
from lorank.linearized.train import LinearizedTraining
from lorank.training import TrainSettings

ENGINES = [LinearizedTraining, LoraTraining]


@pytest.mark.parametrize("cls", ENGINES)
def test_engine_settings_share_the_base(cls):
    s = cls(steps=7)
    assert isinstance(s, TrainSettings)
    shared = {f.name for f in fields(TrainSettings)}
    assert shared <= set(s.to_dict())


@pytest.mark.parametrize("cls", ENGINES)
def test_numpy_integers_are_stored_as_python_ints(cls):
    s = cls(steps=np.int64(12), eval_every=np.int32(3), batch_size=np.int64(4),
            optimizer="sgd")
    assert all(type(getattr(s, k)) is int for k in ("steps", "eval_every", "batch_size"))
    json.dumps(s.to_dict())  # would raise on a numpy integer


@pytest.mark.parametrize("cls", ENGINES)
def test_settings_are_keyword_only(cls):
    with pytest.raises(TypeError):
        cls(100)


@pytest.mark.parametrize("cls, kwargs, match", [
    (LinearizedTraining, {"steps": None}, "steps must be a positive integer"),
    (LinearizedTraining, {"steps": True}, "steps must be a positive integer"),
    (LoraTraining, {"epochs": 0}, "epochs must be a positive integer"),
    (LoraTraining, {"optimizer": "gd", "batch_size": 4}, "full-batch"),
    (LoraTraining, {"eval_every": 2.5}, "eval_every must be a positive integer"),
    (LoraTraining, {"weight_decay": float("inf")}, "weight_decay must be a finite number"),
])
def test_bad_settings_are_one_line_errors(cls, kwargs, match):
    with pytest.raises(LorankError, match=match):
        cls(**kwargs)


def test_eval_steps_needs_a_step_count():
    assert LoraTraining(steps=4, eval_every=2).eval_steps() == frozenset({0, 1, 2, 4})
    assert LoraTraining(epochs=1, eval_every=2).eval_steps(3) == frozenset({0, 1, 2, 3})
    with pytest.raises(LorankError, match="number of steps"):
        LoraTraining(epochs=1).eval_steps()
