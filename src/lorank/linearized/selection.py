"""Model selection on dev curves: pure functions, curves in, choice out (reused by peft runs).

LM-BFF practice (Gao et al., ACL 2021): train with a few hyper-parameters (here learning rates),
evaluate the dev split every few steps, and keep the (hyper-parameter, step) with the best dev
metric. Ties go to fewer steps (the earlier checkpoint), then to the key listed first (callers
list learning rates in ascending order, so ties go to the smaller one). Test labels never enter.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from lorank.errors import LorankError


@dataclass(frozen=True)
class Choice:
    """The selected checkpoint: curve ``key`` (e.g. a learning rate), ``step`` and its ``value``."""

    key: Hashable
    step: int
    value: float


def best_on_curve(steps: Sequence[int], values: Sequence[float], higher_is_better: bool = True
                  ) -> tuple[int, float] | None:
    """(step, value) of the best finite value on one curve, earliest step on ties; None if none."""
    if len(steps) != len(values):
        raise LorankError(f"a curve needs as many steps as values ({len(steps)} vs {len(values)})")
    best: tuple[int, float] | None = None
    for step, value in sorted(zip(steps, values, strict=True), key=lambda sv: sv[0]):
        v = float(value)
        if not math.isfinite(v):
            continue
        if best is None or (v > best[1] if higher_is_better else v < best[1]):
            best = (int(step), v)
    return best


def select_checkpoint(
    curves: Mapping[Hashable, tuple[Sequence[int], Sequence[float]]],
    higher_is_better: bool = True,
) -> Choice:
    """Pick the (key, step) with the best dev value over all curves.

    Args:
        curves: key -> (steps, values); non-finite values (diverged runs) are never chosen.
        higher_is_better: True for accuracy/F1, False for losses.

    Ties: fewer steps first, then the order of ``curves``.
    Raises LorankError if no curve has a finite value.
    """
    choice: Choice | None = None
    for key, (steps, values) in curves.items():
        best = best_on_curve(steps, values, higher_is_better)
        if best is None:
            continue
        step, value = best
        if choice is None:
            choice = Choice(key, step, value)
            continue
        better = value > choice.value if higher_is_better else value < choice.value
        if better or (value == choice.value and step < choice.step):
            choice = Choice(key, step, value)
    if choice is None:
        raise LorankError("no finite dev value on any curve: every run diverged")
    return choice
