"""`lorank report`: tables (closed-form checks), figures, HTML that loads in headless Chromium."""

from __future__ import annotations

import json
import math
import os
import re
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
    by_rank,
    headline,
    rank_effect,
    to_latex,
    to_markdown,
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


def _frame(values, task="sst2", **extra) -> pd.DataFrame:
    """Runs of one group from {rank: [value per seed]} (seeds 13, 21, ...)."""
    return pd.DataFrame([dict(task=task, model="m", method="linearized", rank=r, seed=SEEDS[i],
                              test_acc=v, **extra) for r, vs in values.items()
                         for i, v in enumerate(vs)])


def test_by_rank_bolds_best_and_tied_ranks():
    df = pd.DataFrame([dict(task="mnli", model="m", method="linearized", rank=r, seed=s,
                            test_acc=_acc("mnli", r, s)) for r in (1, 4, 12) for s in SEEDS])
    table = by_rank(df)
    assert table.header[4:7] == ["r=1", "r=4", "r=12"] and table.header[3] == "metric"
    assert table.bold == {(0, 5)}  # r = 4 is best, 2.5 pts above the others, 0.5-pt noise
    assert table.rows[0][7] == "best r = 4"
    md, tex = to_markdown(table), to_latex(table)
    assert "**" in md and r"\textbf" in tex and r"$\pm$" in tex and "MDE" in md


def test_equal_means_all_tied_none_alone_bold():
    # MNLI's old "best r = 12": equal means up to noise, so every rank ties with the best
    rng = np.random.default_rng(0)
    base = 0.487 + rng.normal(0, 0.02, 5)
    df = _frame({r: base + rng.normal(0, 0.001, 5) for r in (1, 2, 4, 8, 12, 16)}, "mnli")
    table = by_rank(df)
    assert table.bold == {(0, j) for j in range(4, 10)}  # all six rank cells, none alone
    eff = rank_effect(df)
    assert not eff.detected and eff.text() == "none detected" and len(eff.tied) == 6
    # exactly equal means: the tie-break goes to the smaller rank, and all still tie
    eff = rank_effect(_frame({r: base for r in (1, 12)}))
    assert eff.best == 1 and eff.tied == (1, 12)


def test_headline_pairs_seeds_and_detects_a_loss():
    df = pd.DataFrame([dict(task="sst2", model="m", method="linearized", rank=r, seed=s,
                            test_acc=0.8 + 0.03 * (r == 12) + 0.001 * s) for r in (1, 12)
                       for s in SEEDS])
    (h,) = headline(df)
    c = h.comparison
    assert c.n == 5 and c.diff == pytest.approx(-0.03)
    # identical seed offsets cancel in the paired difference: a 3-point loss, zero spread
    assert c.ci95[1] == pytest.approx(-0.03) and h.verdict == "r = 1 worse"
    assert "excludes 0" in h.detail()


def _store(path, cells, sweep="t"):
    """A store from dicts with task, rank, seed, metrics (and optionally method, head)."""
    with ResultStore(path) as st:
        for cell in cells:
            cfg = RunConfig(sweep=sweep, method=cell.get("method", "linearized"),
                            task=cell["task"], model="minilm", rank=cell["rank"],
                            seed=cell["seed"], head=cell.get("head", "verbalizer"))
            st.add([cfg])
            assert st.claim(cfg.run_id)
            st.finish(cfg.run_id, RunResult(metrics=cell["metrics"], curves={}), {"run_s": 0.1},
                      {"torch": "2.13.0"}, ("abc123", False), "host")
    return path


def _summary(store, tmp_path, **kw):
    paths = build_report(store, tmp_path / "report", **kw)
    return json.loads(paths.summary.read_text()), paths


def _one(summary, against="r = 12"):
    (h,) = [h for h in summary["headline"] if h["against"] == against]
    return h


def test_constructed_store_wide_ci_is_inconclusive(tmp_path):
    offsets = [0.06, -0.05, 0.04, -0.06, 0.03]
    cells = [dict(task="qnli", rank=r, seed=s,
                  metrics={"test_acc": 0.70 + (offsets[i] if r == 1 else 0.0),
                           "selected_step": 100})
             for r in (1, 12) for i, s in enumerate(SEEDS)]
    summary, paths = _summary(_store(tmp_path / "s.sqlite", cells), tmp_path)
    h = _one(summary)
    assert h["comparison"]["verdict"] == "inconclusive"
    assert "detect differences of about" in h["detail"] and "seeds would show" in h["detail"]
    assert any(f.startswith("qnli / minilm / linearized (accuracy)") and "inconclusive" in f
               for f in summary["findings"])
    assert "competitive" not in paths.markdown.read_text()


