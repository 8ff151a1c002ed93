"""Configurations shared by the linearized-training tests (importable: tests/ is on sys.path)."""

from __future__ import annotations

from typing import Any

from lorank.linearized import LinearizedTraining, RunSpec
from lorank.models.lora_shape import AdapterConfig

#: 2 feature groups × ranks 1, 3 × init seeds 5, 6 × learning rates 0.02, 0.1.
RUNS = [RunSpec(r, s, lr, g) for g in (0, 1) for r in (1, 3) for s in (5, 6)
        for lr in (0.02, 0.1)]

#: Keyword sets covering GD + weight decay, SGD/MSE, Adam/rsLoRA, ±1 MSE/LoRA scale (scaling and
#: α go to the AdapterConfig: :func:`case`).
SETTINGS = [
    dict(steps=40, eval_every=10, weight_decay=0.01),
    dict(steps=30, eval_every=7, optimizer="sgd", batch_size=4, loss="mse"),
    dict(steps=30, eval_every=10, optimizer="adam", scaling="rslora", alpha=2.0),
    dict(steps=30, eval_every=10, loss="mse", mse_target="pm1", scaling="lora"),
]


def case(cfg: dict[str, Any], **extra: Any) -> tuple[LinearizedTraining, AdapterConfig]:
    """(LinearizedTraining, AdapterConfig) of a SETTINGS entry; ``extra`` goes to the settings."""
    kw = dict(cfg)
    adapter = {k: kw.pop(k) for k in ("scaling", "alpha") if k in kw}
    if adapter:
        adapter.setdefault("alpha", 1.0)
    return LinearizedTraining(**kw, **extra), AdapterConfig(**adapter)
