"""Rank thresholds: closed forms from the papers and hypothesis properties."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lorank.errors import LorankError
from lorank.theory import (
    ce_min_rank,
    lora_param_count,
    manifold_dim,
    manifold_min_rank,
    prescribe,
    sard_min_rank,
    sard_rounded_rank,
)


@pytest.mark.parametrize(("K", "N", "exact", "rounded"), [
    (2, 32, 11, 12),   # 16-shot binary: the "r >= 12" of the new paper vs the exact 11
    (1, 32, 8, 8),     # single-logit binary head
    (3, 48, 17, 17),   # MNLI 16-shot
    (1, 1, 2, 2),      # r(r+1)/2 > 1 needs r = 2
    (2, 1, 2, 2),      # 3 > 2
    (1, 3, 3, 3),      # 6 > 3, 3 = 3 fails
])
def test_sard_closed_forms(K, N, exact, rounded):
    assert sard_min_rank(K, N) == exact
    assert sard_rounded_rank(K, N) == rounded


def test_manifold_closed_forms():
    assert manifold_dim(1, 768, 768) == 1535
    assert manifold_min_rank(2, 32, [(768, 768)], c_star=1.35) == 1     # 1535 > 86.4
    assert manifold_min_rank(2, 1024, [(768, 768)], c_star=1.35) == 2   # 1535 < 2764.8 < 3068
    assert manifold_min_rank(2, 1024, [(768, 768)] * 2, reading="total") == 1   # 3070 > 2764.8
    assert manifold_min_rank(2, 1024, [(768, 768)] * 2, reading="per_matrix") == 2


def test_manifold_unsatisfiable_says_none():
    # 3x3 matrices reach dimension 9 at r = 3; 2 * 100 * 1.35 is far above
    assert manifold_min_rank(2, 100, [(3, 3)]) is None
    assert manifold_min_rank(2, 100, [(3, 3), (768, 768)], reading="per_matrix") is None
    # shared rank: the 3x3 matrix saturates at 9, the 768x768 one carries the count
    assert manifold_min_rank(2, 100, [(3, 3), (768, 768)], reading="total") == 1
    assert manifold_min_rank(1, 10, [(2, 2), (4, 40)], c_star=1.0, reading="total") == 1
    assert prescribe(2, 100, [(3, 3)]).rows()[3].r is None


def test_ce_rank_is_one_and_param_counts():
    assert ce_min_rank() == 1
    assert lora_param_count(4, [(768, 768), (384, 1536)]) == 4 * (1536 + 1920)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: sard_min_rank(0, 32), "K must be a positive integer"),
    (lambda: sard_min_rank(2, -1), "N must be a positive integer"),
    (lambda: sard_min_rank(2.5, 3), "K must be a positive integer"),
    (lambda: sard_min_rank(True, 3), "K must be a positive integer"),
    (lambda: manifold_min_rank(2, 32, [(768, 768)], c_star=0), "c_star must be > 0"),
    (lambda: manifold_min_rank(2, 32, [(768, 768)], c_star=float("nan")), "finite"),
    (lambda: manifold_min_rank(2, 32, [(768,)]), "a shape must be (m, n)"),
    (lambda: manifold_min_rank(2, 32, []), "at least one adapted matrix"),
    (lambda: manifold_min_rank(2, 32, [(0, 4)]), "m must be a positive integer"),
    (lambda: manifold_min_rank(2, 32, [(4, 4)], reading="mean"), "reading must be"),
    (lambda: manifold_dim(5, 4, 8), "exceeds min(m, n)"),
    (lambda: prescribe(2, 32, [(4, 4)], loss="hinge"), "loss must be"),
])
def test_bad_inputs_raise_one_line(call, message):
    with pytest.raises(LorankError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        call()
    assert "\n" not in str(e.value)


KN = st.tuples(st.integers(1, 8), st.integers(1, 5000))
SHAPES = st.lists(st.tuples(st.integers(1, 1024), st.integers(1, 1024)), min_size=1, max_size=4)
C = st.floats(0.1, 3.0)


@given(KN)
def test_sard_is_smallest(kn):
    K, N = kn
    r = sard_min_rank(K, N)
    assert r * (r + 1) / 2 > K * N
    assert r == 1 or (r - 1) * r / 2 <= K * N
    assert sard_rounded_rank(K, N) == math.ceil(math.sqrt(2 * K * N))


@given(KN, SHAPES, C)
def test_manifold_is_smallest_and_per_matrix_dominates(kn, shapes, c):
    K, N = kn
    bound = c * K * N
    total = manifold_min_rank(K, N, shapes, c, reading="total")
    per = manifold_min_rank(K, N, shapes, c, reading="per_matrix")
    def dim(r, m, n):  # a matrix smaller than r is adapted at full rank
        return manifold_dim(min(r, m, n), m, n)

    if total is not None:
        assert sum(dim(total, m, n) for m, n in shapes) > bound
        assert total == 1 or sum(dim(total - 1, m, n) for m, n in shapes) <= bound
    else:
        assert sum(m * n for m, n in shapes) <= bound
    if per is not None:
        assert all(dim(per, m, n) > bound for m, n in shapes)
        assert per == 1 or any(dim(per - 1, m, n) <= bound for m, n in shapes)
        assert total is not None and per >= total
    else:
        for m, n in shapes:
            if m * n <= bound:
                break
        else:
            pytest.fail("per-matrix reading said None although every matrix can satisfy it")


@given(KN, st.integers(1, 50), SHAPES, C)
def test_ranks_monotone_in_KN(kn, extra, shapes, c):
    K, N = kn
    assert sard_min_rank(K, N + extra) >= sard_min_rank(K, N)
    for reading in ("total", "per_matrix"):
        small = manifold_min_rank(K, N, shapes, c, reading)
        big = manifold_min_rank(K, N + extra, shapes, c, reading)
        if big is not None:
            assert small is not None and big >= small


def test_theory_does_not_import_torch():
    code = "import sys, lorank.theory, lorank.theory.thresholds; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
