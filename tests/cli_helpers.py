"""Helpers shared by the CLI tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import pytest

from lorank.cli.main import main


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run ``lorank argv``; assert exit code 2 and a single ``lorank: error: ...`` line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lorank: error: ") and "\n" not in err
    return err
