"""Write tests/models/*.onnx: the torch lane's models exported by torch.onnx.export, weights stripped.

Needs torch and torchvision (the torch lane's environment): `python scripts/export_models.py`.
The main test lane fills the weights again at random (tests/model_weights.py) and checks the graphs
against onnxruntime and float64 central differences, without torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from model_weights import strip_weights  # noqa: E402
from torch_models import build, cases, export  # noqa: E402


def main() -> int:
    out = ROOT / "tests" / "models"
    out.mkdir(exist_ok=True)
    for name in cases():
        model, example, training = build(name)
        stripped = strip_weights(onnx.load_model_from_string(export(model, example, training)))
        path = out / f"{name}.onnx"
        path.write_bytes(stripped.SerializeToString())
        print(f"{path.relative_to(ROOT)}: {len(stripped.graph.node)} nodes, {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
