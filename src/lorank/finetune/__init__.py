"""Real (non-linearized) LoRA fine-tuning through peft, with LM-BFF selection and NTK-gap checks.

* :mod:`lorank.finetune.config` — :class:`LoraTraining` (lr, schedule, optimiser, steps, batch,
  selection); the adapter itself (r, α, scaling, targets, layers, dropout, init) is the
  :class:`~lorank.models.lora_shape.AdapterConfig` both engines share.
* :mod:`lorank.finetune.adapter` — :func:`attach_lora`, :class:`Adapter` (ΔW, merge, export),
  :func:`load_adapter`.
* :mod:`lorank.finetune.inputs` — prepared splits, cached frozen prefix.
* :mod:`lorank.finetune.train` — the training loop (:func:`fit`).
* :mod:`lorank.finetune.gap` — real vs linearized predictions (forward-mode jvp).
* :mod:`lorank.finetune.metrics` — ΔW spectra and numerical ranks.
* :mod:`lorank.finetune.run` — :func:`finetune`: grid, selection, measurement, records.
* :mod:`lorank.finetune.batched` — many configurations (ranks, seeds, lrs, inits) trained in one
  program, equal to peft one at a time: :func:`train_batched`, :func:`finetune_batched`;
  its pieces: :mod:`lorank.finetune.stacked` (stacked adapters under vmap, the stacked
  optimiser) and :mod:`lorank.finetune.buckets` (length buckets).
* :mod:`lorank.experiments.methods.lora` — the ``lora`` sweep method.

Submodules import torch and peft; import them explicitly (this package imports nothing).
"""
