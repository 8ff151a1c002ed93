"""Where and with what a run was computed: package versions, git state, host, process identity."""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import os
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "numpy", "lorank")


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


def hostname() -> str:
    return socket.gethostname()


def now() -> str:
    """UTC timestamp, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _start_time(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks (Linux /proc), None if unknown or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # zombie or dead: not running
        return None
    return fields[19]


def process_token(pid: int | None = None) -> str:
    """``host:pid:start`` naming this process uniquely even after pid reuse."""
    pid = os.getpid() if pid is None else pid
    return f"{hostname()}:{pid}:{_start_time(pid) or '?'}"


def token_alive(token: str | None) -> bool:
    """Whether the process named by a :func:`process_token` still runs.

    A token from another host cannot be checked and counts as alive (its runs are left alone).
    """
    if not token:
        return False
    parts = token.rsplit(":", 2)
    if len(parts) != 3:
        return False
    host, pid_text, start = parts
    if host != hostname():
        return True
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if Path("/proc").is_dir():
        return _start_time(pid) is not None and (start == "?" or _start_time(pid) == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
