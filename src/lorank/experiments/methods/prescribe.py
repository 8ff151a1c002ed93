"""Built-in methods that need no training engine.

``prescribe``: the closed-form rank thresholds of :mod:`lorank.theory` evaluated for the run's
setup. K is the number of logits (the task's classes from :mod:`lorank.data.tasks` for a
verbaliser head, or ``options.K``), N = k · classes training examples (LM-BFF k-shot), and the
adapted shapes (m_ℓ, n_ℓ) come from the encoder's config for the run's targets and layers.
Its ``prepare`` step (once per features key) resolves those shapes, so a sweep over ranks
reads each model config once.

Metrics: every rule's smallest rank (Sard exact r(r+1)/2 > KN and rounded ⌈√(2KN)⌉, Jang, Lee,
Ryu, ICML 2024; manifold Σ_ℓ r(m_ℓ+n_ℓ) − r² > C*·K·N per matrix and in total, and the
cross-entropy rank 1, arXiv 2605.03724), plus, at the run's rank r, the LoRA parameter count
Σ_ℓ r(m_ℓ+n_ℓ), the total manifold dimension and whether r meets each rule.
"""

from __future__ import annotations

from typing import Any

from lorank.errors import check_number, check_positive_int
from lorank.experiments.config import FeaturesKey, RunConfig
from lorank.experiments.registry import RunContext, register_method
from lorank.theory import C_STAR_PAPER, lora_param_count, manifold_dim, prescribe


def logits_and_examples(config: RunConfig) -> tuple[int, int]:
    """(K, N): K = ``options.K`` or the task's classes; N = k · classes (LM-BFF sample), or,
    for a user's explicit training file (``data`` with a dev file), its rows."""
    from lorank.data.tasks import get_task

    data = config.data
    classes = (get_task(config.task).K if data is None
               else len(data.labels) if data.labels else data.task_spec().K)
    K = check_positive_int("options.K", config.option("K", classes))
    if data is not None and not data.sampled:
        from lorank.data.source import training_file

        return K, len(training_file(data)[1])
    return K, config.k * classes


def adapted_shapes(key: FeaturesKey, ctx: RunContext) -> list[tuple[int, int]]:
    """Shapes (m, n) of the matrices LoRA adapts for the key's model, targets and layers."""
    from lorank.models.arch import adapted_matrices
    from lorank.models.bundled import load_config
    from lorank.models.lora_shape import layers_json

    layers = layers_json(key.layers)
    matrices = adapted_matrices(load_config(key.model), list(key.targets), layers)
    return [mat.shape for mat in matrices]


def _validate(config: RunConfig) -> None:
    logits_and_examples(config)
    check_number("options.c_star", config.option("c_star", C_STAR_PAPER), low=0)


@register_method("prescribe", prepare=adapted_shapes, validate=_validate)
def run_prescribe(config: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """Closed-form rank prescriptions for the run's (K, N, shapes) and checks at its rank."""
    K, N = logits_and_examples(config)
    shapes = ctx.features if ctx.features is not None else adapted_shapes(
        config.features_key, ctx)
    c_star = float(config.option("c_star", C_STAR_PAPER))
    p = prescribe(K, N, shapes, c_star=c_star, loss="mse" if config.loss == "mse" else "ce")
    r = config.rank
    dims = [manifold_dim(min(r, m, n), m, n) for m, n in shapes]
    bound = c_star * K * N
    metrics = {
        "K": K, "N": N, "matrices": len(shapes), "c_star": c_star,
        "sard_exact": p.sard_exact, "sard_rounded": p.sard_rounded,
        "manifold_per_matrix": p.manifold_per_matrix, "manifold_total": p.manifold_total,
        "ce": p.ce, "recommended": p.recommended,
        "lora_params": lora_param_count(r, shapes),
        "manifold_dim_total": sum(dims), "manifold_dim_min": min(dims),
        "meets_sard": r * (r + 1) / 2 > K * N,
        "meets_manifold_total": sum(dims) > bound,
        "meets_manifold_per_matrix": min(dims) > bound,
    }
    ranks = list(range(1, r + 1))
    curves = {"rank": ranks,
              "manifold_dim_total": [sum(manifold_dim(min(q, m, n), m, n) for m, n in shapes)
                                     for q in ranks]}
    return {"metrics": metrics, "curves": curves}
