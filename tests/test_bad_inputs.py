"""Every bad input of issue #16 through the real CLI entry point: exit 2, one line, no traceback,
nothing written (every file and folder of the workspace byte- and mtime-identical afterwards).

Read-only folders: chmod does not stop root, so as root those cases run in a subprocess inside a
private mount namespace where the folder is bind-mounted read-only (``unshare -m``; skipped
where that is not allowed); as another user they chmod the folder instead. The error paths
themselves are also covered without privileges by targets below a regular *file*.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from lorank.cli.main import main
from lorank.experiments.config import RunConfig
from lorank.experiments.registry import RunResult
from lorank.experiments.store import ResultStore

SRC = Path(__file__).resolve().parents[1] / "src"


def make_store(path: Path) -> Path:
    """A results store with one finished ``cstar`` run (enough for a report)."""
    with ResultStore(path) as st:
        cfg = RunConfig(sweep="t", method="cstar", task="gaussian", model="gaussian", rank=1,
                        seed=0, options={"solver": "lm", "m": 6, "n": 6})
        st.add([cfg])
        assert st.claim(cfg.run_id)
        st.finish(cfg.run_id, RunResult(metrics={"c50": 1.0},
                                        curves={"ratios": [0.8, 1.0, 1.3],
                                                "success": [0.0, 0.5, 1.0]}),
                  {}, {}, (None, None), "host")
    return path


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry below ``root`` (and root): type, size, mtime (ns) and a content hash."""
    out = {".": ("dir", os.stat(root).st_mtime_ns)}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = p.relative_to(root).as_posix()
        if p.is_dir():
            out[rel] = ("dir", st.st_mtime_ns)
        else:
            out[rel] = ("file", st.st_size, st.st_mtime_ns,
                        hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture()
def ws(tmp_path):
    """A workspace: a store, a plain file, a user's folder with notes, a spec folder."""
    make_store(tmp_path / "R.sqlite")
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("mine\n")
    (tmp_path / "notes" / "sub").mkdir()
    (tmp_path / "notes" / "sub" / "data.txt").write_text("also mine\n")
    (tmp_path / "lorank-out").mkdir()
    shutil.copy(tmp_path / "R.sqlite", tmp_path / "lorank-out" / "results.sqlite")
    (tmp_path / "old-out" / "report").mkdir(parents=True)  # an earlier reproduce's layout...
    (tmp_path / "old-out" / "prescriptions.json").write_text("[]\n")
    (tmp_path / "old-out" / "report" / "draft.docx").write_text("...whose report/ is mine\n")
    (tmp_path / "x.csv").mkdir()  # a folder named like an export file
    (tmp_path / "text.sqlite").write_text("just text\n")
    spec = {"name": "bad", "store": str(tmp_path / "bad.sqlite"),
            "base": {"model": "minilm", "layers": "last"},
            "grid": {"method": ["linearized"], "task": ["nosuchtask"], "rank": [1],
                     "seed": [13]}}
    (tmp_path / "unknown_task.yaml").write_text(yaml.safe_dump(spec))
    spec2 = {**spec, "grid": {**spec["grid"], "method": ["nosuchmethod"], "task": ["sst2"]}}
    (tmp_path / "unknown_method.yaml").write_text(yaml.safe_dump(spec2))
    spec3 = {**spec, "store": str(tmp_path / "text.sqlite"),
             "grid": {**spec["grid"], "method": ["prescribe"], "task": ["sst2"]}}
    (tmp_path / "store_is_text.yaml").write_text(yaml.safe_dump(spec3))
    return tmp_path


#: (id, argv with {ws} for the workspace, env overrides, expected fragment of the error line)
CASES = [
    ("cstar-negative-seed", ["cstar", "--seed", "-1", "--quiet"], {}, "--seed must be"),
    ("train-negative-seeds", ["train", "--task", "sst2", "--seeds", "-5"], {},
     "--seeds must be integers from 0"),
    ("data-show-negative-seed", ["data", "show", "--task", "sst2", "--seed", "-1"], {},
     "-1 is not in the range"),
    ("ntk-negative-seed", ["ntk", "--task", "sst2", "--seed", "-1"], {},
     "-1 is not in the range"),
    ("head-negative-seeds", ["head", "--task", "sst2", "--seeds", "-5"], {},
     "--seeds must be integers from 0"),
    ("zeroshot-negative-seeds", ["zeroshot", "--task", "sst2", "--seeds", "13,-5"], {},
     "--seeds must be integers from 0"),
    ("report-out-is-a-file", ["report", "--store", "{ws}/R.sqlite", "--out", "{ws}/afile"], {},
     "is a file, not a folder"),
    ("report-out-user-folder", ["report", "--store", "{ws}/R.sqlite", "--out", "{ws}/notes"],
     {}, "lorank did not create it"),
    ("report-store-inside-out", ["report", "--store", "{ws}/lorank-out/results.sqlite",
                                 "--out", "{ws}/lorank-out"], {}, "lies inside output folder"),
    ("report-out-cwd", ["report", "--store", "R.sqlite", "--out", "."], {},
     "is the current folder"),
    ("report-out-parent-of-cwd", ["report", "--store", "{ws}/R.sqlite", "--out", ".."], {},
     "is the current folder or contains it"),
    ("report-out-under-a-file", ["report", "--store", "{ws}/R.sqlite", "--out",
                                 "{ws}/afile/rep"], {}, "is not a folder"),
    ("runs-export-under-a-file", ["runs", "--store", "{ws}/R.sqlite", "--export",
                                  "{ws}/afile/x.csv"], {}, "is not a folder"),
    ("runs-export-onto-a-folder", ["runs", "--store", "{ws}/R.sqlite", "--export",
                                   "{ws}/x.csv"], {}, "is a folder; give a file name"),
    ("runs-store-not-a-store", ["runs", "--store", "{ws}/text.sqlite"], {},
     "is not a lorank results store"),
    ("cstar-plot-under-a-file", ["cstar", "--plot", "{ws}/afile/c.png", "--quiet"], {},
     "folder of the plot file does not exist"),
    ("train-cache-under-a-file", ["train", "--task", "sst2", "--seeds", "13"],
     {"LORANK_CACHE_DIR": "{ws}/afile/cache"}, "feature cache folder"),
    ("train-rank-above-min-mn", ["train", "--task", "sst2", "--ranks", "100000", "--no-cache"],
     {}, "rank r=100000 exceeds min(m, n)=384 of the 384x384 matrix"),
    ("train-rank-zero", ["train", "--task", "sst2", "--ranks", "0"], {},
     "--ranks must be a positive integer, got 0"),
    ("train-unknown-task", ["train", "--task", "foo"], {}, "unknown task 'foo'"),
    ("train-bad-layers", ["train", "--task", "sst2", "--layers", "top"], {},
     "layers must be 'all', 'last' or comma-separated integers, got 'top'"),
    ("pl-bad-layers", ["pl", "--task", "sst2", "--layers", "1,x"], {},
     "layers must be 'all', 'last' or comma-separated integers, got '1,x'"),
    ("ntk-bad-layers", ["ntk", "--task", "sst2", "--layers", ""], {}, "layer selection is empty"),
    ("train-unknown-model-offline", ["train", "--task", "sst2", "--model", "no-org/no-model",
                                     "--no-cache"], {"HF_HUB_OFFLINE": "1"},
     "not found offline"),
    ("sweep-dry-run-unknown-task", ["sweep", "{ws}/unknown_task.yaml", "--dry-run"], {},
     "cannot run (linearized: unknown task 'nosuchtask'"),
    ("sweep-unknown-task-no-store", ["sweep", "{ws}/unknown_task.yaml", "--no-progress"], {},
     "unknown task 'nosuchtask'"),
    ("sweep-unknown-method-lists-providers", ["sweep", "{ws}/unknown_method.yaml",
                                              "--no-progress"], {},
     "available methods: capacity, cstar, linearized, lora, planted, prescribe"),
    ("sweep-store-not-a-store", ["sweep", "{ws}/store_is_text.yaml", "--no-progress"], {},
     "is not a lorank results store"),
    ("reproduce-out-user-folder", ["reproduce", "--out", "{ws}/notes"], {},
     "lorank did not create it"),
    ("reproduce-report-is-a-user-folder", ["reproduce", "--out", "{ws}/old-out"], {},
     "refusing to write report folder"),
    ("prescribe-N-not-integral", ["prescribe", "--K", "2", "--N", "1.5e0.5", "--shape",
                                  "384x384"], {}, "is not an integer"),
]


def _fill(arg: str, ws: Path) -> str:
    return arg.replace("{ws}", str(ws))


@pytest.mark.parametrize(("argv", "env", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_exit_2_one_line_nothing_written(ws, argv, env, fragment, capsys,
                                                   monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, _fill(value, ws))
    work = ws / "notes" / "sub" if ".." in argv else ws
    monkeypatch.chdir(work)
    before = snapshot(ws)
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main([_fill(a, ws) for a in argv])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lorank: error: ") and "Traceback" not in err
    assert fragment in lines[0]
    assert snapshot(ws) == before  # nothing created, changed or deleted
    assert elapsed < 30  # no hub retries, no model loaded


def test_prescribe_says_sard_rank_is_unreachable(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prescribe", "--K", "2", "--N", "1e11", "--shape", "384x384"])
        raise SystemExit(0)
    out = capsys.readouterr().out
    assert exc.value.code == 0
    sard_row = next(line for line in out.splitlines() if "Sard exact" in line)
    assert "632456 (unreachable" in sard_row  # not a prescription: no LoRA parameter count
    assert "the Sard rank 632456 exceeds min(m, n) = 384" in " ".join(out.split())
    with pytest.raises(SystemExit):
        main(["prescribe", "--K", "2", "--N", "1e11", "--shape", "384x384", "--json"])
        raise SystemExit(0)
    data = json.loads(capsys.readouterr().out)
    assert data["N"] == 10**11 and data["r_max"] == 384 and data["sard_reachable"] is False


def test_unknown_model_without_network_fails_at_once(monkeypatch):
    """No HF_HUB_OFFLINE and a hub endpoint nothing listens on: one connection attempt, no
    retries with back-off."""
    from lorank.errors import LorankError
    from lorank.models.bundled import hub_unreachable, load_config

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # discard port: refused
    assert "cannot connect to 127.0.0.1:9" in hub_unreachable()
    start = time.perf_counter()
    with pytest.raises(LorankError, match="not found offline"):
        load_config("no-org/no-model")
    assert time.perf_counter() - start < 10


# --- read-only folders -----------------------------------------------------------------------

DRIVER = textwrap.dedent("""
    import contextlib, io, json, os, sys
    from lorank.cli.main import main
    out = []
    for argv, env in json.loads(sys.argv[1]):
        os.environ.update(env)
        err, std = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            try:
                main(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code or 0
        out.append({"code": code, "err": err.getvalue(), "out": std.getvalue()})
    print(json.dumps(out))
""")


def _run_readonly(ro: Path, calls: list[tuple[list[str], dict]]) -> list[dict]:
    """Run CLI calls with ``ro`` read-only: chmod as a normal user, a read-only bind mount in a
    private mount namespace as root (skip if neither is possible)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-c", DRIVER, json.dumps(calls)]
    if os.geteuid() != 0:
        mode = ro.stat().st_mode
        ro.chmod(0o555)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        finally:
            ro.chmod(mode)
    else:
        if shutil.which("unshare") is None:
            pytest.skip("root without unshare: cannot make a read-only folder")
        script = ('mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && '
                  'touch "$0/.probe" 2>/dev/null && exit 99; exec "$@"')
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script, str(ro), *cmd],
                              capture_output=True, text=True, env=env, timeout=120)
        if proc.returncode == 99 or (proc.returncode != 0 and "mount" in proc.stderr
                                     and not proc.stdout):
            pytest.skip(f"cannot bind-mount read-only here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_read_only_folder_cases(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    make_store(ro / "R.sqlite")
    assert not (ro / "R.sqlite-wal").exists()  # closed cleanly: WAL mode, no -shm to reuse
    before = snapshot(tmp_path)
    calls = [
        (["runs", "--store", str(ro / "R.sqlite")], {}),
        (["report", "--store", str(ro / "R.sqlite"), "--out", str(ro / "rep")], {}),
        (["runs", "--store", str(ro / "R.sqlite"), "--export", str(ro / "x.csv")], {}),
        (["cstar", "--plot", str(ro / "c.png"), "--quiet"], {}),
        (["train", "--task", "sst2", "--seeds", "13"], {"LORANK_CACHE_DIR": str(ro / "cache")}),
    ]
    results = _run_readonly(ro, calls)
    listing = results[0]
    assert listing["code"] == 0 and "1 runs, 1 done" in listing["out"], listing
    for res, fragment in zip(results[1:], ["output folder", "--export file", "plot file",
                                           "feature cache folder"], strict=True):
        lines = res["err"].strip().splitlines()
        assert res["code"] == 2 and len(lines) == 1, res
        assert lines[0].startswith(f"lorank: error: {fragment}") and "not writable" in lines[0]
    assert snapshot(tmp_path) == before
