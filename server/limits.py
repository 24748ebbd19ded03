"""The server's configurable limits, each with a default and an error naming it and its value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from gradserve.server.errors import LimitError


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 256 << 20  # room for a 64 MiB tensor and its gradient, with margin
    max_graph_nodes: int = 10_000
    max_tensor_elements: int = 1 << 26  # 64 Mi elements (256 MiB of float32)
    max_request_elements: int = 1 << 27
    max_sessions: int = 10_000
    session_ttl: float = 300.0
    max_session_bytes: int = 2 << 30
    max_gradcheck_elements: int = 200_000
    max_cached_plans: int = 1_000
    max_named_graphs: int = 1_000
    max_call_seconds: float = 600.0  # a server-side bound on any call, deadline or not

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
