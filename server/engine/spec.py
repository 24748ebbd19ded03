"""The engine's graph description: named inputs, nodes and outputs, and its content address."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

@dataclass(frozen=True)
class InputSpec:
    """A graph input (a feed or a parameter): its name and, optionally, its dtype and shape (-1 = any)."""

    name: str
    dtype: str | None = None
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class NodeSpec:
    """One layer application: op name, the values it reads, the values it defines, its attributes."""

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputSpec:
    """A graph output: the name the caller sees and the value it is."""

    name: str
    value: str


@dataclass(frozen=True)
class GraphSpec:
    inputs: tuple[InputSpec, ...]
    nodes: tuple[NodeSpec, ...]
    outputs: tuple[OutputSpec, ...]

    def canonical(self) -> bytes:
        """A deterministic byte form: equal graphs give equal bytes on every server."""
        doc = {
            "inputs": [[i.name, i.dtype, list(i.shape) if i.shape is not None else None] for i in self.inputs],
            "nodes": [[n.name, n.op, list(n.inputs), list(n.outputs), _canonical_attrs(n.attrs)] for n in self.nodes],
            "outputs": [[o.name, o.value] for o in self.outputs],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()

    def graph_id(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()[:32]

    @classmethod
    def from_canonical(cls, data: bytes) -> "GraphSpec":
        """The inverse of canonical(), for graphs kept in a graph store."""
        doc = json.loads(data)
        return cls(
            inputs=tuple(InputSpec(n, d, tuple(s) if s is not None else None) for n, d, s in doc["inputs"]),
            nodes=tuple(NodeSpec(n, op, tuple(i), tuple(o), {k: tuple(v) if isinstance(v, list) else v
                                                             for k, v in a.items()})
                        for n, op, i, o, a in doc["nodes"]),
            outputs=tuple(OutputSpec(n, v) for n, v in doc["outputs"]),
        )


def _canonical_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        return v

    return {k: plain(v) for k, v in sorted(attrs.items())}
