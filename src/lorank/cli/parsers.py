"""Parsers of the CLI's comma-separated options (one place; every command imports from here).

Each raises :class:`~lorank.errors.LorankError` with a one-line message naming the option.
"""

from __future__ import annotations

import math

from lorank.errors import LorankError


def parse_list(text: str, what: str) -> list[str]:
    """``"query,value"`` -> ["query", "value"]; LorankError if empty."""
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items:
        raise LorankError(f"{what} must be a non-empty comma-separated list, got {text!r}")
    return items


def parse_ints(text: str, what: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4]; LorankError if malformed."""
    try:
        return [int(x) for x in parse_list(text, what)]
    except ValueError:
        raise LorankError(f"{what} must be comma-separated integers, got {text!r}") from None


def parse_floats(text: str, what: str) -> list[float]:
    """``"0.01,0.1"`` -> [0.01, 0.1]; LorankError if malformed or not a positive finite number."""
    try:
        vals = [float(x) for x in parse_list(text, what)]
    except ValueError:
        raise LorankError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if any(not math.isfinite(v) or v <= 0 for v in vals):
        raise LorankError(f"{what} must be comma-separated numbers > 0, got {text!r}")
    return vals


def parse_seeds(text: str) -> list[int]:
    """``"13,21,42"`` -> [13, 21, 42]; LorankError if malformed, empty or out of the seed range
    (:func:`~lorank.cli.checks.check_seeds`)."""
    from lorank.cli.checks import check_seeds

    return check_seeds(parse_ints(text, "seeds"))
