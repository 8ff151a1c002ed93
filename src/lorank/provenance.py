"""Where and with what a result was computed: package versions, git state, host, time.

Shared by every layer that emits results (the sweep store, ``--json`` outputs of the CLIs), so it
lives at the package root and imports nothing of lorank.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "numpy", "scipy", "numba", "lorank")


@functools.cache
def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide a run's numbers (None if missing)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.cache
def git_state(path: str | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding ``path`` (default: lorank's source), else
    (None, None). Dirty means tracked files differ from the commit (untracked files ignored)."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=where, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return commit.stdout.strip() or None, dirty


def provenance() -> dict[str, object]:
    """What travels with a result printed or saved outside the results store (``--json`` of
    ``lorank train``, ``pl``, ``predict-rank``, ``cstar``): package versions, git commit and
    dirty flag of lorank's source, host and UTC time."""
    commit, dirty = git_state()
    return {"versions": package_versions(), "git_commit": commit, "git_dirty": dirty,
            "host": hostname(), "created_at": now()}


def hostname() -> str:
    return socket.gethostname()


def now() -> str:
    """UTC timestamp, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")
