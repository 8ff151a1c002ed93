r"""``lorank.recommend``: the LoRA rank the theory prescribes, as a ready ``peft.LoraConfig``.

Given a model (bundled name, local folder, hub id, or a Hugging Face config object — no weights
are loaded) and a task (registered name, :class:`~lorank.data.TaskSpec` or a loaded
:class:`~lorank.data.FewShotData`), it

1. lists the adapted matrices W_ℓ ∈ R^{m_ℓ×n_ℓ} from the config, the target modules and the
   layer selection (:func:`lorank.models.arch.adapted_matrices`);
2. takes K (logits = classes) and N (training examples: k·K for k-shot, LM-BFF) from the task;
3. computes every rank rule (:func:`lorank.theory.prescribe`): Sard r(r+1)/2 > KN (Jang, Lee,
   Ryu, ICML 2024), the manifold count r(m+n) − r² > C*·KN per matrix and in total, and the
   cross-entropy PL statement of "Rethinking the Rank Threshold for LoRA Fine-Tuning"
   (arXiv 2605.03724: any r ≥ 1 *while the linearized training data are separable*);
4. returns a ``peft.LoraConfig`` (α = r so s = α/r = 1; B = 0 / Gaussian A initialisation) with a
   plain-text explanation. Binary tasks (K ≤ 2): the rank of the chosen loss's rule (CE → 1,
   with the separability condition and what was measured about it; squared loss → the total
   manifold reading). K > 2: no rule settles the rank (the variance argument for r = 1 holds for
   binary tasks), so the explanation gives the rules' range and the one command that measures
   the rank on the user's task, and the config takes the top of the range (the Sard bound,
   sufficient for the absence of spurious minima, capped at min(m, n)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lorank.errors import LorankError, check_positive_int
from lorank.theory import C_STAR_PAPER, Prescription, prescribe
from lorank.theory.prescription import (
    CE_CAPACITY_GAUSSIAN,
    CE_CONDITION,
    CE_MEASURED,
    MULTICLASS_NOTE,
)

#: Ranks a measurement runs at least (the quick sweep's grid), extended to the top of the range.
MEASURE_RANKS = (1, 2, 4, 8, 12, 16)
#: LM-BFF's five data seeds: what the report's statistics need.
MEASURE_SEEDS = "13,21,42,87,100"


@dataclass(frozen=True)
class Recommendation:
    """What :func:`recommend` returns: iterable as ``(config, explanation)``.

    Attributes:
        config: the ``peft.LoraConfig`` at the recommended rank.
        explanation: a few lines saying which rule gave the rank and what the others say.
        prescription: every rule's rank (:class:`lorank.theory.Prescription`).
        matrices: module paths of the adapted matrices (relative to the base model).
        measure: the ``lorank train`` command that measures accuracy per rank on the task.
    """

    config: Any
    explanation: str
    prescription: Prescription
    matrices: tuple[str, ...]
    measure: str = ""

    @property
    def settled(self) -> bool:
        """Whether a rule settles the rank (K ≤ 2); for K > 2 ``r`` is the top of the range."""
        return self.prescription.settled

    @property
    def r(self) -> int:
        return int(self.config.r)

    def __iter__(self):
        return iter((self.config, self.explanation))

    def __str__(self) -> str:
        return self.explanation


def _config(model: Any) -> Any:
    if hasattr(model, "model_type") and hasattr(model, "num_hidden_layers"):
        return model
    if not isinstance(model, str):
        raise LorankError("model must be a model name/path or a Hugging Face config, got "
                          f"{type(model).__name__}")
    from lorank.models.bundled import load_config

    return load_config(model)


def _k_n(task_or_dataset: Any, shots: int, data_dir: Any) -> tuple[int, int, str]:
    """K, N and a description of the data."""
    from lorank.data import FewShotData, TaskSpec, get_task, load_task

    if isinstance(task_or_dataset, FewShotData):
        d = task_or_dataset
        return d.K, d.N, f"{d.task.name}, N = {d.N} training examples ({d.source})"
    shots = check_positive_int("shots", shots)
    if isinstance(task_or_dataset, str | TaskSpec):
        spec = get_task(task_or_dataset)
        if data_dir is not None:
            d = load_task(spec, k=shots, data_dir=data_dir)
            return d.K, d.N, f"{spec.name}, {shots}-shot, N = {d.N} ({d.source})"
        return spec.K, shots * spec.K, f"{spec.name}, {shots}-shot: N = {shots} x K"
    raise LorankError("task_or_dataset must be a task name, a TaskSpec or a lorank FewShotData, "
                      f"got {type(task_or_dataset).__name__}")


def measure_ranks(top: int) -> list[int]:
    """The ranks to measure up to ``top``: the quick sweep's grid, the powers of two up to
    ``top`` and ``top`` itself."""
    ranks = set(MEASURE_RANKS) | {2 ** j for j in range(top.bit_length()) if 2 ** j <= top}
    return sorted(ranks | {top})


def measure_command(model: str, data_args: str, top: int, targets: Sequence[str] | None = None,
                    layers: str | Sequence[int] = "all", head: str | None = None) -> str:
    """The one ``lorank train`` command that measures test accuracy per rank on the user's data
    (linearized LoRA, dev selection, five seeds; the report's statistics apply to its output).

    ``data_args`` selects the data (``--task mnli --shots 16`` or the own-data options)."""
    parts = ["lorank train --mode linearized", f"--model {model}", data_args]
    if head:
        parts.append(f"--head {head}")
    if targets:
        parts.append(f"--targets {','.join(targets)}")
    layer_text = layers if isinstance(layers, str) else ",".join(map(str, layers))
    parts.append(f"--layers {layer_text}")
    parts.append(f"--ranks {','.join(map(str, measure_ranks(top)))}")
    parts.append(f"--seeds {MEASURE_SEEDS}")
    return " ".join(p for p in parts if p)


def ce_lines(p: Prescription) -> str:
    """The cross-entropy rule's condition, what was measured, and this setup's K·N/d(1)."""
    ratio = p.capacity_ratio
    where = ("far below" if ratio < CE_CAPACITY_GAUSSIAN / 10 else
             "below" if ratio < CE_CAPACITY_GAUSSIAN else "ABOVE")
    return (f"Cross-entropy rule: {CE_CONDITION}. {CE_MEASURED[0].upper()}{CE_MEASURED[1:]}. "
            f"Here K·N/d(r = 1) = {ratio:.3g}, {where} that Gaussian capacity; `lorank prescribe "
            "--check-separable` checks separability on your data's features.")


def _explain(p: Prescription, r: int, setup: str, shapes_text: str, loss: str,
             command: str) -> str:
    KN = p.K * p.N
    rows = "\n".join(
        f"  - {row.rule}: r = {'none <= min(m,n)' if row.r is None else row.r} ({row.condition})"
        for row in p.rows())
    lo, hi = p.rank_range
    if p.settled:
        head = f"Recommended LoRA rank r = {r} for {setup}."
        why = ("cross-entropy: along gradient descent on the linearized loss a PL inequality "
               "holds at any rank, so the loss reaches its infimum at r = 1 while the linearized "
               "training data are separable (arXiv 2605.03724)"
               if loss == "ce" else
               f"squared loss: the smallest shared rank whose manifold dimension, summed over "
               f"the adapted matrices, exceeds C*·K·N = {p.c_star:g}·{KN} (arXiv 2605.03724)")
        measure = f"To check it on your data: {command}"
    else:
        head = (f"No single rank for {setup}: K = {p.K} > 2 classes, and the rules span "
                f"r = {lo} to {hi}. The LoraConfig takes r = {r}, the top of that range (the "
                "Sard bound: sufficient, no assumption on K), as a safe start, not as the answer.")
        why = f"K = {p.K} > 2: {MULTICLASS_NOTE}"
        measure = f"Measure it on your data (test accuracy per rank, 5 seeds): {command}"
    ce = f"{ce_lines(p)}\n" if loss == "ce" else ""
    return (
        f"{head}\n"
        f"Adapted matrices: {shapes_text}; K = {p.K} logits, N = {p.N} examples (K·N = {KN}).\n"
        f"Why: {why}.\n"
        f"{ce}"
        f"All rules:\n{rows}\n"
        "The Sard / Burer-Monteiro bound (r(r+1)/2 > KN, the 'r >= 12' of 16-shot binary tasks) "
        "is sufficient for the absence of spurious minima, not necessary. Select the learning "
        "rate and steps on the k-shot dev split.\n"
        f"{measure}")


def _data_args(task_or_dataset: Any, shots: int) -> tuple[str, str | None]:
    """``lorank train`` data options for the task (and the head the sweeps use for it)."""
    from lorank.data import FewShotData, get_task

    spec = task_or_dataset.task if isinstance(task_or_dataset, FewShotData) else \
        get_task(task_or_dataset)
    try:
        registered = get_task(spec.name).fingerprint == spec.fingerprint
    except LorankError:
        registered = False
    head = "pair" if spec.is_pair else None
    if not registered:
        return "--data <your file> <the options you load it with>", head
    k = task_or_dataset.k if isinstance(task_or_dataset, FewShotData) else shots
    return f"--task {spec.name.lower().replace('-', '')} --shots {k or shots}", head


def recommend(
    model: Any,
    task_or_dataset: Any,
    targets: Sequence[str] | None = None,
    layers: str | Sequence[int] = "all",
    loss: str = "ce",
    c_star: float = C_STAR_PAPER,
    shots: int = 16,
    data_dir: Any = None,
) -> Recommendation:
    """The rank the theory prescribes for fine-tuning ``model`` on a task, as a peft LoraConfig.

    Args:
        model: bundled name (``"minilm"``, ``"mpnet"``), local folder, hub id, or a Hugging Face
            config (``transformers.PretrainedConfig``); only the config is read.
        task_or_dataset: a registered task name (``"sst2"``, ``"mnli"``), a ``TaskSpec``, or a
            ``FewShotData`` (then N is its train size).
        targets: LoRA target modules (default: query and value; aliases per architecture).
        layers: ``"all"``, ``"last"`` or layer indices.
        loss: ``"ce"`` (cross-entropy; rank 1 for K ≤ 2, valid while the linearized data are
            separable) or ``"mse"`` (squared loss; manifold count). For K > 2 either way the
            config takes the top of the rules' range and the explanation says why.
        c_star: the manifold constant C* (empirical, budget-dependent; see lorank.capacity).
        shots: k examples per class (N = k·K) when a task name / spec is given.
        data_dir: with a task name, load the actual k-shot split from here to read N.

    Returns:
        A :class:`Recommendation` (unpacks as ``config, explanation = recommend(...)``).

    Raises:
        LorankError: unknown model/task/target, bad numbers, or (squared loss) no rank
            ≤ min(m, n) satisfying the manifold count.
    """
    from peft import LoraConfig

    from lorank.finetune.adapter import peft_targets
    from lorank.models.arch import adapted_matrices, arch_spec, resolve_targets

    config = _config(model)
    matrices = adapted_matrices(config, targets, layers)
    spec = arch_spec(config.model_type)
    K, N, setup = _k_n(task_or_dataset, shots, data_dir)
    p = prescribe(K, N, [m.shape for m in matrices], c_star=c_star, loss=loss)
    r = p.loss_rank
    if r is None:
        raise LorankError(
            f"no rank <= min(m, n) satisfies the manifold count C*·K·N = {c_star:g}·{K * N} for "
            "these matrices; adapt more matrices or layers, or use full fine-tuning")
    if not p.settled:  # K > 2: the top of the rules' range, within every matrix's rank
        r = min(p.rank_range[1], min(min(m.shape) for m in matrices))
    shapes = sorted({m.shape for m in matrices})
    names, adapted_layers = resolve_targets(spec, targets), sorted({m.layer for m in matrices})
    shapes_text = (f"{len(matrices)} ({', '.join(f'{m}x{n}' for m, n in shapes)}; "
                   f"{', '.join(names)} in {_layers_text(adapted_layers)})")
    lora = LoraConfig(
        r=r, lora_alpha=r, lora_dropout=0.0, bias="none", init_lora_weights="gaussian",
        **peft_targets(spec, names, adapted_layers, int(config.num_hidden_layers)))
    model_name = model if isinstance(model, str) else (
        getattr(config, "_name_or_path", "") or config.model_type)
    data_args, head = _data_args(task_or_dataset, shots)
    command = measure_command(model_name if isinstance(model, str) else "<model>", data_args,
                              max(p.rank_range[1], r), targets, layers, head)
    text = _explain(p, r, f"{model_name} on {setup}", shapes_text, loss, command)
    return Recommendation(lora, text, p, tuple(m.path for m in matrices), command)


def _layers_text(layers: list[int]) -> str:
    if len(layers) == 1:
        return f"layer {layers[0]}"
    if len(layers) > 3 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"layers {layers[0]}-{layers[-1]}"
    return "layers " + ",".join(map(str, layers))
