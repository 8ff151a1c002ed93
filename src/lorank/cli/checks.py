"""Input checks the commands run before any model loads or anything is written.

Every check raises :class:`~lorank.errors.LorankError` with one line (the CLI prints
``lorank: error: ...`` and exits 2). They only read: configs (``config.json``, no weights), the
task registry and the file system's permissions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from lorank.errors import LorankError, check_positive_int

if TYPE_CHECKING:
    from lorank.linearized.experiment import SweepConfig


def check_seeds(seeds: Sequence[int], what: str = "--seeds") -> list[int]:
    """Seeds are non-negative integers (NumPy and torch seed only from 0 to 2**32 − 1)."""
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not
           0 <= s < 2**32]
    if bad:
        raise LorankError(f"{what} must be integers from 0 to 2**32-1, got {bad[0]}")
    return list(seeds)


def max_rank(model: str, targets: Sequence[str] | None, layers: str | Sequence[int]
             ) -> tuple[int, Any]:
    """The largest LoRA rank every adapted matrix can hold, min over matrices of min(m, n), and
    the :class:`~lorank.models.arch.AdaptedMatrix` that sets it — from the model's config alone
    (no weights are loaded)."""
    from lorank.models.arch import adapted_matrices
    from lorank.models.bundled import load_config

    mats = adapted_matrices(load_config(model), list(targets or ()), layers)
    if not mats:
        raise LorankError(f"no matrix to adapt in {model!r} for targets {list(targets or ())} "
                          f"and layers {layers!r}")
    mat = min(mats, key=lambda x: min(x.m, x.n))
    return min(mat.m, mat.n), mat


def check_positive_ranks(ranks: Sequence[int], what: str = "--ranks") -> list[int]:
    """Ranks are integers ≥ 1 (the check that needs no model)."""
    return [check_positive_int(what, r) for r in ranks]


def check_ranks(ranks: Sequence[int], model: str, targets: Sequence[str] | None,
                layers: str | Sequence[int], what: str = "--ranks") -> list[int]:
    """Ranks are integers 1 ≤ r ≤ min(m, n) of every adapted matrix of ``model``."""
    check_positive_ranks(ranks, what)
    limit, mat = max_rank(model, targets, layers)
    over = [r for r in ranks if r > limit]
    if over:  # the message of the adapter's own check (lorank.finetune.adapter), said earlier
        raise LorankError(f"rank r={over[0]} exceeds min(m, n)={limit} of the {mat.m}x{mat.n} "
                          f"matrix {mat.path}")
    return list(ranks)


def check_train_options(cfg: SweepConfig, registered_task: bool = True) -> None:
    """``lorank train``: the task is known (``registered_task``: not a user's own data), seeds
    are non-negative, ranks fit the adapted matrices, and the feature cache folder can be
    written — all before the model loads."""
    from lorank.atomic import check_writable_dir

    if registered_task:
        from lorank.data.tasks import get_task

        get_task(cfg.task)
    check_seeds(list(cfg.seeds))
    if cfg.use_cache:
        from lorank.models.bundled import cache_dir

        check_writable_dir(cache_dir(), "feature cache folder (LORANK_CACHE_DIR)")
    ad = cfg.adapter
    check_ranks(list(ad.ranks), cfg.model, list(ad.targets or ()), ad.layers)


class IntLike(click.ParamType):
    """An integer option that also accepts an integral number in scientific notation
    (``--N 1e11``); anything else is click's one-line usage error."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or not number.is_integer() or abs(number) >= 2**63:
            self.fail(f"{value!r} is not an integer", param, ctx)
        return int(number)


INT_LIKE = IntLike()