def test_constructed_store_step0_ties_did_not_train(tmp_path):
    # old store: no `moved`; both ranks kept step 0 on both seeds -> CI [0, 0]
    cells = [dict(task="rte", rank=r, seed=s, method="lora",
                  metrics={"test_acc": 0.653, "selected_step": 0,
                           "zero_shot_test_acc": 0.653})
             for r in (1, 12) for s in (13, 42)]
    summary, paths = _summary(_store(tmp_path / "s.sqlite", cells), tmp_path)
    h = _one(summary)
    assert h["comparison"]["verdict"] == "did not train"
    assert "equivalent" not in h["detail"]
    (f,) = summary["findings"]
    assert "did not train" in f and "equivalent" not in f
    md = paths.markdown.read_text()
    assert "| did not train |" in md and "0/4" in md


def test_constructed_store_moved_flag_did_not_train(tmp_path):
    # new store: selected_step > 0 but `moved` False (ΔW changed no train logit measurably)
    cells = [dict(task="sst2", rank=r, seed=s,
                  metrics={"test_acc": 0.71 + 0.001 * i, "selected_step": 25, "moved": False,
                           "w0_test_acc": 0.71 + 0.001 * i, "head_fitted": False})
             for r in (1, 12) for i, s in enumerate(SEEDS)]
    summary, paths = _summary(_store(tmp_path / "s.sqlite", cells), tmp_path)
    assert _one(summary)["comparison"]["verdict"] == "did not train"
    (eff,) = summary["rank_effects"]
    assert eff["text"] == "did not train" and eff["cells_moved"] == 0
    table = paths.markdown.read_text()
    assert "| zero-shot |" in table  # head not fitted: the W0 column is zero-shot
    # the same cells with `moved` True are a (trivially exact) equivalence, not a non-result
    cells = [{**c, "metrics": {**c["metrics"], "moved": True}} for c in cells]
    summary, _ = _summary(_store(tmp_path / "t.sqlite", cells), tmp_path / "b")
    assert _one(summary)["comparison"]["verdict"] == "equivalent"


def test_constructed_store_clear_loss_and_margin(tmp_path):
    rng = np.random.default_rng(3)
    base = 0.72 + rng.normal(0, 0.02, 5)
    cells = [dict(task="sst2", rank=r, seed=s,
                  metrics={"test_acc": float(base[i] - (0.03 if r == 1 else 0.0)
                                             + rng.normal(0, 0.003)), "selected_step": 50})
             for r in (1, 4, 12) for i, s in enumerate(SEEDS)]
    store = _store(tmp_path / "s.sqlite", cells)
    summary, _ = _summary(store, tmp_path)
    assert _one(summary)["comparison"]["verdict"] == "r = 1 worse"
    assert "rank effect detected" in summary["findings"][0]
    # a 5-point margin makes the same 3-point loss an equivalence at ±5
    summary, _ = _summary(store, tmp_path / "wide", margin=0.05)
    assert summary["margin"] == 0.05
    assert _one(summary)["comparison"]["verdict"] == "equivalent"
    assert summary["rank_effects"][0]["text"] == "none detected"


def test_f1_is_the_primary_metric_of_mrpc(tmp_path):
    cells = [dict(task="mrpc", rank=r, seed=s, head="pair",
                  metrics={"test_acc": 0.70, "test_f1": 0.80 + 0.01 * (r == 1) + 0.002 * i,
                           "zero_shot_test_acc": 0.69, "zero_shot_test_f1": 0.79,
                           "selected_step": 50})
             for r in (1, 12) for i, s in enumerate(SEEDS)]
    summary, paths = _summary(_store(tmp_path / "s.sqlite", cells), tmp_path)
    h = _one(summary)
    assert h["metric"] == "f1" and h["comparison"]["diff"] == pytest.approx(0.01)
    assert h["comparison"]["verdict"] == "r = 1 better"
    md = paths.markdown.read_text()
    assert "| mrpc | minilm | linearized | F1 |" in md
    assert "Test accuracy (%) by rank" in md  # accuracy beside the primary metric
    assert "| head at W0 (fitted on train) |" in md  # pair head: fitted, not zero-shot


def test_build_report_writes_everything(store, tmp_path):
    paths = build_report(store, tmp_path / "report")
    text = paths.markdown.read_text()
    assert "Headline" in text and "K > 2" in text and "Prescribed ranks" in text
    summary = json.loads(paths.summary.read_text())
    assert any(s.startswith("mnli (K = 3)") and "best r = 4" in s for s in summary["findings"])
    assert any(s.startswith("sst2 / minilm / linearized (accuracy)") and "equivalent" in s
               for s in summary["findings"])
    assert "competitive" not in text
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


