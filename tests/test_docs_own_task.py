"""docs/own-task.md, run as written: its commands and its spec file, extracted from the page (so
the page and this test cannot drift), on a tiny headerless ``label,text`` CSV with numeric
labels and a tiny random-init encoder saved with ``save_pretrained``.

The one substitution: the page's ``minilm`` (``--model minilm`` and ``model: minilm``) becomes
the tiny encoder's folder. Everything else — options, spec keys, file names — is the page's.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from lorank.cli.main import main

PAGE = Path(__file__).resolve().parents[1] / "docs" / "own-task.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)
NEG = "the plot was boring and bad", "i hate this dull film", "a terrible movie"
POS = "a great fun film", "i love this story", "the actor was good and the plot fun"


def page_commands() -> tuple[list[str], dict[str, str]]:
    """The ``lorank ...`` lines of the page's bash blocks, and its ``file=NAME`` blocks."""
    blocks = BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    commands = [line.strip() for lang, _, body in blocks if lang == "bash"
                for line in body.splitlines() if line.strip().startswith("lorank ")]
    files = {info.split("file=", 1)[1].strip(): body for _, info, body in blocks
             if "file=" in info}
    return commands, files


def tiny_reviews(path: Path) -> None:
    """104 distinct reviews, label first, no header, 0/1 labels; one row with an empty text."""
    rows = [f"{i % 2},\"{(POS if i % 2 else NEG)[i % 3]} , number {i}\"" for i in range(104)]
    rows.insert(9, "1,")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_the_page_has_the_whole_journey():
    commands, files = page_commands()
    verbs = [shlex.split(c)[1] for c in commands]
    assert verbs == ["data", "prescribe", "zeroshot", "train", "sweep", "report"]
    assert "reviews.yaml" in files and all("--model minilm" in c for c in commands
                                            if shlex.split(c)[1] in ("zeroshot", "train"))
    readme = (PAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    assert "docs/own-task.md" in readme
    assert "own-task.md" in (PAGE.parent / "data.md").read_text(encoding="utf-8")


def test_page_commands_run_end_to_end(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LORANK_CACHE_DIR", str(tmp_path / "cache"))
    tiny_reviews(tmp_path / "reviews.csv")
    commands, files = page_commands()
    for name, body in files.items():
        (tmp_path / name).write_text(body.replace("model: minilm", f"model: {tiny}"))
    outputs = {}
    for command in commands:
        argv = shlex.split(command.replace("--model minilm", f"--model {tiny}"))[1:]
        try:
            main(argv)
        except SystemExit as exc:  # `lorank sweep` exits with its status
            assert exc.code in (0, None), (command, capsys.readouterr().err)
        captured = capsys.readouterr()
        outputs[argv[0]] = captured.out, captured.err

    out, err = outputs["data"]
    assert "reviews: K=2, N=32, k=16, seed=42" in out
    assert "labels read from reviews.csv, in numeric order: 0, 1 (K = 2" in err
    assert "dropped 1 row with an empty text from reviews.csv (line 10)" in err
    assert "K=2, N=32" in outputs["prescribe"][0]
    assert "mean ± std" in outputs["zeroshot"][0]
    out, err = outputs["train"]
    assert "linearized LoRA on reviews" in out and "selected step" in out
    for rank in (1, 2, 4, 8, 12, 16):
        assert re.search(rf"│\s+{rank} │", out), rank
    assert "30 runs: 30 done, 0 failed" in outputs["sweep"][0]
    report = (tmp_path / "reviews-report" / "report.md").read_text(encoding="utf-8")
    assert "Headline: r = 1 vs r = 12" in report and "| reviews |" in report
    assert re.search(r"\| reviews \| .* \| r = 12 \| (\d of )?5 \| [\d.]+ \| [\d.]+ \| "
                     r"([+-][\d.]+|-) \| ", report)

