"""Fit the few numbers of a probe / pair head: regularised logistic regression on frozen features.

Multinomial logistic regression (scikit-learn, L2 penalty, lbfgs) on standardised features
z = (φ − μ)/σ (μ, σ from the train split). The inverse regularisation strength C is chosen on the
k-shot dev split (highest dev accuracy, ties broken by lower dev log-loss, then by smaller C), and
the model is refit on train only: N counts training examples, dev is for selection (LM-BFF).
The fitted map is returned as logits = φ W^T + b with the standardisation folded in; for K = 2
sklearn's single score s = w·z + c becomes the logits (−s/2, +s/2), which have the same softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lorank.errors import LorankError

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class LinearFit:
    """logits = features @ weight.T + bias; weight (K, F), bias (K,); chosen C and scores."""

    weight: np.ndarray
    bias: np.ndarray
    C: float
    train_accuracy: float
    dev_accuracy: float | None


def _logistic(C: float):  # sklearn estimator
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=5000, tol=1e-8)


def _as_logits(model: object, K: int) -> tuple[np.ndarray, np.ndarray]:
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    if K == 2 and coef.shape[0] == 1:
        return np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2,
                                                                      intercept / 2])
    return coef, intercept


def _scores(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    logits = X @ W.T + b
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    acc = float((logits.argmax(axis=1) == y).mean())
    return acc, float(-logp[np.arange(len(y)), y].mean())


def fit_logistic(X: np.ndarray, y: np.ndarray, K: int, X_dev: np.ndarray | None = None,
                 y_dev: np.ndarray | None = None, C_grid: tuple[float, ...] = C_GRID
                 ) -> LinearFit:
    """Fit logits = X W^T + b by L2-regularised logistic regression, C selected on dev.

    Shapes: X (N, F), y (N,) in {0..K-1}; X_dev (N_dev, F). Every class must occur in y.
    Without a dev split the middle of the grid (C = 1) is used.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if X.ndim != 2 or len(X) != len(y):
        raise LorankError(f"features must be (N, F) with N = len(labels), got {X.shape}")
    missing = sorted(set(range(K)) - set(y.tolist()))
    if missing:
        raise LorankError(f"the training split has no example of class(es) {missing}: a fitted "
                          "head needs every class")
    mu = X.mean(axis=0)
    sigma = X.std(axis=0)
    sigma = np.where(sigma > 1e-12, sigma, 1.0)
    Z = (X - mu) / sigma
    grid = C_grid if X_dev is not None and y_dev is not None and len(y_dev) else (1.0,)
    candidates = []
    for C in grid:
        model = _logistic(C).fit(Z, y)
        Wz, bz = _as_logits(model, K)
        W, b = Wz / sigma, bz - (Wz / sigma) @ mu
        dev_acc, dev_loss = (None, 0.0) if len(grid) == 1 else _scores(
            W, b, np.asarray(X_dev, np.float64), np.asarray(y_dev, np.int64))
        candidates.append(((-(dev_acc or 0.0), dev_loss, C), W, b, C, dev_acc))
    _, W, b, C, dev_acc = min(candidates, key=lambda c: c[0])
    train_acc, _ = _scores(W, b, X, y)
    return LinearFit(weight=W, bias=b, C=float(C), train_accuracy=train_acc,
                     dev_accuracy=dev_acc)
