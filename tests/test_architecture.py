"""The arrows between gradserve's parts: import-linter's contracts in pyproject.toml, and the plugin allow-list."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
PARTS = ("proto", "plugins", "server", "client", "testing")


def lint_imports(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_contracts_are_kept():
    """Every import-linter contract in pyproject.toml is kept by the tree as it is."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_plugins_import_numpy_pluggy_and_the_standard_library_only():
    """A layer author needs numpy and pluggy alone: gradserve.plugins imports nothing else from outside."""
    graph = grimp.build_graph("gradserve.plugins", include_external_packages=True)
    outside = {imported.split(".")[0]
               for module in graph.modules if module.startswith("gradserve.plugins")
               for imported in graph.find_modules_directly_imported_by(module)
               if not imported.startswith("gradserve.")}
    assert outside - set(sys.stdlib_module_names) <= {"numpy", "pluggy"}


@pytest.mark.parametrize("module, line, contract", [
    ("server/engine/spec.py", "import grpc", "the engine room imports numpy and gradserve.plugins only"),
    ("server/service/limits.py", "from gradserve.server.rpc import status", "server rooms point one way"),
    ("client/graph.py", "from gradserve.server.engine import plan", "the client imports proto only"),
    ("plugins/layer.py", "from gradserve.proto import tensors", "plugins import numpy and pluggy only"),
])
def test_a_wrong_import_breaks_a_contract(tmp_path, module, line, contract):
    """A scratch copy of the tree with one wrong import (inside a function, too) fails the contracts."""
    package = tmp_path / "gradserve"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for part in PARTS:
        shutil.copytree(ROOT / part, package / part, ignore=shutil.ignore_patterns("__pycache__"))
    # In the scratch copy gradserve is a real folder, so it is the one root package.
    config = re.sub(r"root_packages = \[[^\]]*\]", 'root_packages = ["gradserve"]', (ROOT / "pyproject.toml").read_text())
    (tmp_path / "pyproject.toml").write_text(config)
    target = package / module
    target.write_text(target.read_text() + f"\n\ndef _wrong():\n    {line}\n")
    result = lint_imports(tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0, result.stdout
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout, result.stdout
