"""PL measurements on linearized-LoRA trajectories (lorank.linearized.pl_real, ``lorank pl``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cli_helpers import one_line_error as _error
from lorank.capacity.pl import pl_ratios
from lorank.cli.main import main
from lorank.errors import LorankError
from lorank.linearized.losses import loss_and_grad
from lorank.linearized.pl_real import (
    PLConfig,
    best_run,
    ce_separable,
    kernel_step,
    loss_inf,
    pl_on_features,
    squared_loss_inf,
    summarize_trajectory,
)
from lorank.linearized.train import LinearizedTraining, RunSpec, train_linearized
from lorank.models.lora_shape import AdapterConfig
from lorank.ntk.features import Features
from synthetic_features import BLOCKS, synthetic_features

torch.set_num_threads(1)


def synthetic(N=8, K=2, seed=0, tied=False):
    """Random features (N, K, P); ``tied``: J[:, 1] = -J[:, 0] (rank N of NK rows, K = 2)."""
    return synthetic_features(N, K, seed, tied=tied)


def test_squared_loss_inf_is_zero_for_full_row_rank():
    f = synthetic()
    ls = squared_loss_inf(f)
    assert ls.row_rank == f.N * f.K and ls.L_inf < 1e-20 and ls.L0 > 0


def test_squared_loss_inf_matches_lstsq_when_rank_deficient():
    f = synthetic(tied=True)
    ls = squared_loss_inf(f)
    phi = f.flat().numpy()
    Y = np.eye(2)[f.labels.numpy()]
    res = (Y - f.f0.numpy()).reshape(-1)
    x, *_ = np.linalg.lstsq(phi, res, rcond=None)
    ref = 0.5 * np.sum((phi @ x - res) ** 2) / f.N
    assert ls.row_rank == f.N
    assert ls.L_inf == pytest.approx(ref, rel=1e-9) and ls.L_inf > 0.1


def test_ce_separability_and_loss_inf():
    assert ce_separable(synthetic()) and ce_separable(synthetic(tied=True))
    f = synthetic()
    same = Features(f.J[:, :1].repeat(1, 2, 1), f.f0, f.labels, list(BLOCKS))  # equal rows
    assert not ce_separable(same)
    assert loss_inf(same, "ce")[1].startswith("assumed")
    assert loss_inf(synthetic(tied=True), "mse")[0] > 0
    with pytest.raises(LorankError, match="loss"):
        loss_inf(f, "hinge")


def test_kernel_step_is_inverse_top_curvature():
    f = synthetic()
    sv = np.linalg.svd(f.flat().numpy(), compute_uv=False)
    assert kernel_step(f) == pytest.approx(f.N / sv[0] ** 2, rel=1e-10)
    zero = Features(torch.zeros_like(f.J), f.f0, f.labels, list(BLOCKS))
    with pytest.raises(LorankError, match="kernel step"):
        kernel_step(zero)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_summary_equals_pl_ratios_of_engine_curves(loss):
    f = synthetic(seed=3)
    eta = kernel_step(f)
    res = train_linearized([f], [RunSpec(r, 5, eta, 0) for r in (1, 3)],
                           LinearizedTraining(steps=40, loss=loss, log_every=1, eval_every=40))
    L_inf = loss_inf(f, loss)[0]
    for tr, fac in zip(res.trajectories, res.final, strict=True):
        s = summarize_trajectory(tr, L_inf, threshold=1e-3)
        ref = pl_ratios(np.array(tr.objective), np.array(tr.grad_norm2), L_inf)
        assert s.mu_min == ref.mu_min and s.kappa_min == ref.kappa_min
        assert s.t_mu_min == tr.steps[ref.t_min]
        assert s.final_loss == tr.objective[-1] and tr.objective[0] == s.L0
        # the logged ‖∇Φ‖² at the last step is the autograd gradient of the factors there
        A = [a.clone().requires_grad_(True) for a in fac.A]
        B = [b.clone().requires_grad_(True) for b in fac.B]
        delta = torch.cat([(fac.s * b @ a).reshape(-1) for a, b in zip(A, B, strict=True)])
        out = (f.f0 + (f.J @ delta))[:, :, None]
        L, _ = loss_and_grad(out, f.labels, loss)
        grads = torch.autograd.grad(L.sum(), [*A, *B])
        assert sum(float(g.square().sum()) for g in grads) == pytest.approx(
            tr.grad_norm2[-1], rel=1e-8)


def test_steps_to_threshold_and_mu_above():
    f = synthetic(seed=1)
    res = train_linearized([f], [RunSpec(1, 0, 10 * kernel_step(f), 0)],
                           LinearizedTraining(steps=300, loss="ce", log_every=1, eval_every=300))
    tr = res.trajectories[0]
    s = summarize_trajectory(tr, 0.0, threshold=1e-2)
    gaps = np.array(tr.objective)
    first = int(np.nonzero(gaps < 1e-2)[0][0])
    assert s.steps_to_threshold == tr.steps[first]
    mu = np.array(tr.grad_norm2) / gaps
    assert s.mu_min_above == pytest.approx(mu[gaps >= 1e-2].min(), rel=1e-12)


def test_pl_on_features_rank_one_ce_reaches_threshold():
    train = [synthetic(seed=s) for s in (0, 1)]
    cfg = PLConfig(adapter=AdapterConfig(ranks=(1, 2)), seeds=(13, 21), steps=300,
                   loss="ce", lr_mults=(3.0, 10.0))
    result = pl_on_features(train, [13, 21], cfg)
    assert len(result.runs) == 2 * 2 * 2 and len(result.chosen) == 4
    for c in result.chosen:
        same = [r for r in result.runs if r.rank == c.rank and r.seed == c.seed]
        assert c == best_run(same)
    row = next(r for r in result.table() if r["rank"] == 1)
    assert row["below_threshold"] == 1.0 and row["final_loss"][0] < 1e-2
    data = json.loads(result.to_json())
    assert data["loss_inf"]["13"]["L_inf"] == 0.0 and len(data["table"]) == 2
    assert data["provenance"]["versions"]["torch"] and "host" in data["provenance"]


def test_best_run_prefers_finite_smallest_loss():
    f = synthetic()
    res = train_linearized([f], [RunSpec(1, 0, lr, 0) for lr in (1e-3, kernel_step(f), 1e6)],
                           LinearizedTraining(steps=20, loss="mse", log_every=1, eval_every=20))
    runs = [summarize_trajectory(t, 0.0, 1e-2) for t in res.trajectories]
    assert runs[2].diverged_step is not None and math.isnan(runs[2].final_loss)
    assert best_run(runs) == min(runs[:2], key=lambda r: r.final_loss)


@pytest.mark.parametrize("kwargs, match", [
    ({"ranks": (0,)}, "ranks"), ({"seeds": (1, 1)}, "seeds"), ({"steps": 0}, "steps"),
    ({"lrs": (-1.0,)}, "learning rates"), ({"threshold": 0.0}, "threshold"),
    ({"loss": "hinge"}, "loss"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(LorankError, match=match):
        if "ranks" in kwargs:  # the rank grid lives in the adapter
            kwargs = {"adapter": AdapterConfig(ranks=kwargs["ranks"])}
        PLConfig(**kwargs)


@pytest.mark.parametrize("argv, match", [
    (["pl", "--task", "sst2", "--ranks", "1,x"], "ranks"),
    (["pl", "--task", "sst2", "--ranks", "0"], "ranks"),
    (["pl", "--task", "nosuchtask"], "unknown task"),
    (["pl", "--task", "sst2", "--lrs", "0.1,-1"], "learning rates"),
    (["pl", "--task", "sst2", "--threshold", "0"], "threshold"),
    (["pl", "--task", "sst2", "--loss", "hinge"], "hinge"),
    (["pl", "--task", "sst2", "--threads", "0"], "threads"),
])
def test_cli_bad_input_is_one_line_exit_2(capsys, argv, match):
    assert match in _error(capsys, argv)


def test_cli_on_tiny_model_with_real_sst2(tiny, data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LORANK_CACHE_DIR", str(tmp_path))
    argv = ["pl", "--model", tiny, "--task", "sst2", "--ranks", "1,2", "--seeds", "13",
            "--steps", "30", "--max-length", "32", "--data-dir", str(data_dir), "--threads", "1"]
    main([*argv, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in data["table"]] == [1, 2]
    assert data["loss_inf"]["13"]["N"] == 32 and len(data["runs"]) == 2 * 5
    for run in data["chosen"]:
        assert run["final_loss"] is None or run["final_loss"] <= run["L0"] + 1e-6
    main([*argv, "--loss", "mse"])
    out = capsys.readouterr().out
    assert "min μ" in out and "mse" in out


def test_table_excludes_seeds_where_every_lr_diverged():
    train = [synthetic(seed=0), synthetic(seed=1)]
    cfg = PLConfig(adapter=AdapterConfig(ranks=(1,)), seeds=(1, 2), steps=50, loss="ce", lrs=(1e7,))
    result = pl_on_features(train, [1, 2], cfg)
    row = result.table()[0]
    assert row["seeds_all_diverged"] == 2 and math.isnan(row["mu_min"])
    assert row["below_threshold"] == 0.0
