"""``lorank sweep`` and ``lorank runs``: end to end on the real ``prescribe`` method, and the
one-line exit-2 errors for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lorank.cli.main import main

ROOT = Path(__file__).resolve().parents[1]

SPEC = {
    "name": "cli",
    "base": {"model": "minilm", "layers": "last"},
    "grid": {"method": ["prescribe"], "task": ["sst2", "mnli"], "rank": [1, 12],
             "seed": [13]},
}


def write_spec(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "store": str(tmp_path / "cli.sqlite"), **changes}))
    return path


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return info.value.code or 0, out.out, out.err


def test_sweep_then_runs_list_json_export(tmp_path, capsys):
    spec = write_spec(tmp_path)
    code, out, err = run_cli(["sweep", str(spec), "--no-progress"], capsys)
    assert code == 0, err
    assert "4 runs: 4 done, 0 failed" in out
    code, out, _ = run_cli(["sweep", str(spec), "--no-progress"], capsys)
    assert "4 skipped" in out
    store = str(tmp_path / "cli.sqlite")
    code, out, _ = run_cli(["runs", "--store", store], capsys)
    assert code == 0 and "4 runs, 4 done" in out and "K=2 N=32" in out
    code, out, _ = run_cli(["runs", "--store", store, "--json", "--where", "task=mnli",
                            "--where", "rank=12"], capsys)
    rows = json.loads(out)
    assert len(rows) == 1 and rows[0]["metrics"]["sard_exact"] == 17
    for name in ("out.csv", "out.parquet"):
        code, out, _ = run_cli(["runs", "--store", store, "--status", "done", "--method",
                                "prescribe", "--export", str(tmp_path / name)], capsys)
        assert code == 0 and "wrote 4 runs" in out
        frame = (pd.read_csv if name.endswith("csv") else pd.read_parquet)(tmp_path / name)
        assert sorted(frame["metrics.sard_exact"]) == [11, 11, 17, 17]


def test_sweep_dry_run_lists_engines(capsys):
    code, out, _ = run_cli(["sweep", str(ROOT / "sweeps" / "quick.yaml"), "--dry-run"], capsys)
    assert code == 0
    assert "quick: 204 runs in 35 feature groups" in out
    assert "linearized: 150 runs, 25 groups; ready" in out
    assert "lora: 8 runs, 4 groups; ready" in out and "cstar: 4 runs, 1 groups; ready" in out
    assert "capacity: 24 runs, 2 groups; ready" in out
    assert "planted: 18 runs, 3 groups; ready" in out
    # the per-method lines add up to the headline (the listing is computed, not typed)
    per_method = [int(m) for m in re.findall(r"^  \w+: (\d+) runs", out, flags=re.M)]
    assert sum(per_method) == 204


def test_store_flag_overrides_spec(tmp_path, capsys):
    spec = write_spec(tmp_path)
    other = tmp_path / "sub" / "other.sqlite"
    code, _, err = run_cli(["sweep", str(spec), "--store", str(other), "--no-progress"], capsys)
    assert code == 0, err
    assert other.exists() and not (tmp_path / "cli.sqlite").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["sweep", "missing.yaml"], "sweep spec not found: missing.yaml"),
    (["sweep", "{spec}", "--backend", "dask"], "--backend must be one of local, ray, got 'dask'"),
    (["sweep", "{spec}", "--workers", "0"], "--workers must be a positive integer, got 0"),
    (["sweep", "{spec}", "--workers", "two"], "'two' is not a valid integer"),
    (["sweep", "{spec}", "--ray-address", "auto"], "--ray-address needs --backend ray"),
    (["sweep", "{spec}", "--data-dir", "/no/such/dir"], "data directory not found"),
    (["sweep", "{bad}"], "invalid spec file"),
    (["sweep", "{unknown}"], "base.modle: unknown key (did you mean 'model'?)"),
    (["sweep", "{badrank}"], "grid.rank[1]: expected int, got 'a'"),
    (["runs"], "pass --store PATH"),
    (["runs", "--store", "/no/such.sqlite"], "results store not found"),
    (["runs", "--store", "{store}", "--status", "finished"], "unknown status 'finished'"),
    (["runs", "--store", "{store}", "--where", "rank"], "--where expects FIELD=VALUE"),
    (["runs", "--store", "{store}", "--export", "x.xlsx"], "must end in .csv or .parquet"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    spec = write_spec(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [oops\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({**SPEC, "base": {"modle": "minilm"}}))
    badrank = tmp_path / "badrank.yaml"
    badrank.write_text(yaml.safe_dump({**SPEC, "grid": {**SPEC["grid"], "rank": [1, "a"]}}))
    store = tmp_path / "s.sqlite"
    from lorank.experiments import ResultStore

    ResultStore(store).close()
    subs = {"{spec}": spec, "{bad}": bad, "{unknown}": unknown, "{badrank}": badrank,
            "{store}": store}
    args = [str(subs.get(a, a)) for a in args]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert err.startswith("lorank: error: ") and message in err
    assert err.count("\n") == 1


def test_failed_runs_exit_1(tmp_path, capsys):
    spec = write_spec(tmp_path, base={"model": "minilm", "layers": [0, 99]})
    code, out, err = run_cli(["sweep", str(spec), "--no-progress"], capsys)
    assert code == 1
    assert "4 failed" in out and "out of range" in err and "--retry-failed" in err
    code, out, _ = run_cli(["runs", "--store", str(tmp_path / "cli.sqlite"), "--status",
                            "failed"], capsys)
    assert "layer index 99 out of range" in out
