"""``lorank ntk``: compute (or load from the cache) the NTK features of one k-shot split.

Prints the shapes of J (N, K, P) and f0, the adapted matrices, the cache file and the time.
Large splits (test) can be big: N·K·P entries; ``--max-mb`` refuses anything above a limit
before computing (train/predict on test streams Jacobians instead; see ``lorank train``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from lorank.cli.options_data import own_data_options
from lorank.cli.parsers import parse_list
from lorank.errors import LorankError, check_number
from lorank.models.lora_shape import parse_layers

SPLITS = ("train", "dev", "test")


@click.command("ntk")
@click.option("--model", default="minilm", show_default=True,
              help="Bundled name (minilm, mpnet), local folder or hub id.")
@click.option("--task", default=None,
              help="Registered task (sst2, qnli, mrpc, rte, mnli), or one lending its labels "
                   "and words to --data.")
@click.option("--head", default="verbalizer", show_default=True,
              help="verbalizer, prompt, probe or pair.")
@click.option("--targets", default="query,value", show_default=True,
              help="Comma-separated LoRA target modules.")
@click.option("--layers", default="last", show_default=True,
              help="all, last, or comma-separated layer indices.")
@click.option("--seed", default=42, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="LM-BFF split seed.")
@click.option("--shots", "k", default=16, show_default=True, type=int,
              help="Examples per class (k; with --dev-data: the files' own).")
@click.option("--split", "split_name", default="train", show_default=True,
              type=click.Choice(SPLITS), help="Which split's features.")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "float64"]))
@click.option("--memory-mb", default=1024.0, show_default=True, type=float,
              help="Memory budget of one Jacobian chunk (MB).")
@click.option("--max-mb", default=4096.0, show_default=True, type=float,
              help="Refuse feature files larger than this (MB).")
@click.option("--max-length", default=128, show_default=True, type=int)
@click.option("--test-max", default=None, type=int, help="Cap the test split (seed-42 rows).")
@click.option("--method", default="auto", show_default=True,
              type=click.Choice(["auto", "outer", "autograd_loop", "vmap_jacrev",
                                 "vmap_jacrev_truncated"]),
              help="Jacobian implementation (all give the same numbers; auto = outer "
                   "when it applies, else vmap_jacrev_truncated).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--no-cache", is_flag=True, help="Compute without reading or writing the cache.")
@click.option("--data-dir", default=None, help="Data directory (default: $LORANK_DATA_DIR).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@own_data_options
def command(model: str, task: str | None, head: str, targets: str, layers: str, seed: int,
            k: int, split_name: str, dtype: str, memory_mb: float, max_mb: float,
            max_length: int, test_max: int | None, method: str, device: str, no_cache: bool,
            data_dir: str | None, as_json: bool, **own: Any) -> None:
    """Compute or load the NTK features G = ∂f_k/∂W of one split (cached on disk)."""
    import torch

    from lorank.cli.options_data import echo_notes, given, load_datasets, source_from_options
    from lorank.models import build_classifier, load_encoder
    from lorank.models.arch import adapted_matrices
    from lorank.models.bundled import load_config
    from lorank.ntk.pipeline import split_features

    source = source_from_options(task=task if own["data"] else None, **own)
    check_number("--memory-mb", memory_mb, low=0)
    check_number("--max-mb", max_mb, low=0)
    target_list, layer_sel = parse_list(targets, "targets"), parse_layers(layers)
    t0 = time.perf_counter()
    data = load_datasets(task, source, seeds=[seed], shots=k if given("k") else None,
                         data_dir=data_dir, test_max=test_max)[seed]
    split = {"train": data.train, "dev": data.dev, "test": data.test}[split_name]
    if split is None:
        raise LorankError(f"{data.task.name} has no {split_name} split here"
                          + (" (give one with --test-data FILE)" if source else ""))
    matrices = adapted_matrices(load_config(model), target_list, layer_sel)
    P = sum(a.m * a.n for a in matrices)
    size_mb = len(split) * data.task.K * P * (4 if dtype == "float32" else 8) / 2**20
    if size_mb > max_mb:
        raise LorankError(f"features of {len(split)} {split_name} rows would take "
                          f"{size_mb:.0f} MB (> --max-mb {max_mb:g}); cap with --test-max or "
                          "raise --max-mb")
    echo_notes(source, data)
    enc = load_encoder(model, dtype={"float32": torch.float32, "float64": torch.float64}[dtype],
                       device=device)
    clf = build_classifier(enc, data.task, head, train=data.train, dev=data.dev)
    feats, path, hit = split_features(
        clf, split, targets=target_list, layers=layer_sel, max_length=max_length, method=method,
        memory_budget_mb=memory_mb, k=data.k, seed=data.seed, use_cache=not no_cache)
    summary = {
        "task": data.task.name, "model": model, "head": head, "split": split_name, "seed": seed,
        "N": feats.N, "K": feats.K, "P": feats.P, "J_shape": [feats.N, feats.K, feats.P],
        "f0_shape": list(feats.f0.shape), "dtype": str(feats.f0.dtype).replace("torch.", ""),
        "size_mb": round(feats.N * feats.K * feats.P * feats.f0.element_size() / 2**20, 2),
        "J_held": feats.stored_J is not None,
        "blocks": [{"name": b.name, "layer": b.layer, "target": b.target, "m": b.m, "n": b.n}
                   for b in feats.blocks],
        "method": feats.meta.get("method"),
        "factors_mb": None if feats.factors is None else round(sum(
            f.X.numel() * f.X.element_size() + f.Delta.numel() * f.Delta.element_size()
            for f in feats.factors.values()) / 2**20, 2),
        "cache": str(path) if path else None, "cache_hit": hit,
        "jacobian_seconds": feats.meta.get("seconds"), "seconds": time.perf_counter() - t0,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    held = "" if feats.stored_J is not None else " (held as token factors only)"
    click.echo(f"{summary['task']} {split_name} (seed {seed}): J {tuple(summary['J_shape'])} "
               f"[N, K, P], f0 {tuple(feats.f0.shape)}, {summary['dtype']}, "
               f"{summary['size_mb']} MB{held}")
    for b in feats.blocks:
        click.echo(f"  {b.name}: layer {b.layer}, {b.target}, {b.m}x{b.n}")
    if summary["factors_mb"] is not None:
        click.echo(f"method {summary['method']}: per-token factors {summary['factors_mb']} MB "
                   "(what the cache stores; J is rebuilt on load)")
    state = "hit" if hit else ("written" if path else "disabled")
    click.echo(f"cache ({state}): {path}")
    click.echo(f"time: {summary['seconds']:.1f} s")
