"""Safe outputs: atomic writes, and folders lorank may replace only when it owns them.

Atomicity. :func:`atomic_dir` and :func:`atomic_file` write into a temporary sibling (same file
system) and ``os.replace`` it into place on success; on any exception the temporary is removed
and the target is left untouched, so a reader (or a crash) sees the old output or the whole new
one, never half.

Ownership (outputs never destroy inputs). Every output folder lorank writes carries a marker file
:data:`MARKER` (JSON: the kind of output and the list of files lorank wrote there). A folder is
replaced only when it is

* new or empty, or
* marked by lorank for the same kind of output, and holds no file besides the listed ones, or
* an output of a lorank version from before the marker: every file matches the layout that
  version wrote (:data:`LEGACY_LAYOUTS`, e.g. ``report.html``, ``figures/*.png``).

Anything else — a folder holding the user's notes, the current folder, a folder that contains
the current folder, a folder a given input (the results store) lies in — is refused before
anything is written, with a one-line :class:`~lorank.errors.LorankError`; so is a target that
is a file, sits below a file, or lies in a folder lorank cannot write to. When lorank replaces
a folder it owns it deletes only the files its marker lists.

An explicit output *file* (``--export x.csv``, ``--plot x.png``) is replaced atomically, like
``cp``/``-o`` in other tools; it can never be a folder, and the CLI accepts only suffixes that
cannot name a results store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path

from lorank.errors import LorankError

log = logging.getLogger(__name__)

#: marker file of a lorank-owned output folder.
MARKER = ".lorank-output"

#: files that earlier lorank versions wrote into an output folder of each kind, before the
#: marker existed (``*`` does not cross ``/``; ``name/**`` is anything below ``name/``).
LEGACY_LAYOUTS: dict[str, tuple[str, ...]] = {
    "report": ("report.html", "report.md", "tables.tex", "summary.json", "figures/*.png",
               "figures/*.svg"),
    "reproduce": ("prescriptions.json", "results.sqlite", "results.sqlite-wal",
                  "results.sqlite-shm", "results.sqlite-journal", "results.sqlite.features/**",
                  "report/**"),
}


def _abs(path: str | os.PathLike) -> Path:
    """Absolute, user-expanded, with ``.``/``..`` folded (symlinks are not resolved)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def _files(folder: Path) -> list[str]:
    """Every non-folder entry below ``folder`` (relative POSIX paths, symlinks not followed)."""
    out = []
    for root, dirs, names in os.walk(folder):
        rel = Path(root).relative_to(folder)
        out += [(rel / n).as_posix() for n in names]
        out += [(rel / d).as_posix() for d in dirs if (Path(root) / d).is_symlink()]
    return sorted(out)


def _matches(rel: str, pattern: str) -> bool:
    if pattern.endswith("/**"):
        return rel.startswith(pattern[:-2])
    return rel.count("/") == pattern.count("/") and fnmatchcase(rel, pattern)


def _marker(folder: Path) -> dict | None:
    path = folder / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("written_by") == "lorank" else None


def write_marker(folder: Path, kind: str, files: Iterable[str] | None = None) -> None:
    """Mark ``folder`` as lorank's output of ``kind``; ``files``: what lorank wrote there (the
    files it may delete when it replaces the folder; None for a working folder never
    replaced wholesale)."""
    data = {"written_by": "lorank", "kind": kind,
            "files": None if files is None else sorted(files)}
    (folder / MARKER).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _not_owned(folder: Path, kind: str) -> str | None:
    """Why lorank may not replace the existing folder ``folder`` (None: it may)."""
    files = [f for f in _files(folder) if f != MARKER]
    marker = _marker(folder)
    if marker is not None:
        if marker.get("kind") != kind:
            return f"it holds lorank's {marker.get('kind')} output, not a {kind}"
        listed = marker.get("files")
        extra = [f for f in files if listed is not None and f not in set(listed)]
        if extra:
            return f"it holds files lorank did not write there (e.g. {extra[0]!r})"
        return None
    if not files and not any(folder.iterdir()):
        return None
    layout = LEGACY_LAYOUTS.get(kind, ())
    foreign = [f for f in files if not any(_matches(f, p) for p in layout)]
    if foreign or not files:
        example = foreign[0] if foreign else next(p.name for p in folder.iterdir())
        return f"it is not empty and lorank did not create it (it holds {example!r})"
    return None


