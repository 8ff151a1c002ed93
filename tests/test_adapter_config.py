"""One adapter configuration for both engines: validated, serialisable, one scaling rule."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lorank.errors import LorankError
from lorank.models.lora_shape import AdapterConfig, layers_json, parse_layers, scale


@given(ranks=st.lists(st.integers(1, 64), min_size=1, max_size=5, unique=True),
       alpha=st.one_of(st.none(), st.floats(0.1, 64)),
       scaling=st.sampled_from(["none", "lora", "rslora"]),
       layers=st.sampled_from(["all", "last", (0, -1)]))
def test_round_trip_and_scaling(ranks, alpha, scaling, layers):
    cfg = AdapterConfig(ranks=tuple(ranks), alpha=alpha, scaling=scaling, layers=layers)
    data = json.loads(json.dumps(cfg.to_dict()))
    for key in ("r", "lora_alpha", "s"):  # derived values of a single-rank adapter
        data.pop(key, None)
    assert AdapterConfig(**data) == cfg
    for r in ranks:
        s = cfg.s_at(r)
        assert s == scale(scaling, alpha, r)
        one = cfg.at(r)
        assert one.r == r and one.s == s
        # peft's lora_alpha reproduces s under peft's own rule (α/r, or α/√r with rsLoRA)
        peft_s = one.lora_alpha / (math.sqrt(r) if scaling == "rslora" else r)
        assert peft_s == pytest.approx(s)


def test_grid_has_no_single_rank():
    with pytest.raises(LorankError, match="one rank expected"):
        _ = AdapterConfig(ranks=(1, 2)).r


def test_defaults_are_the_rank_threshold_setting():
    cfg = AdapterConfig()
    assert (cfg.ranks, cfg.s, cfg.init, cfg.targets, cfg.layers) == (
        (1,), 1.0, "fan_in", ("query", "value"), "last")


@given(st.one_of(st.sampled_from(["all", "last"]),
                 st.lists(st.integers(-12, 11), min_size=1, max_size=6)))
def test_layers_json_round_trips_through_parse_layers(layers):
    """The JSON form of a layer selection parses back to the same selection, and survives JSON."""
    sel = parse_layers(layers)
    as_json = layers_json(sel)
    assert parse_layers(json.loads(json.dumps(as_json))) == sel
    assert as_json == (layers if isinstance(layers, str) else list(layers))
