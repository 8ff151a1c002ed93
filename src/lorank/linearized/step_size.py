r"""Kernel step sizes: the learning-rate unit η0 of linearized (and real) LoRA training.

Plain gradient descent on an objective Φ(θ) is stable near θ0 for a step η < 2/λ_max(∇²Φ(θ0)) and
barely moves for η ≪ 1/λ_max. The *kernel step* η0 = 1/λ_max is therefore the natural unit of a
learning-rate grid: ``lr = c·η0`` with c ≈ 0.1 … 1.5 moves every head and every rank, whereas an
absolute grid does not (lorank measured η0 from 0.4 to 4·10⁵ across the pair heads of the
few-shot tasks; science notes §6).

Two parameterisations, one objective Φ = L(f_lin) + λ/2‖θ‖², with L the mean loss over N
examples and f_lin(x) = f0(x) + Σ_ℓ ⟨G_ℓ(x), ΔW_ℓ⟩ (Jang, Lee, Ryu, ICML 2024):

* **full linearized fine-tuning**, θ = ΔW: ∇²Φ = Φᵀ H Φ / N + λI, with Φ = J as (NK, P) and H the
  block-diagonal Hessian of the per-example loss in the logits (MSE: I_K; CE: diag(p) − ppᵀ at
  f0). :func:`full_kernel_step` computes 1/λ_max from the NK × NK matrix H^{1/2}ΦΦᵀH^{1/2}/N.
* **LoRA**, θ = (A_ℓ, B_ℓ) with ΔW_ℓ = s·B_ℓA_ℓ at the LoRA initialisation B = 0 (Hu et al.
  2021). There the Hessian is exactly

      ∇²Φ(θ0)[dA, dB] = ( s·dBᵀM + λ dA ,  s²·Ĝᵀ H Ĝ dB / N + s·M dAᵀ + λ dB ),

  with Ĝ_ℓ(x)_k = G_ℓ(x)_k A_ℓᵀ ∈ R^{m×r} (the B-Jacobian; ∂f/∂A = 0 at B = 0) and
  M_ℓ = Σ_i ∂L/∂f_i · G_ℓ(x_i) ∈ R^{m×n} the full fine-tuning gradient: a Gauss–Newton block in B
  plus an indefinite A–B coupling whose eigenvalues ±s·σ(M) are the saddle at B = 0.
  :func:`lora_kernel_step` returns 1/λ_max of this operator (largest algebraic eigenvalue, by
  Lanczos, ``scipy.sparse.linalg.eigsh``), so the unit accounts for the rank r, the scale s and
  the draw of A: with s = 1 and A ~ N(0, 1/n) the B-block's curvature is about r/n of the full
  one, so η0(r) shrinks as r grows and an absolute learning rate trains rank 1 about n/r times
  more slowly than rank r (see :mod:`lorank.linearized.model`).

Both are computed in float64 on the train features (never the dev or test split).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lorank.errors import LorankError, check_positive_int
from lorank.linearized.losses import check_loss
from lorank.linearized.model import init_factors, split_flat
from lorank.models.lora_shape import scale
from lorank.ntk.features import Features


def logit_curvature(f0: Tensor, labels: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    """Per-example gradient E = ∂ℓ/∂f (N, K) and Hessian H = ∂²ℓ/∂f² (N, K, K) of the loss at the
    logits f0 (N, K), **not** divided by N.

    CE: E = p − e_y, H = diag(p) − ppᵀ (p = softmax f0); MSE (one-hot targets): E = f0 − e_y,
    H = I_K.
    """
    check_loss(loss)
    f0 = f0.to(torch.float64)
    N, K = f0.shape
    onehot = torch.nn.functional.one_hot(labels.long(), K).to(torch.float64)
    if loss == "mse":
        return f0 - onehot, torch.eye(K, dtype=torch.float64).expand(N, K, K)
    p = torch.softmax(f0, dim=1)
    return p - onehot, torch.diag_embed(p) - p[:, :, None] * p[:, None, :]


def full_kernel_step(features: Features, loss: str = "ce", weight_decay: float = 0.0) -> float:
    """η0 = 1/λ_max(ΦᵀHΦ/N + λI) of full linearized fine-tuning in ΔW at W0 (module doc).

    Uses the NK × NK matrix S = H^{1/2}ΦΦᵀH^{1/2}/N, whose non-zero eigenvalues are those of
    ΦᵀHΦ/N; when only per-token factors are held, S is formed from the Gram Θ = ΦΦᵀ
    (:meth:`Features.gram`, shared with the kernel baselines). Shapes: J (N, K, P). Raises
    LorankError for zero or non-finite features.
    """
    _, H = logit_curvature(features.f0, features.labels, loss)
    N, K = features.N, features.K
    root = _psd_sqrt(H)  # (N, K, K)
    if features.stored_J is None:
        theta = features.gram().reshape(N, K, N, K)
        S = torch.einsum("ikl,iljm,jnm->ikjn", root, theta, root).reshape(N * K, N * K)
        return _inverse(float(torch.linalg.eigvalsh(S)[-1]) / N + weight_decay)
    if N * K > DENSE_MAX:
        return _inverse(_top_eig_lanczos(features.J, root) / N + weight_decay)
    phi = features.J.to(torch.float64)  # (N, K, P)
    Z = torch.einsum("ikl,ilp->ikp", root, phi).reshape(N * K, -1)
    lam = float(torch.linalg.eigvalsh(Z @ Z.T)[-1]) / N + weight_decay
    return _inverse(lam)


#: Above this many rows (N·K) :func:`full_kernel_step` finds λ_max by Lanczos on J-products
#: instead of forming the NK × NK Gram (N = 1,024 MiniLM q,v: 2 s instead of minutes).
DENSE_MAX = 512


def _top_eig_lanczos(J: Tensor, root: Tensor) -> float:
    """λ_max of H^{1/2} Φ Φᵀ H^{1/2} by Lanczos (scipy ``eigsh``): each product is one pass of J
    (N, K, P) and of Jᵀ in J's dtype, never the (NK × NK) Gram or a float64 copy of J."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    N, K, _ = J.shape
    flat = J.reshape(N * K, -1)
    rootJ = root.to(J.dtype)

    def matvec(v: np.ndarray) -> np.ndarray:
        u = torch.as_tensor(np.asarray(v).reshape(N, K), dtype=J.dtype)
        u = torch.einsum("ikl,il->ik", rootJ, u).reshape(-1)
        w = flat @ (flat.T @ u)
        w = torch.einsum("ikl,il->ik", rootJ, w.reshape(N, K))
        return w.reshape(-1).double().numpy()

    op = LinearOperator((N * K, N * K), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(N * K)
    return float(eigsh(op, k=1, which="LA", tol=1e-6, v0=v0, return_eigenvectors=False)[0])


def _psd_sqrt(H: Tensor) -> Tensor:
    """Symmetric square root of a batch of PSD matrices (N, K, K)."""
    w, V = torch.linalg.eigh(H)
    return (V * w.clamp_min(0).sqrt()[:, None, :]) @ V.mT


def _inverse(lam: float) -> float:
    if not math.isfinite(lam) or lam <= 0:
        raise LorankError("the loss has no positive curvature at the initialisation (features "
                          "are zero or not finite): no kernel step")
    return 1.0 / lam


def lora_hessian_operator(features: Features, r: int, seed: int, loss: str = "ce",
                          scaling: str = "none", alpha: float = 1.0,
                          weight_decay: float = 0.0):
    """The Hessian of Φ at the LoRA init (B = 0, A from :func:`init_factors` with ``seed``) as a
    symmetric ``scipy.sparse.linalg.LinearOperator`` on θ = (A_ℓ …, B_ℓ …) flattened (module doc).

    Dimension Σ_ℓ r(m_ℓ + n_ℓ); one product costs O(NK·Σ m r + Σ m n r).
    """
    from scipy.sparse.linalg import LinearOperator

    r = check_positive_int("rank", r)
    s = scale(scaling, alpha, r)
    E, H = logit_curvature(features.f0, features.labels, loss)
    N, K = features.N, features.K
    H = H / N
    A, _ = init_factors(features.blocks, r, seed, torch.float64)
    Ghat, M = [], []
    for a, G in zip(A, features.G.values(), strict=True):
        G64 = G.to(torch.float64)  # (N, K, m, n)
        Ghat.append(torch.einsum("ikmn,rn->ikmr", G64, a).reshape(N * K, -1))  # (NK, m·r)
        M.append(torch.einsum("ik,ikmn->mn", E / N, G64))
    Gh = torch.cat(Ghat, dim=1)  # (NK, Σ m r)
    shapes_A, shapes_B = [(r, b.n) for b in features.blocks], [(b.m, r) for b in features.blocks]
    nA = sum(r * b.n for b in features.blocks)
    dim = nA + Gh.shape[1]

    def matvec(v: np.ndarray) -> np.ndarray:
        v = torch.from_numpy(np.asarray(v, dtype=np.float64).reshape(-1))
        dA, dB = split_flat(v[:nA], shapes_A), split_flat(v[nA:], shapes_B)
        df = s * (Gh @ torch.cat([b.reshape(-1) for b in dB])).reshape(N, K)
        e = torch.einsum("ikl,il->ik", H, df).reshape(-1)
        gB_gn = s * (Gh.T @ e)
        gA, gB = [], []
        for mm, da, db in zip(M, dA, dB, strict=True):
            gA.append(s * (db.T @ mm) + weight_decay * da)
            gB.append(s * (mm @ da.T) + weight_decay * db)
        out_B = torch.cat([g.reshape(-1) for g in gB]) + gB_gn
        return torch.cat([torch.cat([g.reshape(-1) for g in gA]), out_B]).numpy()

    return LinearOperator((dim, dim), matvec=matvec, rmatvec=matvec, dtype=np.float64)


def lora_kernel_step(features: Features, r: int, seed: int, loss: str = "ce",
                     scaling: str = "none", alpha: float = 1.0,
                     weight_decay: float = 0.0) -> float:
    """η0 = 1/λ_max(∇²Φ(θ0)) for LoRA of rank ``r`` at its initialisation (module doc).

    λ_max is the largest algebraic eigenvalue of :func:`lora_hessian_operator` (Lanczos, tol
    1e-6 relative). LorankError if it is not positive (zero or non-finite features).
    """
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    op = lora_hessian_operator(features, r, seed, loss, scaling, alpha, weight_decay)
    v0 = np.random.default_rng(seed).standard_normal(op.shape[0])
    try:
        lam = float(eigsh(op, k=1, which="LA", tol=1e-6, v0=v0, maxiter=20 * op.shape[0],
                          return_eigenvectors=False)[0])
    except ArpackNoConvergence as exc:  # keep the best estimate Lanczos reached
        if exc.eigenvalues is None or len(exc.eigenvalues) == 0:
            raise LorankError("no kernel step: Lanczos did not converge") from None
        lam = float(np.max(exc.eigenvalues))
    return _inverse(lam)


def split_kernel_step(clf: torch.nn.Module, split, *, targets: Sequence[str],
                      layers: str | Sequence[int], max_length: int, loss: str = "ce",
                      weight_decay: float = 0.0, k: int | None = None, seed: int | None = None,
                      cache_root: str | None = None, use_cache: bool = True) -> float:
    """:func:`full_kernel_step` of a classifier on a data split (its NTK features through the
    on-disk cache, :func:`lorank.ntk.pipeline.split_features`): the learning-rate unit of real
    LoRA runs, which then try the same rates c·η0 as the linearized runs of the same cell."""
    from lorank.ntk.pipeline import split_features

    feats, _, _ = split_features(clf, split, targets=targets, layers=layers,
                                 max_length=max_length, k=k, seed=seed, use_cache=use_cache,
                                 cache_root=cache_root)
    return full_kernel_step(feats, loss, weight_decay)
