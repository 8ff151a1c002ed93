"""The shipped-spec table of docs/experiments.md states each spec's run count: it must match
what the spec expands to (a spec edit that forgets the docs fails here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lorank.experiments import load_spec

ROOT = Path(__file__).resolve().parents[1]
ROWS = re.findall(r"^\| `sweeps/(\w+)\.yaml` \| (\d+) \|",
                  (ROOT / "docs" / "experiments.md").read_text(), flags=re.M)


def test_every_shipped_spec_is_in_the_table():
    shipped = {p.stem for p in (ROOT / "sweeps").glob("*.yaml")}
    assert {name for name, _ in ROWS} == shipped


@pytest.mark.parametrize(("name", "runs"), ROWS)
def test_documented_run_count_matches_the_spec(name, runs):
    assert len(load_spec(ROOT / "sweeps" / f"{name}.yaml").runs) == int(runs)
