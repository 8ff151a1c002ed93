r"""Attach a peft LoRA adapter to a lorank classifier's encoder, and work with it.

:func:`attach_lora` builds a ``peft.LoraConfig`` from an
:class:`~lorank.models.lora_shape.AdapterConfig`
and wraps the classifier's *base model* (``BertModel``, ``MPNetModel``, …) with
``peft.get_peft_model``. peft replaces each adapted ``nn.Linear`` W0 ∈ R^{m×n} **in place** by a
``lora.Linear`` computing

    y = W0 x + s · B (A · dropout(x)),    B ∈ R^{m×r} (0 at init), A ∈ R^{r×n},

so the classifier (which holds the same base-model object) runs the adapted encoder without any
change, while its head stays outside peft and frozen. ``task_type`` is left unset on purpose:
``SEQ_CLS`` would add a classifier to ``modules_to_save`` and train it in full (for MPNet 592 k
parameters against 37 k for rank-1 LoRA on q,v), swamping a rank comparison.

:class:`Adapter` gives the trainable LoRA parameters, a copy/restore of their state (for
keeping the best checkpoint), ΔW = s·B·A per adapted matrix (peft's ``get_delta_weight``),
merge/unmerge, re-initialisation from a seed, export in peft's format and detaching.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lorank.errors import LorankError
from lorank.models.arch import AdaptedMatrix, ArchSpec, resolve_targets
from lorank.models.lora_shape import AdapterConfig, layers_json

ADAPTER = "default"
#: lorank init name -> peft ``init_lora_weights`` ("fan_in" re-draws A after peft's init).
_PEFT_INIT = {"gaussian": "gaussian", "kaiming": True, "fan_in": "gaussian"}


def factor_names(prefix: str, path: str) -> tuple[str, str]:
    """peft's parameter names in the classifier of (A, B) of the matrix at ``path``
    (``prefix``: the base model's parameter-name prefix)."""
    return f"{prefix}{path}.lora_A.{ADAPTER}.weight", f"{prefix}{path}.lora_B.{ADAPTER}.weight"


def base_model_of(clf: torch.nn.Module, matrix: AdaptedMatrix | None = None
                  ) -> tuple[torch.nn.Module, str]:
    """The classifier's Hugging Face base model and its parameter-name prefix in ``clf``.

    Uses ``clf.param_name(matrix)`` = prefix + ``matrix.path`` + ``".weight"`` (the interface of
    :mod:`lorank.models`); ``matrix`` defaults to the first of ``clf.adapted_matrices(None,
    "all")``.
    """
    matrix = matrix or clf.adapted_matrices(None, "all")[0]
    name = clf.param_name(matrix)
    suffix = f"{matrix.path}.weight"
    if not name.endswith(suffix):
        raise LorankError(f"classifier parameter {name!r} does not end with {suffix!r}")
    prefix = name[: -len(suffix)]
    return (clf.get_submodule(prefix.rstrip(".")) if prefix else clf), prefix


def peft_targets(spec: ArchSpec, names: Sequence[str], layers: Sequence[int], num_layers: int
                 ) -> dict[str, Any]:
    """peft's ``target_modules`` / ``layers_to_transform`` / ``layers_pattern`` for a selection.

    Readable form when unambiguous: the targets' paths inside a block (``attention.self.query``;
    peft matches them as suffixes) plus ``layers_to_transform`` when not every layer is adapted.
    If one target's path is a suffix of another's (BERT's ``output.dense`` vs
    ``attention.output.dense``), the exact module paths (relative to the base model) are listed.
    """
    subs = [spec.targets[n][0] for n in names]
    all_subs = [v[0] for v in spec.targets.values()]
    ambiguous = any(o != s and o.endswith(f".{s}") for s in subs for o in all_subs)
    if ambiguous:
        return {"target_modules": [f"{spec.layer_path.format(i=i)}.{s}"
                                   for i in layers for s in subs]}
    out: dict[str, Any] = {"target_modules": list(subs)}
    if list(layers) != list(range(num_layers)):
        out["layers_to_transform"] = list(layers)
        out["layers_pattern"] = spec.layer_path.split(".")[-2]
    return out


def lora_config(settings: AdapterConfig, spec: ArchSpec, matrices: Sequence[AdaptedMatrix],
                num_layers: int) -> Any:
    """The ``peft.LoraConfig`` for ``settings`` on ``matrices``; checks 1 ≤ r ≤ min(m, n)."""
    from peft import LoraConfig

    for mat in matrices:
        if settings.r > min(mat.m, mat.n):
            raise LorankError(
                f"rank r={settings.r} exceeds min(m, n)={min(mat.m, mat.n)} of the "
                f"{mat.m}x{mat.n} matrix {mat.path}")
    names = resolve_targets(spec, settings.targets)
    layers = sorted({m.layer for m in matrices})
    return LoraConfig(
        r=settings.r, lora_alpha=settings.lora_alpha, use_rslora=settings.scaling == "rslora",
        lora_dropout=settings.dropout, bias="none",
        init_lora_weights=_PEFT_INIT[settings.init],
        **peft_targets(spec, names, layers, num_layers),
    )


@dataclass
class Adapter:
    """A LoRA adapter living inside a classifier.

    Attributes:
        clf: the classifier (its base model now holds ``lora.Linear`` modules).
        peft_model: the ``peft.PeftModel`` wrapping the classifier's base model.
        matrices: the adapted matrices (paths relative to the base model).
        settings: the :class:`AdapterConfig` it was built from.
        prefix: the base model's parameter-name prefix inside ``clf``.
    """

    clf: torch.nn.Module
    peft_model: Any
    matrices: list[AdaptedMatrix]
    settings: AdapterConfig
    prefix: str

    @property
    def start(self) -> int:
        """The lowest adapted layer: layers [0, start) stay frozen and can be cached."""
        return min(m.layer for m in self.matrices)

    def module(self, matrix: AdaptedMatrix) -> Any:
        """The peft ``lora.Linear`` that replaced ``matrix``'s ``nn.Linear``."""
        return self.peft_model.base_model.model.get_submodule(matrix.path)

    def lora_modules(self) -> list[Any]:
        return [self.module(m) for m in self.matrices]

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        """Trainable LoRA factors, keyed by their name in ``clf`` (A and B of every matrix)."""
        out = {}
        for mat in self.matrices:
            mod = self.module(mat)
            a, b = factor_names(self.prefix, mat.path)
            out[a], out[b] = mod.lora_A[ADAPTER].weight, mod.lora_B[ADAPTER].weight
        return out

    def num_parameters(self) -> int:
        """Σ_ℓ r(m_ℓ + n_ℓ)."""
        return sum(p.numel() for p in self.parameters().values())

    def base_weights(self) -> dict[str, torch.Tensor]:
        """W0 of every adapted matrix, keyed by its (``base_layer``) parameter name in ``clf``."""
        return {f"{self.prefix}{m.path}.base_layer.weight": self.module(m).base_layer.weight
                for m in self.matrices}

    def delta_weights(self) -> dict[str, torch.Tensor]:
        """ΔW_ℓ = s·B_ℓ·A_ℓ (m×n) per adapted matrix path, from peft's ``get_delta_weight``."""
        with torch.no_grad():
            return {m.path: self.module(m).get_delta_weight(ADAPTER).detach().clone()
                    for m in self.matrices}

    def state(self, extra: dict[str, torch.nn.Parameter] | None = None
              ) -> dict[str, torch.Tensor]:
        """Detached copies of the LoRA factors (and of ``extra`` parameters, e.g. a trained
        head)."""
        params = {**self.parameters(), **(extra or {})}
        return {k: v.detach().clone() for k, v in params.items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a :meth:`state` back into the live parameters (names as in ``clf``)."""
        params = dict(self.clf.named_parameters())
        with torch.no_grad():
            for k, v in state.items():
                params[k].copy_(v)

    def reset(self, seed: int) -> None:
        """Re-initialise every adapter (B = 0, A from ``settings.init``) from ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for mod in self.lora_modules():
                mod.reset_lora_parameters(ADAPTER, _PEFT_INIT[self.settings.init])
                if self.settings.init == "fan_in":
                    A = mod.lora_A[ADAPTER].weight
                    with torch.no_grad():
                        A.normal_(0.0, 1.0 / math.sqrt(A.shape[1]))

    def set_dropout_training(self, flag: bool) -> None:
        """Put only the LoRA dropout modules in train (``True``) or eval mode."""
        for mod in self.lora_modules():
            mod.lora_dropout[ADAPTER].train(flag)

    @contextlib.contextmanager
    def merged(self) -> Iterator[None]:
        """Context: W ← W0 + ΔW merged into the base weights (peft ``merge``); on exit peft
        unmerges and W0 is restored bit-exactly from a copy (W0 + ΔW − ΔW is not W0 in floats)."""
        mods = self.lora_modules()
        saved = [m.base_layer.weight.detach().clone() for m in mods]
        for mod in mods:
            mod.merge()
        try:
            yield
        finally:
            with torch.no_grad():
                for mod, w0 in zip(mods, saved, strict=True):
                    mod.unmerge()
                    mod.base_layer.weight.copy_(w0)

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Context: the adapters are bypassed, the classifier computes f(x; W0)."""
        with self.peft_model.disable_adapter():
            yield

    def save(self, folder: str | os.PathLike) -> Path:
        """Export in peft's format (``adapter_config.json`` + ``adapter_model.safetensors``),
        loadable with ``peft.PeftModel.from_pretrained(AutoModel.from_pretrained(base), folder)``.

        Written atomically: a temporary folder renamed into place.
        """
        from lorank.atomic import atomic_dir

        with atomic_dir(folder, kind="adapter") as tmp:
            self.peft_model.save_pretrained(str(tmp))
        return Path(folder)

    def detach(self) -> None:
        """Remove the adapter: the base model gets its original ``nn.Linear`` modules back."""
        self.peft_model.unload()

    def __enter__(self) -> Adapter:
        return self

    def __exit__(self, *exc: object) -> None:
        """``with attach_lora(...) as adapter:`` detaches the adapter when the block ends."""
        self.detach()


def attach_lora(clf: torch.nn.Module, settings: AdapterConfig, seed: int = 0) -> Adapter:
    """Inject a LoRA adapter described by ``settings`` into ``clf``'s encoder.

    Args:
        clf: a lorank classifier (``lorank.models.build_classifier``), without an adapter.
        settings: rank, α/scaling, targets, layers, dropout, init.
        seed: seeds the initialisation of A (B = 0, so f(x; W0 + ΔW) = f(x; W0) at init).

    Returns:
        The :class:`Adapter`; every non-LoRA parameter of ``clf`` is frozen.

    Raises:
        LorankError: unknown target module, layer out of range, r < 1 or r > min(m, n).
    """
    from peft import get_peft_model

    layers = layers_json(settings.layers)
    matrices = clf.adapted_matrices(settings.targets, layers)
    if not matrices:
        raise LorankError("no matrix selected for LoRA (check targets and layers)")
    if _lora_paths(clf):
        raise LorankError("this classifier already holds a LoRA adapter; detach it first")
    base, prefix = base_model_of(clf, matrices[0])
    config = lora_config(settings, _spec_of(base), matrices, int(base.config.num_hidden_layers))
    with torch.random.fork_rng(devices=[]):  # peft's init must not move the global RNG
        peft_model = get_peft_model(base, config, adapter_name=ADAPTER)
    adapter = Adapter(clf=clf, peft_model=peft_model, matrices=list(matrices),
                      settings=settings, prefix=prefix)
    adapter.reset(seed)
    got, want = set(_lora_paths(base)), {m.path for m in matrices}
    if got != want:  # peft must have adapted exactly the selected matrices (no more, no fewer)
        adapter.detach()
        raise LorankError(f"peft adapted {sorted(got - want) or sorted(want - got)} unexpectedly; "
                          "report this as a lorank bug")
    for name, p in clf.named_parameters():
        if not name.startswith(prefix):
            p.requires_grad_(False)
    for p in adapter.parameters().values():
        p.requires_grad_(True)
    return adapter


def _spec_of(base: torch.nn.Module) -> ArchSpec:
    from lorank.models.arch import arch_spec

    return arch_spec(base.config.model_type)


def _lora_paths(module: torch.nn.Module) -> list[str]:
    """Paths (inside ``module``) of the peft LoRA layers it holds."""
    from peft.tuners.lora import LoraLayer

    return [name for name, mod in module.named_modules() if isinstance(mod, LoraLayer)]


def load_adapter(clf: torch.nn.Module, folder: str | os.PathLike) -> Adapter:
    """Load an adapter exported by :meth:`Adapter.save` (or any peft LoRA adapter for the same
    base model) into a lorank classifier, for inference: ``PeftModel.from_pretrained`` on the
    classifier's base model.

    Raises LorankError when the folder holds no adapter or it adapts matrices lorank does not know.
    """
    from peft import PeftModel

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise LorankError(f"no adapter_config.json in {str(folder)!r}: not a peft adapter folder")
    spec_all = clf.adapted_matrices(tuple(_spec_of(clf.model).targets), "all")
    base, prefix = base_model_of(clf, spec_all[0])
    peft_model = PeftModel.from_pretrained(base, str(folder), adapter_name=ADAPTER)
    known = {m.path: m for m in spec_all}
    paths = _lora_paths(base)
    unknown = [p for p in paths if p not in known]
    if unknown or not paths:
        peft_model.unload()
        raise LorankError(f"adapter in {str(folder)!r} adapts modules lorank does not know: "
                          f"{unknown[:3] or 'none'}")
    cfg = peft_model.peft_config[ADAPTER]
    matrices = [known[p] for p in paths]
    settings = AdapterConfig(
        ranks=(int(cfg.r),), alpha=float(cfg.lora_alpha),
        scaling="rslora" if cfg.use_rslora else "lora",
        init="kaiming" if cfg.init_lora_weights is True else "gaussian",
        targets=tuple(dict.fromkeys(m.target for m in matrices)),
        layers=tuple(sorted({m.layer for m in matrices})), dropout=float(cfg.lora_dropout),
    )
    return Adapter(clf=clf, peft_model=peft_model, matrices=matrices, settings=settings,
                   prefix=prefix)
