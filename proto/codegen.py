"""Regenerate the Python code beside every .proto in this folder: `python proto/codegen.py`."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent


def generate(dest: Path = PROTO_DIR) -> list[Path]:
    """Compile with `-Igradserve/proto=proto`, so generated imports read gradserve.proto.*; return the files."""
    from grpc_tools import protoc  # grpcio-tools, pinned exactly in the test extra

    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-Igradserve/proto={PROTO_DIR}", f"-I{include}",
                f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        args += [f"gradserve/proto/{p.name}" for p in sorted(PROTO_DIR.glob("*.proto"))]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed: " + " ".join(args))
        written = []
        for generated in sorted((Path(tmp) / "gradserve" / "proto").iterdir()):
            target = Path(dest) / generated.name
            shutil.copyfile(generated, target)
            written.append(target)
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_DIR):
        print(path)
