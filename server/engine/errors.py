"""Errors the engine raises; each names the node it concerns and says what to fix."""

from __future__ import annotations

from typing import Iterable

#: How many names an error message lists before it says how many more there are.
LISTED_NAMES = 20
#: The longest name an error message quotes whole; a longer one is cut (a client may send megabytes).
QUOTED_NAME_CHARS = 100

#: Exceptions a layer raises for inputs it cannot handle: the caller's fault, not the server's.
INPUT_ERRORS = (ValueError, TypeError, IndexError, ArithmeticError)


def listing(names: Iterable[str], limit: int = LISTED_NAMES) -> str:
    """``a, b, c`` for an error message: at most ``limit`` names, then how many more there are."""
    names = list(names)
    shown = ", ".join(quoted(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def quoted(name: str, limit: int = QUOTED_NAME_CHARS) -> str:
    """``name`` as an error message shows it: whole when short, else its start and its length."""
    return name if len(name) <= limit else f"{name[:limit]}... ({len(name)} characters)"


class EngineError(Exception):
    """Base of every error a request can cause in the engine."""

    def __init__(self, message: str, node: str | None = None):
        self.node = node
        super().__init__(f"node {node!r}: {message}" if node else message)
        self.detail = message


class GraphError(EngineError):
    """The graph is malformed: bad names, arity, attributes, cycles, unknown outputs."""


class UnknownOpError(GraphError):
    """A node names a layer that no loaded plugin registers."""


class ArityError(GraphError):
    """A node has the wrong number of inputs or outputs for its layer."""


class AttributeValueError(GraphError):
    """A node's attribute is unknown to its layer or of the wrong type."""


class NameConflictError(GraphError):
    """A value name is defined twice, or a name is used that nothing defines."""


class CycleError(GraphError):
    """The nodes do not form a directed acyclic graph."""


class FeedError(EngineError):
    """The request's feeds or gradients do not match the graph: missing, extra, wrong dtype or shape."""


class ComputeError(EngineError):
    """A layer rejected its inputs while running (a shape or dtype mismatch, bad labels)."""


class UnknownGraphError(EngineError):
    """A graph id or name that this server does not know."""


class SessionError(EngineError):
    """A Forward session that does not exist, has expired or was evicted."""


class SessionExpiredError(SessionError):
    """The session existed but was dropped (TTL passed, or evicted under the memory cap)."""


class LimitError(EngineError):
    """A request exceeds a configured limit; the message names the limit and its value."""


class CancelledError(EngineError):
    """The caller went away or ran out of time; the run stopped between nodes."""


class DeadlineError(CancelledError):
    """The call's deadline passed; the run stopped between nodes."""
