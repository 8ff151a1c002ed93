"""Outputs never destroy inputs: lorank replaces only folders it owns, deletes only its files."""

from __future__ import annotations

import json
import os

import pytest

from lorank.atomic import (
    MARKER,
    atomic_dir,
    atomic_file,
    check_out_dir,
    check_out_file,
    check_writable_dir,
    ensure_owned_dir,
)
from lorank.errors import LorankError


def write_report(target, files: dict[str, str], **kw):
    with atomic_dir(target, kind="report", **kw) as tmp:
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)


def tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*")
            if p.is_file()}


def test_new_folder_is_marked_with_the_files_written(tmp_path):
    out = tmp_path / "a" / "rep"
    write_report(out, {"report.html": "v1", "figures/x.png": "png"})
    marker = json.loads((out / MARKER).read_text())
    assert marker == {"written_by": "lorank", "kind": "report",
                      "files": ["figures/x.png", "report.html"]}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporaries


def test_owned_folder_is_replaced_and_only_listed_files_go(tmp_path):
    out = tmp_path / "rep"
    write_report(out, {"report.html": "v1", "figures/old.png": "old"})
    write_report(out, {"report.html": "v2"})
    assert tree(out) == {"report.html": "v2", MARKER: (out / MARKER).read_text()}
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]


def test_folder_with_a_foreign_file_is_refused_untouched(tmp_path):
    out = tmp_path / "rep"
    write_report(out, {"report.html": "v1"})
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    with pytest.raises(LorankError, match=r"files lorank did not write there.*notes\.txt"):
        write_report(out, {"report.html": "v2"})
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


@pytest.mark.parametrize("files", [{"notes.txt": "x"}, {"sub/data.txt": "y"},
                                   {"report.html": "mine", "figures/x.png": "p", "a.py": "z"}])
def test_unmarked_non_empty_folder_is_refused(tmp_path, files):
    out = tmp_path / "user"
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    with pytest.raises(LorankError, match="lorank did not create it"):
        write_report(out, {"report.html": "v"})
    assert tree(out) == files


def test_report_of_an_earlier_version_without_marker_is_replaced(tmp_path):
    out = tmp_path / "rep"
    for rel in ("report.html", "report.md", "tables.tex", "summary.json", "figures/a.png",
                "figures/a.svg"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("old")
    write_report(out, {"report.html": "new"})
    assert tree(out)["report.html"] == "new" and "figures/a.png" not in tree(out)


def test_empty_folder_and_other_kinds(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    write_report(empty, {"report.html": "v"})
    assert (empty / "report.html").read_text() == "v"
    with pytest.raises(LorankError, match="holds lorank's report output, not a model"), \
            atomic_dir(empty, kind="model"):
        pass


def test_inputs_inside_and_current_folder_are_refused(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.sqlite").write_text("store")
    with pytest.raises(LorankError, match=r"input .*results\.sqlite lies inside"):
        check_out_dir(out, "report", protect=[out / "results.sqlite"])
    monkeypatch.chdir(out)
    for target in (".", "..", str(tmp_path)):
        with pytest.raises(LorankError, match="is the current folder or contains it"):
            check_out_dir(target, "report")


def test_failure_inside_leaves_the_old_output(tmp_path):
    out = tmp_path / "rep"
    write_report(out, {"report.html": "v1"})
    before = tree(out)
    with pytest.raises(RuntimeError), atomic_dir(out, kind="report") as tmp:
        (tmp / "report.html").write_text("half")
        raise RuntimeError("boom")
    assert tree(out) == before and [p.name for p in tmp_path.iterdir()] == ["rep"]


def test_files_and_writability(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(LorankError, match="is a folder; give a file name"):
        check_out_file(tmp_path / "d.csv")
    with pytest.raises(LorankError, match="afile is not a folder"):
        check_out_file(tmp_path / "afile" / "sub" / "x.csv")
    with pytest.raises(LorankError, match="is a file, not a folder"):
        check_out_dir(tmp_path / "afile")
    with pytest.raises(LorankError, match="is a file, not a folder"):
        check_writable_dir(tmp_path / "afile")
    with pytest.raises(LorankError, match="cannot be created"):
        check_writable_dir(tmp_path / "afile" / "cache")
    assert check_writable_dir(tmp_path / "new" / "cache") == tmp_path / "new" / "cache"
    assert not (tmp_path / "new").exists()  # checking writes nothing
    with pytest.raises(LorankError, match="is not a folder"), \
            atomic_file(tmp_path / "afile" / "x.json"):
        pass
    with atomic_file(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert (tmp_path / "out.json").read_text() == "{}"


def test_working_folder_of_reproduce(tmp_path):
    out = ensure_owned_dir(tmp_path / "lorank-out", "reproduce")
    assert json.loads((out / MARKER).read_text())["kind"] == "reproduce"
    (out / "results.sqlite").write_text("s")
    assert ensure_owned_dir(out, "reproduce") == out  # resume: ours
    legacy = tmp_path / "old"
    (legacy / "report").mkdir(parents=True)
    (legacy / "prescriptions.json").write_text("[]")
    (legacy / "results.sqlite").write_text("s")
    ensure_owned_dir(legacy, "reproduce")  # an earlier version's output
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("x")
    with pytest.raises(LorankError, match="lorank did not create it"):
        ensure_owned_dir(user, "reproduce")
    assert not (user / MARKER).exists()


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_file_mode_follows_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        with atomic_file(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o666 & ~mask
