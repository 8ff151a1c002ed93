"""User-facing errors.

Every mistake a user can make (bad numbers, malformed shapes, unknown modules, missing files) is
raised as :class:`LorankError` with a one-line message that says what is wrong and how to fix it.
The CLI prints that line to stderr and exits with status 2, never a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum
from numbers import Integral, Real
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


def check_positive_int(name: str, value: object) -> int:
    """``value`` as int if it is a positive integer (numpy integers too, not a bool); otherwise
    ``<name> must be a positive integer, got <value>``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise LorankError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive_ints(**values: object) -> None:
    """Every keyword is a positive *Python* int (not a bool, not numpy): for config fields that
    are dumped to JSON as they are. LorankError naming the first that is not."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise LorankError(f"{name} must be a positive integer, got {v!r}")


def check_number(name: str, value: object, *, low: float | None = None,
                 strict: bool = True) -> float:
    """``value`` as float if it is a finite real (not a bool) and, with ``low``, > low
    (``strict``) or >= low; otherwise ``<name> must be a finite number`` / ``must be > low``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise LorankError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise LorankError(f"{name} must be {'>' if strict else '>='} {low:g}, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``; otherwise ``<name> must be one of a, b, got x``."""
    choices = tuple(choices)
    if value not in choices:
        raise LorankError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)
