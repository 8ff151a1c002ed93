"""Encoders, their LoRA targets and layer structure, and classification heads.

:mod:`lorank.models.arch` (architecture registry, adapted-matrix shapes from a config) and
:mod:`lorank.models.bundled` (bundled encoders, offline-first configs) import no torch.
"""