def _check_parent_writable(path: Path, what: str) -> None:
    """The nearest existing folder above ``path`` is a folder lorank can create entries in."""
    base = path.parent
    while not base.exists() and base != base.parent:
        if base.is_symlink():  # a dangling link
            break
        base = base.parent
    if not base.is_dir():
        raise LorankError(f"{what} {path} cannot be created: {base} is not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise LorankError(f"{what} {path} cannot be written: folder {base} is not writable")


def check_writable_dir(folder: str | os.PathLike, what: str = "folder") -> Path:
    """``folder`` exists as a writable folder or can be created (LorankError otherwise)."""
    path = _abs(folder)
    if path.exists():
        if not path.is_dir():
            raise LorankError(f"{what} {path} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise LorankError(f"{what} {path} is not writable")
        return path
    _check_parent_writable(path, what)
    return path


def check_out_file(target: str | os.PathLike, what: str = "output file") -> Path:
    """An output file lorank may write: not a folder, in a folder it can create or write to."""
    path = _abs(target)
    if path.is_dir():
        raise LorankError(f"{what} {target} is a folder; give a file name")
    _check_parent_writable(path, what)  # an existing file's folder included
    return path


def check_out_dir(target: str | os.PathLike, kind: str = "output",
                  protect: Iterable[str | os.PathLike] = (), what: str = "output folder"
                  ) -> Path:
    """Validate, before any work, that lorank may write (or replace) the folder ``target``.

    Raises LorankError (one line) when ``target`` is the current folder or contains it, is a
    file, contains one of the ``protect`` paths (inputs such as the results store), is a
    non-empty folder lorank does not own for this ``kind`` (module doc), or cannot be written.
    Returns the absolute path.
    """
    path = _abs(target)
    cwd = Path.cwd()
    if path == cwd or path in cwd.parents:
        raise LorankError(f"{what} {target} is the current folder or contains it; give a new "
                          f"subfolder (e.g. {Path(target) / 'lorank-out'})")
    if path.exists() and not path.is_dir():
        raise LorankError(f"{what} {target} is a file, not a folder")
    for item in protect:
        p = _abs(item)
        if p == path or path in p.parents:
            raise LorankError(f"input {item} lies inside {what} {target}, which lorank would "
                              "replace; choose another folder")
    if path.is_dir():
        why = _not_owned(path, kind)
        if why is not None:
            raise LorankError(f"refusing to write {what} {target}: {why}; give a new or empty "
                              "folder")
    _check_parent_writable(path, what)
    return path


def _remove_owned(folder: Path) -> None:
    """Delete what lorank listed in ``folder``'s marker (all files: checked before), then the
    emptied folders; anything else is left in place, with a warning."""
    marker = _marker(folder) or {}
    for rel in marker.get("files") or [f for f in _files(folder) if f != MARKER]:
        (folder / rel).unlink(missing_ok=True)
    (folder / MARKER).unlink(missing_ok=True)
    for root, _, _ in sorted(os.walk(folder), key=lambda x: -len(x[0])):
        try:
            os.rmdir(root)
        except OSError:
            log.warning("left %s in place: it holds files lorank did not write", root)


@contextmanager
def atomic_dir(target: str | os.PathLike, kind: str = "output",
               protect: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target``.

    ``target`` must pass :func:`check_out_dir` (checked before anything is written, and again
    just before the swap); the new folder is marked as lorank's ``kind`` output listing every
    file written. A replaced folder loses only the files lorank had listed.
    """
    protect = list(protect)
    path = check_out_dir(target, kind, protect)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    except OSError as exc:
        raise LorankError(f"cannot write output folder {target}: {exc.strerror}") from None
    holder: Path | None = None
    try:
        yield tmp
        write_marker(tmp, kind, _files(tmp))
        check_out_dir(path, kind, protect)
        if path.exists() and any(path.iterdir()):
            holder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-old-"))
            os.rename(path, holder / "old")
        os.replace(tmp, path)
        if holder is not None:
            _remove_owned(holder / "old")  # the emptied holder goes in the finally below
    except BaseException:
        if holder is not None and (holder / "old").exists() and not path.exists():
            os.rename(holder / "old", path)  # put the old output back
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        if holder is not None and holder.exists() and not any(holder.iterdir()):
            holder.rmdir()


def ensure_owned_dir(target: str | os.PathLike, kind: str) -> Path:
    """Create (or reuse) the working folder ``target`` of a ``kind`` of output that lorank fills
    file by file and never replaces wholesale (``reproduce --out``): new, empty, or already
    lorank's ``kind`` output (:func:`check_out_dir`). Marks it; returns the path."""
    path = check_out_dir(target, kind)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if _marker(path) is None:
            write_marker(path, kind)
    except OSError as exc:
        raise LorankError(f"cannot write output folder {target}: {exc.strerror}") from None
    return path


@contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside ``target``; on success it replaces ``target`` with the
    mode a plain ``open(target, "w")`` would give (0o666 less the umask; mkstemp makes 0o600)."""
    target = Path(target)
    check_out_file(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise LorankError(f"cannot write {target}: {exc.strerror}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
