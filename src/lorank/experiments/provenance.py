"""Process identity for the results store (claims by live processes), on top of
:mod:`lorank.provenance` (versions, git state, host, time)."""

from __future__ import annotations

import os
from pathlib import Path

from lorank.provenance import hostname


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
