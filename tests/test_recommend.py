"""lorank.recommend: the prescribed rank as a peft LoraConfig, from a config alone."""

from __future__ import annotations

import pytest

from lorank.errors import LorankError
from lorank.models.tiny import build_tiny_model, tiny_config
from lorank.recommend import Recommendation, recommend
from lorank.theory import manifold_min_rank, sard_min_rank


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return str(build_tiny_model("bert", tmp_path_factory.mktemp("r") / "tiny"))


def test_ce_recommends_rank_one_with_readable_config(tiny_folder):
    rec = recommend(tiny_folder, "sst2", layers="last")
    assert isinstance(rec, Recommendation) and rec.r == 1
    cfg, text = rec  # unpacks as (config, explanation)
    assert cfg.lora_alpha == 1 and cfg.init_lora_weights == "gaussian"
    assert set(cfg.target_modules) == {"attention.self.query", "attention.self.value"}
    assert cfg.layers_to_transform == [1] and cfg.layers_pattern == "layer"
    assert cfg.modules_to_save is None and cfg.task_type is None
    assert rec.matrices == ("encoder.layer.1.attention.self.query",
                            "encoder.layer.1.attention.self.value")
    assert "r = 1" in text and "K = 2" in text and "N = 32" in text
    assert f"Sard exact: r = {sard_min_rank(2, 32)}" in text  # 11
    assert "while the linearized training data are separable" in text
    assert "Measured separability:" in text and "K·N/d(r = 1) = " in text
    assert "--task sst2 --shots 16 --layers last" in rec.measure and rec.settled


def test_mse_binary_uses_total_manifold_reading():
    config = tiny_config("bert", vocab_size=50)
    rec = recommend(config, "rte", loss="mse", shots=96, targets=["query"], layers="all")
    # K = 2, N = 192: smallest r with 2(64r - r^2) > 1.35*384 = 518.4 -> 5
    assert rec.r == manifold_min_rank(2, 192, [(32, 32)] * 2, 1.35, "total") == 5
    assert rec.settled and rec.config.r == 5 and rec.config.lora_alpha == 5
    assert "layers_to_transform" not in rec.config.to_dict() or \
        rec.config.layers_to_transform is None


def test_multiclass_is_not_presented_as_rank_one():
    config = tiny_config("bert", vocab_size=50)
    for loss in ("ce", "mse"):
        rec = recommend(config, "mnli", loss=loss, shots=64, targets=["query"], layers="all")
        # K = 3, N = 192: Sard exact 34 > min(m, n) = 32, so the config takes 32
        p = rec.prescription
        assert not rec.settled and p.recommended is None
        assert p.rank_range == ((1 if loss == "ce" else 7), 34)
        assert rec.r == rec.config.r == 32
        assert "No single rank" in rec.explanation and "K = 3 > 2" in rec.explanation
        assert "holds for binary tasks" in rec.explanation
        assert "Recommended LoRA rank r = 1" not in rec.explanation
        assert rec.measure.startswith("lorank train --mode linearized --model ")
        assert "--task mnli --shots 64 --head pair --targets query --layers all" in rec.measure
        assert rec.measure in rec.explanation


def test_recommended_config_adapts_exactly_the_listed_matrices(tiny_folder):
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModel

    rec = recommend(tiny_folder, "rte", targets=["value", "output.dense"], layers=[0])
    model = get_peft_model(AutoModel.from_pretrained(tiny_folder), rec.config)
    adapted = sorted(n.removeprefix("base_model.model.") for n, m in model.named_modules()
                     if isinstance(m, LoraLayer))
    assert adapted == sorted(rec.matrices) == ["encoder.layer.0.attention.self.value",
                                               "encoder.layer.0.output.dense"]


def test_dataset_gives_n(data_dir):
    from lorank.data import load_task

    data = load_task("sst2", k=16, seed=42, data_dir=data_dir)
    rec = recommend(tiny_config("roberta", vocab_size=50), data, loss="mse")
    assert rec.prescription.N == 32 and rec.prescription.K == 2
    rec2 = recommend(tiny_config("roberta", vocab_size=50), "SST-2", data_dir=data_dir)
    assert rec2.prescription.N == 32


@pytest.mark.parametrize("kwargs, message", [
    ({"task_or_dataset": "nope"}, "unknown task"),
    ({"targets": ["foo"]}, "unknown target module 'foo'"),
    ({"shots": 0}, "shots must be a positive integer"),
    ({"loss": "hinge"}, "loss must be one of ce, mse"),
    ({"c_star": -1.0}, "c_star must be > 0"),
    ({"layers": "first"}, "layers must be 'all', 'last'"),
    ({"model": 3}, "model must be a model name/path or a Hugging Face config"),
    ({"task_or_dataset": 5}, "task_or_dataset must be a task name"),
])
def test_bad_input(kwargs, message):
    args = {"model": tiny_config("bert", vocab_size=50), "task_or_dataset": "sst2", **kwargs}
    with pytest.raises(LorankError, match=message):
        recommend(**args)


def test_unsatisfiable_manifold_count():
    config = tiny_config("bert", vocab_size=50)
    with pytest.raises(LorankError, match="no rank <= min"):
        recommend(config, "mnli", loss="mse", shots=4096, targets=["query"], layers="last")


def test_unknown_model_offline():
    with pytest.raises(LorankError, match=r"not found offline|could not be loaded"):
        recommend("/nonexistent/model-folder", "sst2")
