"""Model selection on dev curves: pure functions, curves in, choice out (reused by peft runs).

LM-BFF practice (Gao et al., ACL 2021): train with a few hyper-parameters (here learning rates),
evaluate the dev split every few steps, and keep the (hyper-parameter, step) with the best dev
metric. With 32 dev examples the metric moves in steps of 1/32, so ties are common; a curve may
carry a second, finer criterion (the dev loss, lower is better) that breaks ties on the metric —
without it, ties between W0 (step 0) and a trained checkpoint always went to W0. Remaining ties
go to fewer steps (the earlier checkpoint), then to the key listed first (callers list learning
rates in ascending order, so ties go to the smaller one). Test labels never enter.
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


def _rank_key(value: float, tie: float, higher_is_better: bool) -> tuple[float, float]:
    """Larger is better: (±value, −tie); a non-finite tie-breaker never wins a tie."""
    return (value if higher_is_better else -value, -tie if math.isfinite(tie) else -math.inf)


def best_on_curve(steps: Sequence[int], values: Sequence[float], higher_is_better: bool = True,
                  ties: Sequence[float] | None = None) -> tuple[int, float] | None:
    """(step, value) of the best finite value on one curve; among equal values the lowest
    ``ties`` entry (e.g. dev loss) wins, then the earliest step; None if no value is finite."""
    if len(steps) != len(values) or (ties is not None and len(ties) != len(values)):
        raise LorankError(f"a curve needs as many steps as values ({len(steps)} vs {len(values)})")
    tie_of = list(ties) if ties is not None else [0.0] * len(values)
    best: tuple[int, float] | None = None
    best_key: tuple[float, float] | None = None
    for step, value, tie in sorted(zip(steps, values, tie_of, strict=True), key=lambda x: x[0]):
        v = float(value)
        if not math.isfinite(v):
            continue
        key = _rank_key(v, float(tie), higher_is_better)
        if best_key is None or key > best_key:
            best, best_key = (int(step), v), key
    return best


def select_checkpoint(
    curves: Mapping[Hashable, tuple[Sequence[int], Sequence[float]]
                    | tuple[Sequence[int], Sequence[float], Sequence[float]]],
    higher_is_better: bool = True,
) -> Choice:
    """Pick the (key, step) with the best dev value over all curves.

    Args:
        curves: key -> (steps, values) or (steps, values, ties); non-finite values (diverged
            runs) are never chosen; ``ties`` (lower is better, e.g. the dev loss) break ties
            on the value.
        higher_is_better: True for accuracy/F1, False for losses.

    Ties (same value and tie-breaker): fewer steps first, then the order of ``curves``.
    Raises LorankError if no curve has a finite value.
    """
    choice: Choice | None = None
    choice_key: tuple[float, float] | None = None
    for key, curve in curves.items():
        steps, values = curve[0], curve[1]
        ties = curve[2] if len(curve) > 2 else None
        best = best_on_curve(steps, values, higher_is_better, ties)
        if best is None:
            continue
        step, value = best
        tie = float(ties[list(steps).index(step)]) if ties is not None else 0.0
        rank = _rank_key(value, tie, higher_is_better)
        if choice is None or rank > choice_key or (rank == choice_key and step < choice.step):
            choice, choice_key = Choice(key, step, value), rank
    if choice is None:
        raise LorankError("no finite dev value on any curve: every run diverged")
    return choice
