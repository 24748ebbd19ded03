"""Regenerate the Python code beside every .proto in this folder: `python proto/codegen.py`."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent

# Package `inference` (KServe v2) is also defined by tritonclient, KServe and MLServer, each in its own file:
# two files defining one symbol in protobuf's process-wide pool make the second import fail ("duplicate
# symbol 'inference.ServerLiveRequest'"). Our copy goes into a pool of its own, so both import in one process.
PRIVATE_POOL = {"kserve.proto"}
_DEFAULT_POOL_LINE = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL_LINE = ("# A private pool: see PRIVATE_POOL in proto/codegen.py.\n"
                      "DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile(")


def generate(dest: Path = PROTO_DIR) -> list[Path]:
    """Compile with `-Igradserve/proto=proto`, so generated imports read gradserve.proto.*; return the files."""
    from grpc_tools import protoc  # grpcio-tools, pinned exactly in the test extra

    include = Path(protoc.__file__).parent / "_proto"
    from google.rpc import status_pb2  # googleapis-common-protos (grpcio-status needs it): google/rpc/*.proto

    googleapis = Path(status_pb2.__file__).parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-Igradserve/proto={PROTO_DIR}", f"-I{include}", f"-I{googleapis}",
                f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        args += [f"gradserve/proto/{p.name}" for p in sorted(PROTO_DIR.glob("*.proto"))]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed: " + " ".join(args))
        written = []
        for generated in sorted((Path(tmp) / "gradserve" / "proto").iterdir()):
            target = Path(dest) / generated.name
            shutil.copyfile(generated, target)
            if generated.name.removesuffix("_pb2.py") + ".proto" in PRIVATE_POOL:
                _use_private_pool(target)
            written.append(target)
    return written


def _use_private_pool(module: Path) -> None:
    text = module.read_text()
    if text.count(_DEFAULT_POOL_LINE) != 1:
        raise RuntimeError(f"{module.name}: protoc's output changed; cannot move it to a private descriptor pool")
    module.write_text(text.replace(_DEFAULT_POOL_LINE, _PRIVATE_POOL_LINE))


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_DIR):
        print(path)
