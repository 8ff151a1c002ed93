"""One failed run never kills the main job: `sweep` and `reproduce` record it, finish the rest,
write the report with a "Runs that did not finish" table, end with a one-line summary and exit 1
(0 only when every run of the spec is done in the store)."""

from __future__ import annotations

import sqlite3

import pytest
import yaml

from lorank.cli.main import main
from lorank.experiments.config import RunConfig
from lorank.experiments.registry import RunResult
from lorank.experiments.store import ResultStore
from lorank.report.failures import failures_table, unfinished_runs

BASE = {"method": "cstar", "task": "gaussian", "model": "gaussian", "rank": 1, "steps": 30,
        "options": {"m": 4, "n": 4, "solver": "lm", "instances": 4, "n_boot": 20}}
# passes validation, fails when run: the ratio grid gives a single KN for d = 7
BAD = {"seed": 1, "options": {**BASE["options"], "ratios": [1.0, 1.01]}}


def write_spec(tmp_path, extra, name="mixed"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "store": str(tmp_path / f"{name}.sqlite"),
                                    "base": BASE, "grid": {"seed": [0]}, "include": extra}))
    return path


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def test_sweep_records_failure_finishes_the_rest_and_exits_1(tmp_path, capsys):
    spec = write_spec(tmp_path, [BAD])
    code, out, err = run(["sweep", str(spec), "--no-progress"], capsys)
    assert code == 1
    assert "2 runs: 1 done, 1 failed" in out
    assert "fewer than 2 distinct KN" in err
    assert err.strip().splitlines()[-1].startswith("1 of 2 runs did not finish")
    # a rerun without --retry-failed skips the failed run but still does not claim success
    code, out, err = run(["sweep", str(spec), "--no-progress"], capsys)
    assert code == 1 and "2 skipped" in out and "1 failed earlier (not retried)" in out
    with sqlite3.connect(tmp_path / "mixed.sqlite") as db:
        assert sorted(s for (s,) in db.execute("SELECT status FROM runs")) == ["done", "failed"]


def test_sweep_all_done_exits_0(tmp_path, capsys):
    spec = write_spec(tmp_path, [], name="good")
    code, out, _ = run(["sweep", str(spec), "--no-progress"], capsys)
    assert code == 0 and "1 runs: 1 done, 0 failed" in out and "failed earlier" not in out


def test_reproduce_writes_report_marks_failed_runs_and_summarises(tmp_path, capsys):
    spec = write_spec(tmp_path, [BAD])
    out_dir = tmp_path / "out"
    code, out, err = run(["reproduce", "--spec", str(spec), "--out", str(out_dir),
                          "--no-progress"], capsys)
    assert code == 1
    assert f"report: {out_dir / 'report' / 'report.html'}" in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("reproduce: 1 of 2 runs done, 1 did not finish (1 failed")
    md = (out_dir / "report" / "report.md").read_text()
    assert "Runs that did not finish" in md and "fewer than 2 distinct KN" in md
    html = (out_dir / "report" / "report.html").read_text()
    assert "Runs that did not finish" in html
    # the output folders are lorank's now: a second run resumes into them
    assert (out_dir / ".lorank-output").is_file()
    assert (out_dir / "report" / ".lorank-output").is_file()
    code, out, err = run(["reproduce", "--spec", str(spec), "--out", str(out_dir),
                          "--no-progress"], capsys)
    assert code == 1 and "2 skipped" in out and "1 did not finish" in err
    code, out, err = run(["reproduce", "--spec", str(spec), "--out", str(out_dir),
                          "--no-progress", "--retry-failed"], capsys)
    assert code == 1 and "0 done, 1 failed, 1 skipped" in out


def test_reproduce_all_done_ends_with_summary_and_exit_0(tmp_path, capsys):
    spec = write_spec(tmp_path, [], name="good")
    out_dir = tmp_path / "out"
    code, out, _ = run(["reproduce", "--spec", str(spec), "--out", str(out_dir),
                        "--no-progress"], capsys)
    assert code == 0
    assert out.strip().splitlines()[-1].startswith("reproduce: all 1 runs done in ")
    assert "Runs that did not finish" not in (out_dir / "report" / "report.md").read_text()


def test_failures_table_lists_unfinished_runs_of_the_spec_only(tmp_path):
    path = tmp_path / "s.sqlite"
    cfgs = [RunConfig(sweep="t", method="linearized", task="sst2", model="minilm", rank=r,
                      seed=13) for r in (1, 2, 4)]
    other = RunConfig(sweep="t", method="linearized", task="rte", model="minilm", rank=1, seed=13)
    with ResultStore(path) as st:
        st.add([*cfgs, other])
        for c in (cfgs[0], cfgs[1], other):
            assert st.claim(c.run_id)
        st.finish(cfgs[0].run_id, RunResult(metrics={"test_acc": 0.8}, curves={}), {}, {},
                  (None, None), "h")
        st.fail(cfgs[1].run_id, "RuntimeError: out of memory", "Traceback ...", {}, {},
                (None, None), "h")
        st.fail(other.run_id, "ValueError: x", "Traceback ...", {}, {}, (None, None), "h")
    left = unfinished_runs(path, "t", [c.run_id for c in cfgs])
    assert [(r.config["rank"], r.status) for r in left] == [(2, "failed"), (4, "queued")]
    table = failures_table(left, path)
    assert table.title == "Runs that did not finish"
    assert table.rows[0] == ["linearized", "sst2", "minilm", "2", "13", "failed",
                             "RuntimeError: out of memory"]
    assert table.rows[1][5:] == ["queued", "-"]
    assert "2 runs did not finish (1 failed, 1 queued)" in table.note
    assert failures_table([]) is None
