"""User-facing errors.

Every mistake a user can make (bad numbers, malformed shapes, unknown modules, missing files) is
raised as :class:`LorankError` with a one-line message that says what is wrong and how to fix it.
The CLI prints that line to stderr and exits with status 2, never a traceback.
"""

from __future__ import annotations


class LorankError(ValueError):
    """An error caused by user input; its message is one line, suitable for the CLI."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
