"""Sweep specs: validation errors name the key path; expansion counts; stable run ids."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lorank.errors import LorankError
from lorank.experiments import RunConfig, load_spec, parse_spec
from lorank.experiments.config import canonical_json

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "sweeps"

BASE = {
    "name": "t",
    "base": {"model": "minilm", "k": 16, "lrs": [0.01, 0.1], "layers": "last"},
    "grid": {"task": ["sst2", "rte"], "method": ["prescribe"], "rank": [1, 2, 4],
             "seed": [13, 42]},
}


def spec(**changes):
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        if value is _DELETE:
            node.pop(leaf)
        else:
            node[leaf] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(("changes", "message"), [
    ({"grid__rank": [1, 2, "a"]}, "grid.rank[2]: expected int, got 'a'"),
    ({"grid__rank": [1, True]}, "grid.rank[1]: expected int, got True"),
    ({"grid__rank": [0]}, "grid.rank[0]: must be >= 1, got 0"),
    ({"grid__rank": []}, "grid.rank: expected non-empty list, got list"),
    ({"grid__rank": 4}, "grid.rank: expected non-empty list, got 4"),
    ({"grid__ranks": [1]}, "grid.ranks: unknown key (did you mean 'rank'?)"),
    ({"base__modle": "minilm"}, "base.modle: unknown key (did you mean 'model'?)"),
    ({"base__lrs": [0.1, "x"]}, "base.lrs[1]: expected number, got 'x'"),
    ({"base__lrs": [0.1, -1]}, "base.lrs[1]: must be > 0, got -1"),
    ({"base__loss": "hinge"}, "base.loss: must be one of ce, mse, got 'hinge'"),
    ({"base__layers": "first"}, "base.layers: must be one of all, last, got 'first'"),
    ({"base__layers": [0, "x"]}, "base.layers[1]: expected int, got 'x'"),
    ({"base__targets": ["query", 3]}, "base.targets[1]: expected non-empty string, got 3"),
    ({"base__dtype": "float16"}, "base.dtype: must be one of float32, float64"),
    ({"base__test_cap": 0}, "base.test_cap: must be >= 1, got 0"),
    ({"base__options": [1]}, "base.options: expected mapping, got list"),
    ({"base": [1]}, "base: expected mapping, got list"),
    ({"grid__method": ["Bad-Name"]}, "grid.method[0]: invalid name 'Bad-Name'"),
    ({"nmae": "x"}, "nmae: unknown key (did you mean 'name'?)"),
    ({"name": _DELETE}, "name: missing required key"),
    ({"name": "a b"}, "name: invalid name 'a b'"),
    ({"grid__seed": _DELETE}, "grid: missing required field 'seed'"),
    ({"methods": {"lora": {"steps": 3}}}, "methods.lora: method not used by this sweep"),
    ({"methods": {"prescribe": {"rank": 3}}},
     "methods.prescribe.rank: 'rank' is a grid field; restrict it with methods.prescribe.only"),
    ({"methods": {"prescribe": {"only": {"rank": [1, "z"]}}}},
     "methods.prescribe.only.rank[1]: expected int, got 'z'"),
    ({"methods": {"prescribe": {"only": {"rnk": [1]}}}},
     "methods.prescribe.only.rnk: unknown key (did you mean 'rank'?)"),
    ({"exclude": [{"task": "sst2"}, {"seed": "x"}]}, "exclude[1].seed: expected int, got 'x'"),
    ({"exclude": {"task": "sst2"}}, "exclude: expected list, got dict"),
    ({"include": [{"method": "prescribe", "task": "rte", "seed": 1}]},
     "include[0]: missing required field 'rank'"),
    ({"include": [{"rank": -2}]}, "include[0].rank: must be >= 1, got -2"),
    ({"grid__rank": [100], "exclude": [{"rank": 100}]}, "the sweep expands to no runs"),
    ({"store": 5}, "store: expected non-empty string, got 5"),
    ({"report": {"margin": 1}}, "report.margin: must be in (0, 1)"),
    ({"report": {"margin": 0}}, "report.margin: must be > 0, got 0"),
    ({"report": {"margin": "x"}}, "report.margin: expected number, got 'x'"),
    ({"report": {"margni": 0.01}}, "report.margni: unknown key (did you mean 'margin'?)"),
    ({"report": [1]}, "report: expected mapping, got list"),
])
def test_validation_errors_name_the_key_path(changes, message):
    with pytest.raises(LorankError) as info:
        parse_spec(spec(**changes))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_report_settings():
    assert parse_spec(spec()).report.margin == 0.01  # default: 1 point
    assert parse_spec(spec(report={"margin": 0.02})).report.margin == 0.02
    assert parse_spec(spec(report={"margin": "5e-3"})).report.margin == 0.005
    assert load_spec(SWEEPS / "quick.yaml").report.margin == 0.01


def test_expansion_counts_and_fields():
    runs = parse_spec(spec()).runs
    assert len(runs) == 2 * 3 * 2
    assert {(c.task, c.rank, c.seed) for c in runs} == {
        (t, r, s) for t in ("sst2", "rte") for r in (1, 2, 4) for s in (13, 42)}
    first = runs[0]
    assert first.sweep == "t" and first.model == "minilm" and first.lrs == (0.01, 0.1)
    assert first.layers == "last" and first.targets == ("query", "value")


def test_only_exclude_include_and_overrides():
    data = spec(grid__method=["prescribe", "other"],
                methods={"other": {"steps": 7, "only": {"rank": [1], "task": "rte"}}},
                exclude=[{"task": "sst2", "rank": [2, 4], "method": "prescribe"}],
                include=[{"method": "other", "task": "sst2", "rank": 16, "seed": 5}])
    runs = parse_spec(data).runs
    other = [c for c in runs if c.method == "other"]
    presc = [c for c in runs if c.method == "prescribe"]
    assert {(c.task, c.rank, c.seed) for c in other} == {("rte", 1, 13), ("rte", 1, 42),
                                                        ("sst2", 16, 5)}
    assert all(c.steps == 7 for c in other) and all(c.steps == 1000 for c in presc)
    assert len(presc) == 12 - 4
    assert not [c for c in presc if c.task == "sst2" and c.rank in (2, 4)]


def test_include_entry_with_its_own_grid_expands_to_a_product():
    block = {"method": "prescribe", "task": "sst2", "k": 512, "seed": 13,
             "grid": {"loss": ["mse", "ce"], "rank": [1, 2, 16]}}
    runs = parse_spec(spec(include=[block])).runs
    extra = [c for c in runs if c.k == 512]
    assert len(runs) == 12 + 6 and len(extra) == 6
    assert {(c.loss, c.rank) for c in extra} == {(loss, r) for loss in ("mse", "ce")
                                                 for r in (1, 2, 16)}
    with pytest.raises(LorankError, match=r"include\[0\]\.grid\.rank\[0\]: must be >= 1"):
        parse_spec(spec(include=[{**block, "grid": {"rank": [0]}}]))
    with pytest.raises(LorankError, match=r"include\[0\]\.grid\.seed: also fixed"):
        parse_spec(spec(include=[{**block, "grid": {"seed": [1, 2]}}]))


def test_duplicates_are_dropped():
    data = spec(include=[{"method": "prescribe", "task": "sst2", "rank": 1, "seed": 13}])
    assert len(parse_spec(data).runs) == 12


def test_yaml_exponent_floats_and_int_lrs():
    text = yaml.safe_dump(spec()).replace("- 0.01", "- 1e-2")
    data = yaml.safe_load(text)
    assert data["base"]["lrs"][0] == "1e-2"  # PyYAML's YAML 1.1 reading
    assert parse_spec(data).runs[0].lrs == (0.01, 0.1)
    assert parse_spec(spec(base__lrs=[1])).runs[0].lrs == (1.0,)


def test_shipped_specs_expand():
    paper = load_spec(SWEEPS / "paper.yaml")
    engines = [c for c in paper.runs if c.method in ("linearized", "lora")]
    assert len(engines) == 5 * 2 * 2 * 6 * 5
    assert {c.head for c in engines if c.task == "sst2"} == {"verbalizer"}
    assert {c.head for c in engines if c.task != "sst2"} == {"pair"}
    assert len([c for c in paper.runs if c.method == "cstar"]) == 4
    quick = load_spec(SWEEPS / "quick.yaml")
    assert {c.steps for c in quick.runs if c.method == "cstar"} == {200, 300, 1000, 3000}
    lora = [c for c in quick.runs if c.method == "lora"]
    lin = [c for c in quick.runs if c.method == "linearized"]
    assert len(lin) == 5 * 6 * 5 and {c.model for c in lin + lora} == {"minilm"}
    assert {(c.task, c.rank, c.seed) for c in lora} == {
        (t, r, s) for t in ("sst2", "rte") for r in (1, 12) for s in (13, 42)}
    assert len({c.features_key for c in lin}) == 25
    # learning rates in units of the kernel step, for every engine and control
    assert {c.lr_unit for c in quick.runs if c.method != "cstar"} == {"eta0"}
    assert {c.lrs for c in lin} == {(0.1, 0.3, 1.0)}
    cap = [c for c in quick.runs if c.method == "capacity"]
    assert {(c.loss, c.rank) for c in cap} == {
        (loss, r) for loss in ("mse", "ce") for r in (1, 2, 4, 8, 12, 16)}
    planted = [c for c in quick.runs if c.method == "planted"]
    assert {(c.options.to_json()["teacher_rank"], c.options.to_json()["n_train"], c.rank)
            for c in planted} == {(s, n, r) for s, n in ((8, 1024), (1, 1024), (8, 32))
                                  for r in (1, 8)}
    assert {c.task for c in cap + planted} == {"sst2"}


def test_load_spec_file_errors(tmp_path):
    with pytest.raises(LorankError, match="sweep spec not found"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(LorankError, match="invalid spec file"):
        load_spec(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(LorankError, match="is empty"):
        load_spec(empty)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(LorankError, match="spec: expected mapping"):
        load_spec(listy)


def test_toml_spec_equals_yaml(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('name = "t"\n[base]\nmodel = "minilm"\nk = 16\nlrs = [0.01, 0.1]\n'
                    'layers = "last"\n[grid]\ntask = ["sst2", "rte"]\nmethod = ["prescribe"]\n'
                    "rank = [1, 2, 4]\nseed = [13, 42]\n")
    ids_toml = sorted(c.run_id for c in load_spec(toml).runs)
    assert ids_toml == sorted(c.run_id for c in parse_spec(spec()).runs)


def _shuffled(data, order):
    if isinstance(data, dict):
        keys = list(data)
        keys = [keys[i] for i in sorted(range(len(keys)), key=lambda i: order[i % len(order)])]
        return {k: _shuffled(data[k], order) for k in keys}
    return data


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=8))
def test_run_ids_do_not_depend_on_key_order(order):
    data = spec(base__options={"c_star": 1.2, "extra": {"b": 1, "a": [1, 2]}})
    reference = sorted(c.run_id for c in parse_spec(data).runs)
    assert sorted(c.run_id for c in parse_spec(_shuffled(data, order)).runs) == reference


def test_run_id_is_sha256_of_canonical_identity():
    import hashlib

    c = RunConfig(sweep="s", method="prescribe", task="sst2", model="minilm", rank=2, seed=13,
                  options={"z": 1, "a": [1.5]}, num_cpus=4)
    text = canonical_json(c.identity())
    assert c.run_id == hashlib.sha256(text.encode()).hexdigest()
    assert "num_cpus" not in text and text.index('"a"') < text.index('"z"')
    # resource hints do not change the id; every identity field does
    assert RunConfig(**{**c.to_dict(), "num_cpus": 1}).run_id == c.run_id
    for name, value in [("rank", 3), ("seed", 14), ("lrs", [0.06]), ("options", {"z": 2}),
                        ("layers", [5]), ("sweep", "s2"), ("test_cap", 10)]:
        assert RunConfig(**{**c.to_dict(), name: value}).run_id != c.run_id, name


def test_run_ids_stable_across_processes():
    quick = load_spec(SWEEPS / "quick.yaml")
    code = ("import json; from lorank.experiments import load_spec; "
            f"print(json.dumps([c.run_id for c in load_spec({str(SWEEPS / 'quick.yaml')!r})"
            ".runs]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin"})
    assert json.loads(out.stdout) == [c.run_id for c in quick.runs]


def test_config_roundtrip_and_features_key():
    c = parse_spec(spec()).runs[0]
    assert RunConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    other = RunConfig(**{**c.to_dict(), "rank": 16, "lrs": [0.5], "steps": 3})
    assert other.features_key == c.features_key
    assert RunConfig(**{**c.to_dict(), "seed": 99}).features_key != c.features_key
