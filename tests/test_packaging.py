"""Packaging: committed generated code is current, and the wheel installs and works in a fresh venv."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from gradserve.proto import codegen

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_current(tmp_path):
    """Regenerating from the .proto files gives exactly the committed *_pb2*.py files."""
    for generated in codegen.generate(tmp_path):
        committed = ROOT / "proto" / generated.name
        assert committed.exists(), f"{generated.name} is not committed: run python proto/codegen.py"
        assert committed.read_bytes() == generated.read_bytes(), f"{generated.name} is stale: run python proto/codegen.py"


def test_wheel_installs_one_namespace_and_serves(gradserve_wheel, tmp_path):
    """The wheel holds only gradserve/ and, installed in a fresh venv, serves the apple example."""
    names = zipfile.ZipFile(gradserve_wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"gradserve"}
    assert "gradserve/proto/gradserve_pb2.py" in names and "gradserve/plugins/builtin/__init__.py" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", str(gradserve_wheel)], check=True)
    code = (
        "import numpy as np, gradserve.client as gs\n"
        "assert gs.__file__.startswith(%r), gs.__file__\n"
        "g = gs.Graph(dtype='float64'); a, n, t = g.inputs('a', 'n', 't'); g.output(a * n * t, 'price')\n"
        "with gs.connect() as c:\n"
        "    r = c.run(g, {'a': np.float64(200), 'n': np.float64(5), 't': np.float64(1.1)})\n"
        "print(float(r.outputs['price']), float(r.grads['t']))\n"
    ) % str(venv)
    out = subprocess.run([python, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    assert out.split() == ["1100.0", "1000.0"]
    for generic in ("server", "client", "plugins", "proto"):
        probe = subprocess.run([python, "-c", f"import {generic}"], cwd=tmp_path, capture_output=True)
        assert probe.returncode != 0, f"a top-level '{generic}' package was installed"
