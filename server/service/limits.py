"""The server's configurable limits, each with a default and an error naming it and its value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from gradserve.server.engine.errors import LimitError
from gradserve.server.engine.plan import SizeLimits


def _limit(default, help: str):
    return field(default=default, metadata={"help": help})


class ByteSize(int):
    """A byte count that parses "64M", "2G", "512K" (powers of 1024) as well as plain digits: a flag's type."""

    _UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

    def __new__(cls, value=0):
        if isinstance(value, str):
            text = value.strip().upper().removesuffix("B").removesuffix("I")
            unit = text[-1:] if text[-1:] in cls._UNITS else ""
            try:
                number = float(text[:len(text) - len(unit)])
            except ValueError:
                raise ValueError(f"{value!r} is not a byte count (e.g. 1048576, 512K, 64M, 2G)") from None
            value = int(number * cls._UNITS[unit])
        return super().__new__(cls, value)


@dataclass(frozen=True)
class Limits:
    """Every field is a `gradserve serve --flag`; its metadata["help"] is the flag's help."""

    # room for a 64 MiB tensor and its gradient, with margin
    max_message_bytes: int = _limit(256 << 20, "largest gRPC message received or sent, in bytes")
    max_graph_nodes: int = _limit(10_000, "nodes in one graph")
    max_tensor_elements: int = _limit(1 << 26, "elements in one tensor")  # 64 Mi elements (256 MiB of float32)
    max_request_elements: int = _limit(1 << 27, "elements in all the tensors of one request")
    max_sessions: int = _limit(10_000, "Forward sessions kept for Backward")
    session_ttl: float = _limit(300.0, "seconds an unused Forward session is kept")
    max_session_bytes: int = _limit(ByteSize(2 << 30), "bytes all sessions keep (arrays, layer objects and "
                                    "their bookkeeping); the least recently used are evicted")
    max_pass_elements: int = _limit(1 << 28, "elements of all the values one pass computes (checked before "
                                    "it runs, from the layers' shape rules)")
    max_gradcheck_elements: int = _limit(200_000, "input elements one CheckGradients call perturbs")
    max_gradcheck_work: int = _limit(1 << 31, "CheckGradients work: 2 x perturbed elements x the cost of one "
                                     "forward (its values' elements, plus 1000 per node)")
    max_cached_plans: int = _limit(1_000, "compiled graphs kept; the oldest is dropped")
    max_cached_plan_bytes: int = _limit(ByteSize(512 << 20), "bytes the compiled-graph cache keeps (estimated "
                                        "per plan); the least recently used are dropped")
    max_named_graphs: int = _limit(1_000, "graph names (KServe models) the server keeps")
    max_named_graph_bytes: int = _limit(ByteSize(512 << 20), "bytes the named graphs' plans keep (estimated)")
    max_graph_name_length: int = _limit(200, "characters in a graph name")
    max_store_bytes: int = _limit(ByteSize(256 << 20), "bytes of graph files the --graph-store directory holds")
    # a server-side bound on any call, deadline or not
    max_call_seconds: float = _limit(600.0, "seconds any call may run, whatever its deadline")
    # Slow or silent peers (server/rpc/streams.py): each open stream holds one of the --max-workers threads.
    max_streams: int = _limit(12, "calls waiting on their clients at once: open streams, and unary calls that "
                                 "waited 0.5 s for their message (half of them per peer address); the rest of "
                                 "the --max-workers threads serve work")
    stream_idle_seconds: float = _limit(60.0, "seconds the server waits for a client's next message")
    stream_max_seconds: float = _limit(3600.0, "seconds a stream may stay open")

    def size_limits(self) -> SizeLimits:
        """What the engine checks before every pass."""
        return SizeLimits(self.max_tensor_elements, self.max_pass_elements)

    def check_arrays(self, arrays: Iterable[np.ndarray], what: str = "request") -> None:
        self.check_sizes(((name, array.size) for name, array in arrays), what)

    def check_sizes(self, sizes: Iterable[tuple[str, int]], what: str = "request") -> None:
        """Check (tensor name, element count) pairs: a streamed request's before its buffers are made."""
        total = 0
        for name, size in sizes:
            if size > self.max_tensor_elements:
                raise LimitError(f"tensor {name!r} has {size} elements, over the max-tensor-elements "
                                 f"limit of {self.max_tensor_elements}")
            total += size
        if total > self.max_request_elements:
            raise LimitError(f"the {what} carries {total} elements, over the max-request-elements limit "
                             f"of {self.max_request_elements}")
