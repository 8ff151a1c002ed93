"""Embedding heads whose logits are linear in encoder features: verbaliser, probe and pair.

All three compute logits = φ(x) W^T + b with φ a feature map of the (adapted) encoder and
(W, b) frozen buffers fixed at W0, so f(x; W0) is meaningful before any training and the only
trainable path is through the encoder (the kernel / NTK regime of Malladi et al. 2023; a random
head would not be). With e(x) the attention-masked mean of the last hidden states, L2-normalised:

* verbaliser: φ = e(x), W = E_v / τ, b = 0, where row k of E_v is e(v_k) of the task's label
  description v_k, computed ONCE at W0 (frozen buffer). So logit_k = ⟨e(x), e(v_k)⟩ / τ.
  Freezing E_v keeps f linear in e(x) and the Jacobian cheap (one tower, no label texts in the
  backward). The alternative — re-encoding v_k with the adapted encoder at every step, so LoRA
  also moves the label embeddings — is the SetFit/contrastive view; it doubles the Jacobian
  terms and is not what the science notes (§5) define.
* probe: logistic regression (fit.py) on frozen features of the k-shot train split, C chosen on
  dev; φ = e(x) for one text, φ = (u, v, |u − v|, u ⊙ v) with u = e(a), v = e(b) encoded
  separately for pairs (Conneau et al. 2017, InferSent / Reimers & Gurevych 2019, SBERT).
* pair (issue #10): two towers u = e(a), v = e(b) and a handful of relation features (cosine
  similarity and token-alignment scores), weighted by K × F scalars fitted by logistic regression
  on the train split. No high-dimensional random weights: f(W0) is already a calibrated
  similarity classifier.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from lorank.errors import LorankError, check_number
from lorank.models.backbone import normalize
from lorank.models.classifier import Classifier
from lorank.models.encoder import Encoder
from lorank.models.fit import C_GRID, LinearFit, fit_logistic

PAIR_FEATURES = ("cos", "align")


class LinearFeatureClassifier(Classifier):
    """logits = features(state) W^T + b with W (K, F), b (K,) frozen buffers."""

    def __init__(self, enc: Encoder, task: Any) -> None:
        super().__init__(enc, task)
        kw = {"dtype": self.backbone.dtype, "device": self.device}
        self.register_buffer("head_weight", torch.zeros(self.K, 0, **kw))
        self.register_buffer("head_bias", torch.zeros(self.K, **kw))

    def features(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """φ(x): (B, F)."""
        raise NotImplementedError

    def head_logits(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.features(state) @ self.head_weight.T + self.head_bias

    def set_linear(self, weight: np.ndarray | torch.Tensor, bias: np.ndarray | torch.Tensor
                   ) -> None:
        """Install (W, b) as frozen buffers in the model's dtype."""
        kw = {"dtype": self.backbone.dtype, "device": self.device}
        W, b = (v.detach() if torch.is_tensor(v) else torch.as_tensor(np.asarray(v))
                for v in (weight, bias))
        self.head_weight = W.to(**kw).reshape(self.K, -1).clone()
        self.head_bias = b.to(**kw).reshape(self.K).clone()

    @torch.no_grad()
    def feature_matrix(self, data: Any, batch_size: int = 64, max_length: int = 128
                       ) -> np.ndarray:
        """φ(x; W0) of every row, in batches: (n, F) float64."""
        return self._batched(data, batch_size, max_length, self.features)


class VerbalizerClassifier(LinearFeatureClassifier):
    """logit_k(x) = ⟨e(x), e(v_k)⟩ / τ with e(v_k) frozen at W0 (science notes §5).

    Pair tasks are encoded jointly as one sequence (the tokenizer's pair encoding)."""

    head = "verbalizer"

    def __init__(self, enc: Encoder, task: Any, tau: float = 0.05,
                 descriptions: tuple[str, ...] | None = None) -> None:
        super().__init__(enc, task)
        self.tau = check_number("tau", tau, low=0)
        self.descriptions = tuple(descriptions or task.label_descriptions)
        if len(self.descriptions) != self.K:
            raise LorankError(f"need one label description per class ({self.K})")
        with torch.no_grad():
            state = self.embed(self.to_device(
                self.tokenize(list(self.descriptions), None, 128)))
            E = self.pooled(self.run_layers(state, 0, self.num_layers))
        self.register_buffer("label_embeddings", E.clone())
        self.set_linear(E / self.tau, torch.zeros(self.K))

    def features(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.pooled(state)

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "tau": self.tau,
                "label_descriptions": list(self.descriptions)}


