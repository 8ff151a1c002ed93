"""The sweep methods: one module per method, registered on import (``register_method``).

The experiment layer sits above every engine, so the methods live here and call down into them:

* :mod:`~lorank.experiments.methods.prescribe` — ``prescribe``: the rank rules (lorank.theory).
* :mod:`~lorank.experiments.methods.linearized` — ``linearized``: NTK-regime training
  (lorank.linearized), every rank of a feature group in one vectorised call.
* :mod:`~lorank.experiments.methods.lora` — ``lora``: real LoRA (lorank.finetune, batched).
* :mod:`~lorank.experiments.methods.cstar` — ``cstar``: the C* transition (lorank.capacity).
* :mod:`~lorank.experiments.methods.controls` — ``planted`` and ``capacity``: the positive
  controls on real Jacobians (lorank.linearized.planted, lorank.linearized.als).

:data:`lorank.experiments.registry.METHOD_PROVIDERS` maps each name to its module, imported on
first use (in the coordinating process and in every worker).
"""
