"""Feature cache: round trip, key coverage, atomic writes, corrupt/partial files rebuilt."""

from __future__ import annotations

import os

import pytest
import torch

from lorank.errors import LorankError
from lorank.ntk import (
    Block,
    CorruptCacheError,
    Features,
    cache_path,
    cached_features,
    feature_key,
    load_features,
    save_features,
    split_features,
)

torch.set_num_threads(1)
KEY = {"model": "m", "split": "train", "seed": 13, "dtype": "float64"}


def _features(seed=0):
    gen = torch.Generator().manual_seed(seed)
    blocks = [Block("a.weight", 0, "query", 3, 4), Block("b.weight", 1, "value", 2, 5)]
    return Features(torch.randn(6, 2, 22, generator=gen, dtype=torch.float64),
                    torch.randn(6, 2, generator=gen, dtype=torch.float64),
                    torch.tensor([0, 1, 0, 1, 1, 0]), blocks, {"task": "t", "seconds": 1.5})


def test_round_trip(tmp_path):
    feats = _features()
    path = save_features(tmp_path / "f.safetensors", feats, KEY)
    back = load_features(path, KEY)
    torch.testing.assert_close(back.J, feats.J)
    torch.testing.assert_close(back.f0, feats.f0)
    assert back.labels.tolist() == feats.labels.tolist()
    assert back.blocks == feats.blocks and back.meta == feats.meta
    assert [p.name for p in tmp_path.iterdir()] == ["f.safetensors"]  # no temp files left


def test_inconsistent_factors_are_rejected(tmp_path):
    from lorank.ntk.jacobian import TokenFactors

    feats = _features()
    bad = {b.name: TokenFactors(torch.zeros(2, dtype=torch.int64),
                                torch.zeros(2, b.n, dtype=torch.float64),
                                torch.zeros(2, 2, b.m + 1, dtype=torch.float64))
           for b in feats.blocks}
    with pytest.raises(LorankError, match="token factors"):
        Features(feats.J, feats.f0, feats.labels, feats.blocks, {}, bad)


def test_wrong_key_is_rejected(tmp_path):
    path = save_features(tmp_path / "f.safetensors", _features(), KEY)
    with pytest.raises(CorruptCacheError, match="different key"):
        load_features(path, {**KEY, "seed": 21})


def _build_counter():
    calls = []

    def build():
        calls.append(1)
        return _features(len(calls))

    return calls, build


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "empty"])
def test_damaged_file_is_detected_and_rebuilt(tmp_path, damage):
    calls, build = _build_counter()
    first, path, hit = cached_features(KEY, build, root=tmp_path)
    assert not hit and len(calls) == 1 and path == cache_path(KEY, tmp_path)
    again, _, hit = cached_features(KEY, build, root=tmp_path)
    assert hit and len(calls) == 1
    torch.testing.assert_close(again.J, first.J)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) - 100]
    elif damage == "flip":
        raw[-50] ^= 0xFF  # inside the tensor data
    elif damage == "header":
        raw[20] ^= 0xFF  # inside the JSON header
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptCacheError):
        load_features(path, KEY)
    rebuilt, _, hit = cached_features(KEY, build, root=tmp_path)
    assert not hit and len(calls) == 2
    torch.testing.assert_close(load_features(path, KEY).J, rebuilt.J)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError):
        save_features(tmp_path / "x.safetensors", _features(), KEY)
    assert list(tmp_path.iterdir()) == []


def test_cache_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LORANK_CACHE_DIR", str(tmp_path))
    assert str(cache_path(KEY)).startswith(str(tmp_path / "features"))
    assert cache_path(KEY) != cache_path({**KEY, "seed": 21})


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    from lorank.models import build_classifier, load_encoder
    from lorank.models.tiny import build_tiny_model

    folder = build_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert")
    return build_classifier(load_encoder(str(folder), dtype=torch.float64), "sst2")


def _split(name="train", labels=(0, 1, 1)):
    from lorank.data.dataset import Split

    return Split(name, ("it was bad", "great film", "i love it"), None, list(labels))


def test_split_features_cached_and_keyed(clf, tmp_path):
    f1, path, hit = split_features(clf, _split(), layers="last", cache_root=tmp_path, seed=13)
    assert not hit and path.exists() and f1.J.shape == (3, 2, 2 * 32 * 32)
    f2, path2, hit = split_features(clf, _split(), layers="last", cache_root=tmp_path, seed=13)
    assert hit and path2 == path
    torch.testing.assert_close(f1.J, f2.J)
    assert f1.factors is not None and set(f2.factors) == set(f1.factors)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:  # factors are stored instead of J
        assert "J" not in set(fh.keys()) and "Delta.0" in set(fh.keys())
    for name, fac in f1.factors.items():  # the OUTER method's token factors travel too
        back = f2.factors[name]
        assert back.ex.tolist() == fac.ex.tolist()
        torch.testing.assert_close((back.X, back.Delta), (fac.X, fac.Delta))
    key = feature_key(clf, _split(), targets=("query", "value"), layers="last", max_length=128,
                      seed=13)
    variants = [
        feature_key(clf, _split(labels=(1, 1, 1)), targets=("query", "value"), layers="last",
                    max_length=128, seed=13),
        feature_key(clf, _split(), targets=("query",), layers="last", max_length=128, seed=13),
        feature_key(clf, _split(), targets=("query", "value"), layers="all", max_length=128,
                    seed=13),
        feature_key(clf, _split(), targets=("query", "value"), layers="last", max_length=64,
                    seed=13),
    ]
    paths = {cache_path(k, tmp_path) for k in [key, *variants]}
    assert len(paths) == 5
    # content-addressed: the same split under another data seed / k is the same file
    other_seed = feature_key(clf, _split(), targets=("query", "value"), layers="last",
                             max_length=128, seed=21, k=64)
    assert cache_path(other_seed, tmp_path) == cache_path(key, tmp_path)
    assert key["head"]["head"] == "verbalizer" and key["dtype"] == "float64"
    assert key["model_id"]["config_sha256"] and key["code_version"]
    _, none_path, hit = split_features(clf, _split(), layers="last", use_cache=False)
    assert none_path is None and not hit
    assert os.path.exists(path)


def test_equal_split_under_another_seed_is_a_cache_hit_with_its_own_provenance(clf, tmp_path):
    """The test split is the same file for every LM-BFF seed: the second seed hits the cache,
    gets identical features and its own k/seed in the provenance."""
    f13, p13, hit13 = split_features(clf, _split("test"), layers="last", seed=13, k=16,
                                      cache_root=tmp_path)
    f21, p21, hit21 = split_features(clf, _split("test"), layers="last", seed=21, k=16,
                                     cache_root=tmp_path)
    assert (hit13, hit21) == (False, True) and p13 == p21
    torch.testing.assert_close((f21.J, f21.f0), (f13.J, f13.f0))
    assert (f21.meta["seed"], f21.meta["cached_from_seed"], f13.meta["seed"]) == (21, 13, 13)
