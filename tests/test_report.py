"""`lorank report`: tables (closed-form checks), figures, HTML that loads in headless Chromium."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from lorank.cli.main import main
from lorank.experiments.config import RunConfig
from lorank.experiments.registry import RunResult
from lorank.experiments.store import ResultStore
from lorank.report.build import build_report
from lorank.report.tables import (
    accuracy_by_rank,
    headline,
    paired_ci,
    to_latex,
    to_markdown,
    verdict,
)

SEEDS = (13, 21, 42, 87, 100)


def _acc(task: str, rank: int, seed: int) -> float:
    """Deterministic accuracies: binary tasks flat in rank, MNLI best at r = 4."""
    rng = np.random.default_rng(seed * 1000 + rank)
    base = {"sst2": 0.80, "rte": 0.55, "mnli": 0.40}[task]
    bump = 0.05 * (task == "mnli") * (1 - abs(math.log2(rank) - 2) / 2)
    return float(base + bump + rng.normal(0, 0.005))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "runs.sqlite"
    with ResultStore(path) as st:
        for task in ("sst2", "rte", "mnli"):
            for rank in (1, 4, 12):
                for seed in SEEDS:
                    cfg = RunConfig(sweep="t", method="linearized", task=task, model="minilm",
                                    rank=rank, seed=seed)
                    st.add([cfg])
                    assert st.claim(cfg.run_id)
                    loss = list(np.exp(-np.arange(20) * 0.3 * rank ** 0.1))
                    result = RunResult(
                        metrics={"test_acc": _acc(task, rank, seed),
                                 "test_acc_final": _acc(task, rank, seed) - 0.01,
                                 "zero_shot_test_acc": 0.7, "kernel_test_acc": 0.72},
                        curves={"train_loss": loss, "pl_ratio": [0.5] * 20,
                                "singular_values": list(np.linspace(1, 0.01, rank))})
                    st.finish(cfg.run_id, result, {"run_s": 0.1}, {"torch": "2.13.0"},
                              ("abc123", False), "host")
        cfg = RunConfig(sweep="t", method="cstar", task="sst2", model="gaussian", rank=1, seed=0,
                        options={"solver": "gd", "steps": 1000})
        st.add([cfg])
        st.claim(cfg.run_id)
        st.finish(cfg.run_id, RunResult(metrics={"c50": 1.3},
                                        curves={"ratios": [0.8, 1.0, 1.3, 1.6, 2.0],
                                                "success": [0, 0.1, 0.5, 0.9, 1.0]}),
                  {}, {}, (None, None), "host")
    return path


def test_paired_ci_closed_form():
    d = np.array([0.01, -0.01, 0.02, 0.0, 0.03])
    mean, lo, hi = paired_ci(d)
    half = 2.7764451 * d.std(ddof=1) / math.sqrt(5)   # t_{0.975, 4}
    assert mean == pytest.approx(0.01) and hi - mean == pytest.approx(half, rel=1e-6)
    assert mean - lo == pytest.approx(half, rel=1e-6)
    assert verdict(lo, hi, mean) == "competitive"
    assert verdict(-0.05, -0.01, -0.03) == "higher rank better"
    assert verdict(0.01, 0.02, 0.015).startswith("r=1 better")
    assert verdict(math.nan, math.nan, 0.0) == "too few seeds"


def test_accuracy_table_bolds_best_rank():
    df = pd.DataFrame([dict(task="mnli", model="m", method="linearized", rank=r, seed=s,
                            test_acc=_acc("mnli", r, s)) for r in (1, 4, 12) for s in SEEDS])
    table = accuracy_by_rank(df)
    assert table.header[-3:] == ["r=1", "r=4", "r=12"]
    assert table.bold == {(0, 4)}  # r = 4 is best
    md, tex = to_markdown(table), to_latex(table)
    assert "**" in md and r"\textbf" in tex and r"$\pm$" in tex


def test_headline_pairs_seeds():
    df = pd.DataFrame([dict(task="sst2", model="m", method="linearized", rank=r, seed=s,
                            test_acc=0.8 + 0.01 * (r == 12) + 0.001 * s) for r in (1, 12)
                       for s in SEEDS])
    (h,) = headline(df)
    assert h.n_seeds == 5 and h.diff == pytest.approx(-0.01)
    # identical seed offsets cancel in the paired difference: a degenerate CI below zero
    assert h.ci_high == pytest.approx(-0.01) and h.verdict == "higher rank better"


def test_build_report_writes_everything(store, tmp_path):
    paths = build_report(store, tmp_path / "report")
    text = paths.markdown.read_text()
    assert "Headline" in text and "K > 2" in text and "Prescribed ranks" in text
    summary = json.loads(paths.summary.read_text())
    assert any("mnli" in s and "best rank r = 4" in s for s in summary["findings"])
    assert any(s.startswith("sst2 / minilm / linearized") and "competitive" in s
               for s in summary["findings"])
    names = {p.name for p in paths.figures}
    for stem in ("accuracy_vs_rank", "loss_pl", "cstar", "sv"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert "abc123" in paths.html.read_text()
    assert not list(tmp_path.glob(".report-*"))  # no temporary folder left


def test_report_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", "--store", str(tmp_path / "missing.sqlite"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lorank: error: results store") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_report_cli_empty_store(tmp_path, capsys):
    ResultStore(tmp_path / "empty.sqlite").close()
    with pytest.raises(SystemExit) as exc:
        main(["report", "--store", str(tmp_path / "empty.sqlite"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "no finished runs" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")
def test_html_loads_every_figure_in_headless_chromium(store, tmp_path):
    paths = build_report(store, tmp_path / "report")
    n_imgs = paths.html.read_text().count("<img ")
    assert n_imgs >= 4
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}",
         "--virtual-time-budget=5000", "--dump-dom", paths.html.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert f'data-images-loaded="{n_imgs}/{n_imgs}"' in out.stdout, out.stderr[-2000:]


def test_build_report_only_given_run_ids(store, tmp_path):
    from lorank.experiments.store import ResultStore

    with ResultStore(store) as st:
        ids = [r.run_id for r in st.query(status="done")
               if r.config["task"] == "sst2" and r.method == "linearized"]
    paths = build_report(store, tmp_path / "only", run_ids=ids)
    md = paths.markdown.read_text()
    assert "| sst2 |" in md and "| rte |" not in md and "mnli" not in md
