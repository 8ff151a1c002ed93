"""User-facing errors.

Every mistake a user can make (bad numbers, malformed shapes, unknown modules, missing files) is
raised as :class:`LorankError` with a one-line message that says what is wrong and how to fix it.
The CLI prints that line to stderr and exits with status 2, never a traceback.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar


class LorankError(ValueError):
    """An error caused by user input; its message is one line, suitable for the CLI."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


E = TypeVar("E", bound=StrEnum)


def parse_choice(cls: type[E], value: str | E, what: str) -> E:
    """The member of the string enum ``cls`` for ``value`` (a member, or its value in any case);
    otherwise a one-line LorankError: ``unknown <what> 'x'; choose from: a, b``."""
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).lower())
    except ValueError:
        known = ", ".join(m.value for m in cls)
        raise LorankError(f"unknown {what} {value!r}; choose from: {known}") from None
