"""BLAS threads of the server process: requests already run in parallel, so each runs its math on one thread."""

from __future__ import annotations

import logging

_LOGGER = logging.getLogger(__name__)


def limit_blas_threads(threads: int) -> bool:
    """Cap the threads of every BLAS library loaded in this process (0: leave the library's default).

    A multi-threaded BLAS call in a server competes for the cores with the other
    requests, the gRPC threads and, on a small machine, the client: its threads spin
    while waiting for a core, and a 784-50-10 training step got several times slower
    on two shared cores (the bench's "blas" row). Scale out with --workers instead.
    """
    if threads <= 0:
        return False
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")  # called, not entered: the limit stays for the process
    _LOGGER.debug("BLAS limited to %d thread(s) per process", threads)
    return True
