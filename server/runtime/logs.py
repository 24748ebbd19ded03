"""Logging for the `gradserve` command: text or JSON lines on stderr (the library itself only logs)."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from datetime import datetime, timezone

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and goes into the JSON.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, the record's extra fields, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        line.update((key, value) for key, value in vars(record).items() if key not in _STANDARD)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class StderrHandler(logging.StreamHandler):
    """Writes each record to whatever ``sys.stderr`` is when it is emitted, not to the one it was made with.

    A handler holding the stream of its creation writes to a closed file once that stream is swapped and
    closed, as pytest's capture does after each test that runs the CLI in-process (``--- Logging error ---``).
    """

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Send every log record to stderr, as text or (``json_lines``) as JSON objects, one per line."""
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:  # removed, not closed: logging_to_stderr may put them back
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


@contextlib.contextmanager
def logging_to_stderr(level: str = "INFO", json_lines: bool = False):
    """configure_logging while the block runs (a command), then the root logger as it was.

    A command run in-process (as tests run the CLI) must not leave its handler and level behind: the
    process's other servers would go on logging every call to stderr, between the test's captures.
    """
    root = logging.getLogger()
    handlers, previous = root.handlers[:], root.level
    configure_logging(level, json_lines)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(previous)
