"""docs/bring-your-model.md's supported-op tables are what scripts/ops_table.py writes from the registry now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("onnx")

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ops_table.py"


def _script():
    spec = importlib.util.spec_from_file_location("ops_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_table_is_current():
    """Regenerating the tables changes nothing; else run python scripts/ops_table.py and commit the result."""
    ops_table = _script()
    text = ops_table.DOC.read_text()
    assert ops_table.rewrite(text) == text, "docs/bring-your-model.md is stale: run python scripts/ops_table.py"


def test_check_mode_fails_on_a_stale_table(tmp_path, monkeypatch, capsys):
    """--check exits 1 naming the file when a layer row is missing."""
    ops_table = _script()
    stale = tmp_path / "bring-your-model.md"
    stale.write_text(ops_table.DOC.read_text().replace("| Abs | Abs |\n", ""))
    monkeypatch.setattr(ops_table, "DOC", stale)
    assert ops_table.main(["--check"]) == 1
    assert "is stale" in capsys.readouterr().err
