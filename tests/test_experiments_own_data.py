"""Sweep specs on a user's own files: the data (with its files' sha256 and label set) is part of
every run's identity and features key; registered-task runs keep their ids."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lorank.errors import LorankError
from lorank.experiments.config import RunConfig, canonical_json
from lorank.experiments.registry import RunContext, get_method
from lorank.experiments.spec import parse_spec


def reviews(path: Path, n: int = 40) -> Path:
    path.write_text("".join(f"{i % 2},review {i}\n" for i in range(n)), encoding="utf-8")
    return path


def spec(data: dict, **base) -> dict:
    return {"name": "own", "base": {"method": "linearized", "model": "minilm", "k": 4,
                                    "data": data, **base},
            "grid": {"rank": [1, 2], "seed": [13, 21]}}


def test_runs_are_named_by_their_data_and_pinned(tmp_path):
    path = reviews(tmp_path / "reviews.csv")
    data = {"train": str(path), "columns": ["label", "text"],
            "label_words": {0: "terrible", 1: "great"}}
    runs = parse_spec(spec(data)).runs
    assert len(runs) == 4 and {c.task for c in runs} == {"reviews"}
    src = runs[0].data
    assert src.labels == ("0", "1") and src.label_words == (("0", "terrible"), ("1", "great"))
    assert src.sha256 == runs[3].data.sha256 and len(src.sha256) == 64
    stored = runs[0].to_dict()
    assert stored["data"]["sha256"] == src.sha256
    assert RunConfig.from_dict(stored) == runs[0]
    assert RunConfig.from_dict(stored).run_id == runs[0].run_id
    assert runs[0].features_key.to_dict()["data"]["sha256"] == src.sha256
    # ranks share the features; seeds do not
    assert runs[0].rank != runs[2].rank and runs[0].seed != runs[1].seed
    assert runs[0].features_key == runs[2].features_key != runs[1].features_key


def test_an_edited_file_is_a_new_run(tmp_path):
    path = reviews(tmp_path / "reviews.csv")
    data = {"train": str(path), "columns": ["label", "text"]}
    before = parse_spec(spec(data)).runs
    path.write_text(path.read_text() + "1,one more review\n")
    after = parse_spec(spec(data)).runs
    assert {c.run_id for c in before}.isdisjoint(c.run_id for c in after)
    assert before[0].features_key.digest != after[0].features_key.digest
    words = parse_spec(spec({**data, "label_words": {0: "bad", 1: "good"}})).runs
    assert words[0].run_id != after[0].run_id


def test_registered_task_ids_do_not_change():
    """A run without data has no ``data`` key in its identity: ids stored before stay valid."""
    c = RunConfig(sweep="s", method="linearized", task="sst2", model="minilm", rank=1, seed=13)
    assert "data" not in c.to_dict() and "data" not in c.features_key.to_dict()
    identity = {k: v for k, v in c.to_dict().items() if k not in ("num_cpus", "num_gpus")}
    assert c.run_id == hashlib.sha256(canonical_json(identity).encode()).hexdigest()


@pytest.mark.parametrize("data, base, message", [
    ({"train": "reviews.csv", "colums": ["label", "text"]}, {},
     "base.data.colums: unknown key; allowed: train, dev, test, columns"),
    ({"columns": ["label", "text"]}, {}, "base.data.train: missing required key"),
    ({"train": "missing.csv"}, {}, "base.data: missing.csv: file not found"),
    ({"train": "reviews.csv", "columns": ["label", "text"], "label_words": "0=bad"}, {},
     "base.data: --label-words: no word for label(s) 1"),
    ({"train": "reviews.csv", "columns": ["label", "text"]}, {"task": "sst2"},
     "task 'sst2' differs from the name of its data ('reviews')"),
    ({"train": "reviews.csv", "columns": ["label", "text"]}, {"k": 30},
     "grid: data: reviews.csv: class '0' has only 20 examples; k=30 needs 60"),
    ("reviews.csv", {}, "base.data: expected a mapping of data fields"),
])
def test_bad_data_in_a_spec_is_one_line(tmp_path, monkeypatch, data, base, message):
    monkeypatch.chdir(tmp_path)
    reviews(tmp_path / "reviews.csv")
    with pytest.raises(LorankError) as exc:
        parse_spec(spec(data, **base))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_prescribe_method_counts_the_users_data(tmp_path):
    pool = reviews(tmp_path / "reviews.csv")
    train = reviews(tmp_path / "train.csv", n=10)
    dev = reviews(tmp_path / "dev.csv", n=4)
    base = {"method": "prescribe", "model": "minilm", "layers": "last", "k": 8, "rank": 1,
            "seed": 13}
    sampled = parse_spec({"name": "p", "base": {**base, "data": {
        "train": str(pool), "columns": ["label", "text"]}}}).runs[0]
    explicit = parse_spec({"name": "p", "base": {**base, "k": 5, "data": {
        "train": str(train), "dev": str(dev), "columns": ["label", "text"]}}}).runs[0]
    method = get_method("prescribe")
    for config, N in ((sampled, 16), (explicit, 10)):
        method.validate(config)
        metrics = method.run(config, RunContext())["metrics"]
        assert (metrics["K"], metrics["N"]) == (2, N)
