r"""Length buckets: run a padded batch as a few shorter batches without changing any logit.

A split is tokenised to the longest row (SST-2 16-shot on MiniLM: 32 rows padded to 55 tokens,
730 real tokens out of 1,760), and every block above the cached prefix pays for the padding. A
padded key position p > ℓ_i (ℓ_i = the row's last attended position + 1) is masked out of every
attention (additive mask 0 / dtype-min, or DeBERTa's 0/1 mask), so nothing at positions ≤ ℓ_i
depends on it; the heads read only attended positions (masked mean pooling, the prompt head's
mask position). Hence for a group G of rows, cutting every sequence tensor to
L_G = max_{i∈G} ℓ_i leaves each row's logits unchanged up to floating-point summation order
(relative positions, MPNet's position bias and DeBERTa's relative embeddings depend only on the
kept positions).

:func:`plan_buckets` partitions the rows into at most ``max_buckets`` groups, contiguous in the
order of increasing length, minimising the padded token count

    cost(G_1, …, G_k) = Σ_j |G_j| · Σ_towers L_{G_j, tower}

by dynamic programming over the sorted rows (O(k·n²); exact for one tower, a heuristic order for
two-tower classifiers, whose rows are sorted by their summed lengths). Rows keep their identity:
the caller scatters each bucket's logits back to the original positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

#: keys of an input/state dict that carry a sequence axis (axis 1), per tower prefix
SEQUENCE_KEYS = ("hidden", "attention_mask", "input_ids", "token_type_ids")
#: sequence-aligned keys that belong to the single tower "" (the prompt head's mask indicator)
SINGLE_TOWER_KEYS = ("mask_position",)


def row_lengths(x: dict[str, Any], towers: Sequence[str]) -> np.ndarray:
    """ℓ_{i,t}: last attended position + 1 of every row i and tower t: (n, len(towers)) ints.

    Works for right and left padding (left padding gives ℓ = T: nothing can be cut).
    """
    cols = []
    for p in towers:
        mask = x[f"{p}attention_mask"]
        T = mask.shape[1]
        if T == 0:
            cols.append(np.zeros(mask.shape[0], dtype=np.int64))
            continue
        pos = torch.arange(1, T + 1, device=mask.device)
        cols.append((mask.ne(0) * pos).amax(dim=1).cpu().numpy().astype(np.int64))
    return np.stack(cols, axis=1)


def plan_buckets(lengths: np.ndarray, max_buckets: int) -> list[np.ndarray]:
    """Partition rows into ≤ ``max_buckets`` groups minimising the padded token count.

    Args:
        lengths: (n, towers) ints from :func:`row_lengths`.
        max_buckets: at most this many groups (1 = one group, the padded batch cut to its longest
            row).

    Returns:
        Row-index arrays (ascending length order between groups), together a permutation of
        range(n); empty groups are never returned.
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(len(lengths), -1)
    n = len(lengths)
    if n == 0:
        return []
    order = np.argsort(lengths.sum(axis=1), kind="stable")
    L = lengths[order]
    k_max = max(1, min(int(max_buckets), n))
    inf = np.iinfo(np.int64).max // 4
    # best[k][j]: minimal cost of the first j sorted rows in exactly k groups; O(n) memory
    best = np.full((k_max + 1, n + 1), inf, dtype=np.int64)
    cut = np.zeros((k_max + 1, n + 1), dtype=np.int64)
    best[0, 0] = 0
    for j in range(1, n + 1):
        # width[i] = Σ_towers max length of sorted rows i..j-1, for i < j
        width = np.maximum.accumulate(L[:j][::-1], axis=0)[::-1].sum(axis=1)
        i = np.arange(j)
        for k in range(1, k_max + 1):
            cand = best[k - 1, :j] + (j - i) * width
            a = int(np.argmin(cand))
            best[k, j], cut[k, j] = cand[a], a
    k = int(np.argmin(best[1:, n])) + 1  # fewest groups among the cheapest
    bounds, j = [], n
    while k > 0:
        i = int(cut[k, j])
        bounds.append((i, j))
        j, k = i, k - 1
    return [order[i:j] for i, j in reversed(bounds)]


def padded_tokens(lengths: np.ndarray, groups: Sequence[np.ndarray]) -> int:
    """Σ_groups |G| · Σ_towers max length: the token count the groups cost."""
    lengths = np.asarray(lengths).reshape(len(lengths), -1)
    return int(sum(len(g) * lengths[g].max(axis=0).sum() for g in groups if len(g)))


def cut_rows(x: dict[str, Any], rows: torch.Tensor | np.ndarray, towers: Sequence[str],
             keep: Sequence[int]) -> dict[str, Any]:
    """The inputs/state of ``rows`` with every sequence tensor of tower t cut to ``keep[t]``.

    Sequence tensors are ``{p}hidden``, ``{p}attention_mask``, ``{p}input_ids``,
    ``{p}token_type_ids`` for each tower prefix p, and ``mask_position`` for the single tower
    ``""``; every other tensor is only indexed by rows, other values pass through.
    """
    index = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    seq = {f"{p}{k}": int(n) for p, n in zip(towers, keep, strict=True) for k in SEQUENCE_KEYS}
    if tuple(towers) == ("",):
        seq.update({k: int(keep[0]) for k in SINGLE_TOWER_KEYS})
    out = {}
    for key, v in x.items():
        if not torch.is_tensor(v):
            out[key] = v
            continue
        v = v.index_select(0, index.to(v.device))
        out[key] = v[:, :seq[key]].contiguous() if key in seq else v
    return out