def test_provenance_is_readable(store, tmp_path):
    html = build_report(store, tmp_path / "report").html.read_text()
    prov = html[html.index("<h2>Provenance</h2>"):]
    assert "<td class='v'>float32</td>" in prov  # not "\"float32\"" (JSON inside JSON)
    assert "&quot;" not in prov and '\\"' not in prov
    assert "<td>targets</td><td class='v'>[query, value]</td>" in prov


def test_report_cli_margin(store, tmp_path, capsys):
    for bad in ("0", "1", "-0.01", "nan"):
        with pytest.raises(SystemExit) as exc:
            main(["report", "--store", str(store), "--out", str(tmp_path / "o"),
                  "--margin", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("lorank: error: --margin must be in (0, 1)") and \
            err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    main(["report", "--store", str(store), "--out", str(tmp_path / "o"), "--margin", "0.02"])
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["margin"] == 0.02 and "±2 pts" in (tmp_path / "o" / "report.md").read_text()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: set by .ci/run: in CI a missing browser fails the test instead of skipping it
REQUIRE_BROWSER = os.environ.get("LORANK_REQUIRE_BROWSER") == "1"


@pytest.mark.skipif(CHROMIUM is None and not REQUIRE_BROWSER,
                    reason="Debian's chromium package is not installed")
def test_html_loads_every_figure_in_headless_chromium(store, tmp_path):
    if CHROMIUM is None:
        pytest.fail("LORANK_REQUIRE_BROWSER=1 but no chromium on PATH (.ci/run installs it)")
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


def test_readme_block_is_generated_from_the_report(store, tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "update_readme_results.py"
    spec = importlib.util.spec_from_file_location("update_readme_results", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    build_report(store, tmp_path / "out" / "report")
    block = module.render(tmp_path / "out", "test machine", figures=tmp_path / "figs")
    summary = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    assert block.startswith(module.START) and block.endswith(module.END)
    assert all(f"- {line}" in block for line in summary["findings"])
    assert "**Headline: r = 1 vs r = 12" in block and "**Tasks with K > 2" in block
    assert "inside ±1 pts (TOST)" in block and "MDE" in block
    assert "competitive" not in block
    assert "**Test metric (%) by rank" in block and "cells trained" in block
    assert (tmp_path / "figs" / "accuracy_vs_rank.png").is_file()
    assert "Sweep wall time" not in block  # no store beside the report
    import shutil

    shutil.copy(store, tmp_path / "out" / "results.sqlite")
    timed = module.render(tmp_path / "out", "test machine", figures=tmp_path / "figs")
    assert re.search(r"Sweep wall time .*: \d+\.\d min; wall minutes during which each "
                     r"method's runs were in flight: linearized", timed)
    assert "Main job wall time" not in timed  # no reproduce.json
    assert "## Figures" not in timed and "](figures/" not in timed  # report-relative links stay out
    (tmp_path / "out" / "reproduce.json").write_text(json.dumps(
        {"spec": "quick", "runs": 3, "wall_s": 600.0, "sweep_s": 540.0, "resumed": False}))
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "lorank-setup.json").write_text('{"wall_s": 120}')
    job = module.render(tmp_path / "out", "test machine", figures=tmp_path / "figs")
    assert ("Main job wall time: `lorank reproduce` 10.0 min (sweep 9.0 min, then the report) "
            "after 2.0 min of set-up (scripts/setup.sh): 12.0 min for the first command.") in job


def test_method_minutes_count_a_batch_once():
    """Runs of one batch share their interval: the per-method minutes are the union of the
    intervals, not their sum."""
    import importlib.util
    from datetime import datetime, timedelta
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "update_readme_results.py"
    spec = importlib.util.spec_from_file_location("update_readme_results", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    t = datetime(2026, 1, 1)
    batch = [(t, t + timedelta(seconds=60))] * 6
    later = [(t + timedelta(seconds=30), t + timedelta(seconds=90)),
             (t + timedelta(seconds=200), t + timedelta(seconds=210))]
    assert module._covered_s(batch) == 60
    assert module._covered_s(batch + later) == 100


def test_a_resumed_sweep_says_so(tmp_path):
    import importlib.util
    import sqlite3
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "update_readme_results.py"
    spec = importlib.util.spec_from_file_location("update_readme_results", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    store = tmp_path / "r.sqlite"
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE runs (method TEXT, status TEXT, started_at TEXT, "
                   "finished_at TEXT)")
        db.executemany("INSERT INTO runs VALUES ('linearized', 'done', ?, ?)", [
            ("2026-01-01T10:00:00+00:00", "2026-01-01T10:10:00+00:00"),
            ("2026-01-01T11:00:00+00:00", "2026-01-01T11:05:00+00:00")])
    line = module._wall_time(store)
    assert "65.0 min (runs in flight during 15.0 min of it: the sweep was stopped" in line
    assert "linearized 15.0" in line
