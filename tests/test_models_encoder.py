"""Loading encoders (bundled MiniLM, tiny folders), bad input, and ``lorank zeroshot``."""

from __future__ import annotations

import json

import pytest
import torch

from cli_helpers import one_line_error as _one_line_error
from lorank.cli.main import main
from lorank.data.dataset import Split
from lorank.data.load import load_task
from lorank.data.tasks import get_task
from lorank.errors import LorankError
from lorank.models import build_classifier, load_encoder
from lorank.models.tiny import build_tiny_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("minilm")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert"))


def test_minilm_loads_eager_eval_fp32(minilm) -> None:
    assert minilm.spec.model_type == "bert" and minilm.num_layers == 6
    assert minilm.model.config._attn_implementation == "eager"
    assert not minilm.model.training and minilm.dtype == torch.float32


def test_load_encoder_dtype(bert_dir: str) -> None:
    assert load_encoder(bert_dir, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(LorankError, match="floating torch dtype"):
        load_encoder(bert_dir, dtype=torch.int64)


def test_unknown_model_offline_is_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LorankError, match="not found offline") as exc:
        load_encoder("no-such-org/no-such-model-xyz")
    assert "\n" not in str(exc.value)
    with pytest.raises(LorankError, match=r"no config\.json"):
        load_encoder(str(tmp_path))


def test_folder_without_safetensors_is_refused(bert_dir: str, tmp_path) -> None:
    import shutil

    folder = tmp_path / "bin-only"
    shutil.copytree(bert_dir, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(LorankError, match="could not be loaded offline"):
        load_encoder(str(folder))


def test_prompt_head_on_minilm_says_use_verbalizer(minilm) -> None:
    with pytest.raises(LorankError, match=r"no MLM head weights.*use --head verbalizer"):
        build_classifier(minilm, "sst2", "prompt")


def test_bad_head_inputs(minilm) -> None:
    with pytest.raises(LorankError, match="unknown head 'linear'"):
        build_classifier(minilm, "sst2", "linear")
    with pytest.raises(LorankError, match="pair head needs a sentence-pair task"):
        build_classifier(minilm, "sst2", "pair", train=Split("t", ["a"], None, [0]))
    with pytest.raises(LorankError, match="fitted on the k-shot train split"):
        build_classifier(minilm, "mrpc", "probe")
    with pytest.raises(LorankError, match="unknown option"):
        build_classifier(minilm, "sst2", "verbalizer", temperature=1.0)
    with pytest.raises(LorankError, match="tau must be > 0"):
        build_classifier(minilm, "sst2", "verbalizer", tau=0.0)
    clf = build_classifier(minilm, "sst2", "verbalizer")
    with pytest.raises(LorankError, match="expects one text per row"):
        clf.encode([("a", "b")])
    with pytest.raises(LorankError, match=r"start layer must be in 0\.\.6"):
        clf.lower(clf.encode(["a"]), 7)


def test_minilm_real_examples_truncation_and_accuracy(minilm, data_dir) -> None:
    data = load_task("sst2", seed=42, data_dir=data_dir, test_max=16)
    clf = build_classifier(minilm, data.task, "verbalizer")
    x = clf.encode(data.test)
    ref = minilm.model(input_ids=x["input_ids"], attention_mask=x["attention_mask"],
                       token_type_ids=x.get("token_type_ids"))
    with torch.no_grad():
        state = clf.lower(x, clf.num_layers)
        torch.testing.assert_close(state["hidden"], ref.last_hidden_state, atol=1e-5, rtol=0)
        f = clf(x)
        for s in range(clf.num_layers + 1):
            torch.testing.assert_close(clf.upper(clf.lower(x, s), s), f, atol=1e-4, rtol=1e-5)
    acc = float((f.argmax(-1).numpy() == data.test.labels).mean())
    assert acc >= 0.6  # zero-shot verbaliser beats chance on real SST-2 rows


def test_minilm_pair_head_on_real_mrpc(minilm, data_dir) -> None:
    data = load_task("mrpc", seed=13, data_dir=data_dir)
    clf = build_classifier(minilm, data.task, "pair", train=data.train, dev=data.dev)
    assert clf.fit_result.train_accuracy > 0.5
    logits = clf.logits(data.test.subset(range(8)))
    assert logits.shape == (8, 2)


def test_cli_zeroshot_json(capsys: pytest.CaptureFixture, data_dir) -> None:
    main(["zeroshot", "--model", "minilm", "--task", "rte", "--head", "pair", "--seeds", "13,21",
          "--test-max", "24", "--data-dir", str(data_dir), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["head"] == "pair" and out["test_rows"] == 24
    assert [r["seed"] for r in out["per_seed"]] == [13, 21]
    assert 0 <= out["mean"] <= 1 and 0.5 <= out["majority_rate"] <= 1


def test_cli_head_names_what_was_fitted_and_reports_mrpc_f1(capsys, data_dir) -> None:
    """`lorank head` (old name `zeroshot`): a fitted head is never called zero-shot; MRPC
    reports F1 of the positive class beside accuracy, with the always-positive baseline."""
    main(["head", "--model", "minilm", "--task", "mrpc", "--head", "pair", "--seeds", "13",
          "--test-max", "40", "--data-dir", str(data_dir), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["fitted"] is True and out["what"] == "head at W0 (fitted on train)"
    assert out["metric"] == "f1" and 0 <= out["f1_mean"] <= 1
    p = out["majority_rate"]  # MRPC's majority class is the positive one (label 1)
    assert out["f1_always_positive"] == pytest.approx(2 * p / (1 + p))
    main(["head", "--model", "minilm", "--task", "sst2", "--seeds", "13", "--test-max", "16",
          "--data-dir", str(data_dir)])
    text = capsys.readouterr().out
    assert "zero-shot" in text and "fitted" not in text


def test_cli_zeroshot_errors(capsys: pytest.CaptureFixture) -> None:
    assert "--head must be one of" in _one_line_error(capsys, ["zeroshot", "--task", "sst2",
                                                               "--head", "bogus"])
    assert "pair head needs" in _one_line_error(capsys, ["zeroshot", "--task", "sst2", "--head",
                                                         "pair"])
    assert "seeds must be" in _one_line_error(capsys, ["zeroshot", "--task", "sst2", "--seeds",
                                                       "1,x"])
    assert "unknown task" in _one_line_error(capsys, ["zeroshot", "--task", "cola9"])
    assert "--tau applies" in _one_line_error(capsys, ["zeroshot", "--task", "mrpc", "--head",
                                                       "pair", "--tau", "0.1"])


def test_cli_unknown_model_offline(capsys: pytest.CaptureFixture,
                                   monkeypatch: pytest.MonkeyPatch, data_dir) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = _one_line_error(capsys, ["zeroshot", "--model", "nobody/nothing-here", "--task",
                                   "sst2", "--data-dir", str(data_dir)])
    assert "not found offline" in err


def test_task_spec_is_what_heads_read() -> None:
    spec = get_task("mnli")
    assert spec.K == 3 and spec.is_pair and len(spec.label_descriptions) == 3