class FittedClassifier(LinearFeatureClassifier):
    """A linear head fitted by logistic regression on φ(x; W0) of the train split."""

    fit_result: LinearFit | None = None

    def fit(self, train: Any, dev: Any | None = None, C_grid: tuple[float, ...] = C_GRID,
            max_length: int = 128) -> LinearFit:
        """Fit (W, b) on train, choose C on dev; installs frozen buffers and returns the fit."""
        if train is None or not hasattr(train, "labels"):
            raise LorankError(f"the {self.head} head is fitted on the k-shot train split: "
                              "pass train=<Split> (and dev=<Split> to choose C)")
        X = self.feature_matrix(train, max_length=max_length)
        Xd = yd = None
        if dev is not None and len(dev):
            Xd, yd = self.feature_matrix(dev, max_length=max_length), np.asarray(dev.labels)
        fit = fit_logistic(X, np.asarray(train.labels), self.K, Xd, yd, C_grid)
        self.set_linear(fit.weight, fit.bias)
        self.fit_result = fit
        return fit

    def config_dict(self) -> dict[str, Any]:
        out = super().config_dict()
        fit = self.fit_result
        if fit is not None:
            digest = hashlib.sha256(np.ascontiguousarray(
                np.concatenate([fit.weight.ravel(), fit.bias])).tobytes()).hexdigest()[:16]
            out.update(C=fit.C, train_accuracy=fit.train_accuracy,
                       dev_accuracy=fit.dev_accuracy, weights_sha256=digest,
                       num_features=int(fit.weight.shape[1]))
        return out


class ProbeClassifier(FittedClassifier):
    """Linear probe: φ = e(x), or (u, v, |u−v|, u⊙v) with texts encoded separately for pairs."""

    head = "probe"

    def __init__(self, enc: Encoder, task: Any) -> None:
        super().__init__(enc, task)
        self.towers = ("a_", "b_") if task.is_pair else ("",)

    def features(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.towers == ("",):
            return self.pooled(state)
        u, v = self.pooled(state, "a_"), self.pooled(state, "b_")
        return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)


def alignment_scores(ha: torch.Tensor, ma: torch.Tensor, hb: torch.Tensor, mb: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft token alignment (BERTScore-style, Zhang et al. 2020) between two sequences.

    With token vectors normalised, S_ij = cos(a_i, b_j). Returns (recall, precision): the mean over
    real tokens of a of max_j S_ij, and the mean over real tokens of b of max_i S_ij; (B,) each.
    Padding is excluded with an additive −4 (cosines lie in [−1, 1]); tensor ops only.
    """
    na, nb = normalize(ha), normalize(hb)
    S = na @ nb.transpose(-1, -2)
    ma_f, mb_f = ma.to(S.dtype), mb.to(S.dtype)
    rec = (S + (mb_f[..., None, :] - 1.0) * 4.0).amax(dim=-1)
    prec = (S + (ma_f[..., :, None] - 1.0) * 4.0).amax(dim=-2)
    rec = (rec * ma_f).sum(-1) / ma_f.sum(-1).clamp_min(1.0)
    prec = (prec * mb_f).sum(-1) / mb_f.sum(-1).clamp_min(1.0)
    return rec, prec


class PairClassifier(FittedClassifier):
    """Sentence-pair head (issue #10): shared encoder on each text, a few relation features.

    φ(a, b) ⊂ [cos(u, v), R(a, b), P(a, b)] (``features=("cos", "align")``), with R, P the
    token-alignment recall / precision of :func:`alignment_scores`; logits = φ W^T + b with
    K × F + K scalars fitted on the train split. For F = 1 this is logit_k = (a_k cos(u, v) + b_k),
    a learned temperature per class.
    """

    head = "pair"
    towers = ("a_", "b_")

    def __init__(self, enc: Encoder, task: Any, features: tuple[str, ...] = PAIR_FEATURES
                 ) -> None:
        if not task.is_pair:
            raise LorankError(f"the pair head needs a sentence-pair task; {task.name} has one "
                              "text per row (use --head verbalizer or probe)")
        super().__init__(enc, task)
        features = tuple(features)
        bad = [f for f in features if f not in PAIR_FEATURES]
        if bad or not features:
            raise LorankError(f"pair features must be among {', '.join(PAIR_FEATURES)}, "
                              f"got {list(features)}")
        self.pair_features = features

    def features(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        cols = []
        if "cos" in self.pair_features:
            cols.append((self.pooled(state, "a_") * self.pooled(state, "b_")).sum(-1))
        if "align" in self.pair_features:
            cols.extend(alignment_scores(state["a_hidden"], state["a_attention_mask"],
                                         state["b_hidden"], state["b_attention_mask"]))
        return torch.stack(cols, dim=-1)

    def config_dict(self) -> dict[str, Any]:
        out = {**super().config_dict(), "pair_features": list(self.pair_features)}
        if self.fit_result is not None:
            out.update(weight=self.fit_result.weight.tolist(), bias=self.fit_result.bias.tolist())
        return out

