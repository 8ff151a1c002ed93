"""Clean stop of a sweep on SIGINT and SIGTERM, whatever the inherited signal dispositions.

The runners turn a :class:`KeyboardInterrupt` into a clean stop: the runs in flight go back to
``interrupted``, finished runs stay stored, and :class:`~lorank.experiments.runners.
SweepInterrupted` is raised. Two cases never reached that path:

- a sweep started in the background by a non-interactive shell (``lorank sweep ... &``, or
  ``nohup``) inherits SIGINT as *ignored*, and Python then installs no KeyboardInterrupt
  handler, so ``kill -INT`` did nothing;
- SIGTERM (what schedulers, ``systemctl stop``, Slurm and Kubernetes send) killed the process
  at once: no clean-up, in-flight runs left ``running`` until a later sweep reclaimed them.

:func:`stop_on_signals` installs, for the duration of a ``with`` block, one handler for both
signals that raises :class:`KeyboardInterrupt` in the main thread — the Ctrl-C path — and
records which signal it was, so the caller can exit with the shell convention 128 + signal
number (130 for SIGINT, 143 for SIGTERM; :data:`EXIT_CODES`). Signals arriving while the stop
is being carried out are ignored, so a second Ctrl-C cannot cut the clean-up short (SIGKILL
still can; the sweep then resumes as after any kill). The previous handlers are restored on
exit from the block.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

#: exit status of a sweep stopped by each signal: 128 + signal number (shell convention).
EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}

#: the signals that stop a sweep cleanly.
STOP_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    """Which stop signal arrived inside :func:`stop_on_signals` (``signum`` None: none did)."""

    signum: int | None = None

    @property
    def name(self) -> str:
        """``"SIGINT"``, ``"SIGTERM"``; ``"SIGINT"`` also for a KeyboardInterrupt raised
        without a signal (e.g. handlers not installed outside the main thread)."""
        return signal.Signals(self.signum).name if self.signum is not None else "SIGINT"

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT (and a bare Ctrl-C), 143 for SIGTERM."""
        if self.signum is None:
            return EXIT_CODES[signal.SIGINT]
        return EXIT_CODES.get(self.signum, 128 + int(self.signum))


@contextmanager
def stop_on_signals(signums: Sequence[int] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Within the block, each of ``signums`` raises KeyboardInterrupt once (the clean-stop path).

    Overrides inherited ``SIG_IGN`` dispositions (a background job's ignored SIGINT). Outside
    the main thread Python cannot install handlers; the block then changes nothing and only a
    real Ctrl-C interrupts. Yields a :class:`StopRequest` naming the signal received.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if request.signum is not None:
            return  # already stopping: let the clean-up finish
        request.signum = signum
        raise KeyboardInterrupt

    previous = {signum: signal.getsignal(signum) for signum in signums}
    try:
        for signum in signums:
            signal.signal(signum, handler)
        yield request
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
