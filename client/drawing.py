"""Draw a Run's computational graph as the chapter does: forward values on the edges, gradients beneath them."""

from __future__ import annotations

import logging
import shutil
import subprocess
from html import escape
from pathlib import Path

import numpy as np

_LOGGER = logging.getLogger(__name__)

#: The book draws arithmetic nodes as circles holding the operator.
SYMBOLS = {"Mul": "×", "Add": "+", "Sub": "−", "Div": "÷", "Neg": "−", "MatMul": "@"}
GRAD_COLOR = "#d62728"  # the book's backward arrows are red
FONT = "Helvetica"


def to_dot(result, title: str | None = None) -> str:
    """Graphviz DOT source for ``result`` (a Result of ``client.run(graph, ...)``); needs no Graphviz.

    With ``trace=True`` every edge shows the value it carries and, beneath in
    red, the gradient that flows back along it; without, only what the Result
    holds (outputs, and the gradients of the inputs) is shown.
    """
    if result.graph is None:
        raise ValueError("this Result has no graph to draw: pass the Graph itself to client.run(), not its id")
    proto = result.graph.to_proto()
    outputs = {o.name: o.value for o in proto.outputs}
    values = dict(result.values)
    values.update((outputs[name], array) for name, array in result.outputs.items() if name in outputs)
    grads = dict(result.grads)
    grads.update(result.value_grads)

    producers: dict[str, tuple[str, str | None]] = {}  # value -> (dot node id, output name of a multi-output node)
    lines = [
        "digraph gradserve {",
        "  rankdir=LR;",
        f'  graph [fontname="{FONT}", nodesep=0.5, ranksep=0.9{_title(title)}];',
        f'  node [fontname="{FONT}", fontsize=14];',
        f'  edge [fontname="{FONT}", fontsize=11, arrowsize=0.7];',
    ]
    for info in proto.inputs:
        node_id = f"input:{info.name}"
        producers[info.name] = (node_id, None)
        lines.append(f"  {_quote(node_id)} [shape=plaintext, label={_quote(info.name)}];")
    for node in proto.nodes:
        node_id = f"node:{node.name}"
        multi = len(node.outputs) > 1
        for value in node.outputs or [node.name]:
            producers[value] = (node_id, value.split(":", 1)[-1] if multi else None)
        lines.append(f"  {_quote(node_id)} [{_node_style(node, values)}];")

    consumers: dict[str, list[str]] = {}
    for node in proto.nodes:
        for value in node.inputs:
            consumers.setdefault(value, []).append(f"node:{node.name}")
    for info in proto.outputs:
        node_id = f"output:{info.name}"
        lines.append(f"  {_quote(node_id)} [shape=plaintext, label={_quote(info.name)}];")
        consumers.setdefault(info.value, []).append(node_id)

    for value, targets in consumers.items():
        if value not in producers:
            continue  # the server would have refused such a graph; draw what is there
        source, port = producers[value]
        label = _edge_label(port, values.get(value), grads.get(value))
        if len(targets) == 1:
            lines.append(f"  {_quote(source)} -> {_quote(targets[0])} [label={label}];")
            continue
        # A value used twice: its gradient is the sum of both branches, so it sits before the fork.
        fork = f"fork:{value}"
        lines.append(f"  {_quote(fork)} [shape=point, width=0.06];")
        lines.append(f"  {_quote(source)} -> {_quote(fork)} [label={label}, arrowhead=none];")
        lines.extend(f"  {_quote(fork)} -> {_quote(target)};" for target in targets)
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_picture(dot_source: str, path: str | Path) -> Path | None:
    """Render DOT to ``path`` (format from its suffix: .svg, .png, .pdf) with Graphviz's ``dot``.

    Returns the path, or None when ``dot`` is not installed (Debian: apt-get install graphviz).
    """
    path = Path(path)
    dot = shutil.which("dot")
    if dot is None:
        _LOGGER.info("Graphviz's dot is not on PATH; not drawing %s", path)
        return None
    fmt = path.suffix.lstrip(".") or "svg"
    subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=dot_source.encode(), check=True,
                   capture_output=True, timeout=60)
    return path


def format_value(array) -> str:
    """A short text for an array: the number for a scalar, the items of a tiny array, else dtype and shape."""
    array = np.asarray(array)
    if array.size == 1:
        return _number(array.reshape(-1)[0])
    if array.ndim == 1 and array.size <= 4:
        return "[" + ", ".join(_number(v, 4) for v in array) + "]"
    return f"{array.dtype.name} ({', '.join(map(str, array.shape))})"


def format_grad(array) -> str:
    """A gradient: its value when tiny, else its L2 norm (its shape is the value's, shown above)."""
    array = np.asarray(array)
    if array.size <= 4:
        return format_value(array)
    return f"‖g‖ {_number(np.linalg.norm(array.astype(np.float64)), 3)}"


def _number(value, digits: int = 6) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, (bool, int)):
        return str(value)
    return f"{value:.{digits}g}"  # 220.00000000000003 reads as the book prints it: 220


def _node_style(node, values) -> str:
    tooltip = f"{node.name} ({node.op})"
    if node.op in SYMBOLS:
        return (f"shape=circle, width=0.55, fixedsize=true, fontsize=20, label={_quote(SYMBOLS[node.op])}, "
                f"tooltip={_quote(tooltip)}")
    if node.op == "Constant":
        value = values.get(node.name)
        return f"shape=plaintext, label={_quote('const' if value is None else format_value(value))}"
    label = node.name if node.name.startswith(node.op) else f"{node.name}\n{node.op}"
    return (f'shape=box, style="rounded,filled", fillcolor="#eef3fb", label={_quote(label)}, '
            f"tooltip={_quote(tooltip)}")


def _edge_label(port: str | None, value, grad) -> str:
    rows = []
    forward = "" if value is None else format_value(value)
    if port:
        forward = f"{port}: {forward}" if forward else port
    if forward:
        rows.append(escape(forward))
    if grad is not None:
        rows.append(f'<font color="{GRAD_COLOR}">← {escape(format_grad(grad))}</font>')
    return "<" + "<br/>".join(rows) + ">" if rows else '""'


def _title(title: str | None) -> str:
    return f", label={_quote(title)}, labelloc=t, fontsize=16" if title else ""


def _quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
