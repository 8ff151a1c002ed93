r"""Is a user's training set separable by the linearized model? The condition of the CE rule.

The cross-entropy (PL) rule of arXiv 2605.03724 is rank-free only while the linearized training
data are separable: then inf L = 0 and GD drives the loss to it at any r ≥ 1; past separability
the threshold is back (docs/capacity.md: on Gaussian features rank one reaches zero CE only up to
K·N/d ≈ 2.5). This module checks the condition on real features (``lorank prescribe
--check-separable``):

the margin features D_{i,k} = J_{i,y_i} − J_{i,k} (k ≠ y_i), rows of length P, have full row rank
N(K − 1) ⇒ any positive margins ⟨D_{i,k}, ΔW⟩ are reachable by full linearized fine-tuning, so
the data are separable (:func:`lorank.linearized.pl_real.ce_separable`, same numerical rank rule).
Full row rank is sufficient, not necessary: a deficient rank means "not certified", not
"inseparable". The train features come from the NTK pipeline and its on-disk cache
(:func:`lorank.linearized.experiment.load_seeds`), exactly as training would compute them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lorank.linearized.pl_real import margin_rank
from lorank.ntk.features import Features


@dataclass(frozen=True)
class Separability:
    """The outcome of the check on one training split.

    Attributes:
        separable: the margin features have full row rank (certified separable).
        rank, rows: their numerical rank and N(K − 1).
        N, K, P: training examples, logits, adapted parameters.
        seed: the data seed of the split (None for explicit files).
        source: where the data came from.
    """

    separable: bool
    rank: int
    rows: int
    N: int
    K: int
    P: int
    seed: int | None
    source: str

    def line(self) -> str:
        """One sentence for the CLI."""
        what = (f"margin features of the N = {self.N} training examples have rank {self.rank} "
                f"of N(K−1) = {self.rows} (P = {self.P:,} adapted parameters)")
        if self.separable:
            return (f"separable: {what}; the linearized data are separable, so the CE rule's "
                    "condition holds and the CE infimum 0 is reachable at any rank")
        return (f"not certified separable: {what}; the CE rule's rank-free claim is not "
                "established for these data — measure the rank")


def features_separability(features: Features, seed: int | None = None,
                          source: str = "") -> Separability:
    """:class:`Separability` of given train features (``separable`` as ``ce_separable``)."""
    rank, rows = margin_rank(features)
    return Separability(rank == rows, rank, rows, features.N, features.K, features.P, seed, source)


def check_separable(data, model: str, head: str, targets: Sequence[str] | None = None,
                    layers: str | Sequence[int] = "last", max_length: int = 128,
                    dtype: str = "float32", use_cache: bool = True,
                    data_dir: str | None = None) -> Separability:
    """Load ``model``, build the ``head`` for ``data`` (a :class:`lorank.data.FewShotData`),
    compute (or read from the feature cache) the train NTK features of the adapted matrices and
    check the margin features' rank."""
    from lorank.linearized.experiment import SweepConfig, load_seeds
    from lorank.models.lora_shape import AdapterConfig

    seed = data.seed if data.seed is not None else 0
    adapter = AdapterConfig(targets=tuple(targets) if targets else ("query", "value"),
                            layers=layers)
    cfg = SweepConfig(task=data.task.name, model=model, head=head, adapter=adapter,
                      seeds=(seed,), k=data.k or 16, max_length=max_length,
                      dtype=dtype, data_dir=data_dir, use_cache=use_cache)
    (loaded,) = load_seeds(cfg, load_data=lambda _seed: data)
    return features_separability(loaded.train, data.seed, data.source)
