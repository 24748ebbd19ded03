"""Write the supported-op tables of docs/bring-your-model.md from the registry and the ONNX importer.

    python scripts/ops_table.py            # rewrite the tables in place
    python scripts/ops_table.py --check    # exit 1 when the committed tables are stale (tests/test_ops_table.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "bring-your-model.md"
START, END = "<!-- ops-table:start (scripts/ops_table.py writes this) -->", "<!-- ops-table:end -->"


def render() -> str:
    """The tables: every ONNX operator the importer reads, and every built-in layer with its schema."""
    from gradserve.client.onnx_export import _HANDLERS as EXPORTED
    from gradserve.client.onnx_import_ops import HANDLERS, IMPORTED_AS, MIN_OPSET
    from gradserve.client.onnx_import import MAX_OPSET
    from gradserve.server.service.registry import load_registry

    layers = {name: entry.cls for name, entry in load_registry().layers.items() if entry.plugin == "builtin"}
    lines = [f"ONNX operators `import_onnx` reads ({len(HANDLERS)}; opsets {MIN_OPSET} to {MAX_OPSET}):", "",
             "| ONNX op | gradserve layer(s) |", "|---|---|"]
    for op in sorted(HANDLERS):
        lines.append(f"| {op} | {IMPORTED_AS.get(op, op if op in layers else '?')} |")
    lines += ["", f"Built-in layers ({len(layers)}; **export** = `export_onnx` writes it):", "",
              "| layer | inputs → outputs | attributes | export | what it computes |", "|---|---|---|---|---|"]
    for name in sorted(layers):
        cls = layers[name]
        attrs = ", ".join(f"{a}={attr.default!r}" if not attr.required else a for a, attr in cls.attributes.items())
        signature = f"{', '.join(cls.inputs) or '—'} → {', '.join(cls.outputs)}"
        doc = cls.doc().replace("|", "\\|")
        lines.append(f"| {name} | {signature} | {attrs.replace('|', '/') or '—'} | "
                     f"{'yes' if name in EXPORTED else 'no'} | {doc} |")
    return "\n".join(lines)


def rewrite(text: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{render()}\n{END}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed tables are stale")
    args = parser.parse_args(argv)
    text = DOC.read_text()
    fresh = rewrite(text)
    if args.check:
        if fresh != text:
            print(f"{DOC} is stale: run python scripts/ops_table.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
