"""Keep freed memory in the server process: glibc otherwise unmaps each large temporary and faults it back in."""

from __future__ import annotations

import ctypes
import logging
import os
import platform

_LOGGER = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap and are reused (glibc's maximum on 64-bit systems).
MMAP_THRESHOLD = 32 << 20
#: Free memory the heap keeps before giving it back to the system.
TRIM_THRESHOLD = 256 << 20
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory(environ=os.environ) -> bool:
    """Set glibc's mmap and trim thresholds as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ would; True when set.

    With glibc's defaults every request's tensors (protobuf arenas, serialized bytes,
    numpy temporaries of a few hundred KiB and up) are mapped fresh and unmapped
    again, and touching fresh pages costs more than the copies themselves (the bench's
    malloc rows measure it). Nothing changes when either variable is already set (the
    operator chose) or when the C library is not glibc.
    """
    if any(name in environ for name in ENVIRONMENT) or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    done = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if done:
        _LOGGER.debug("malloc keeps freed blocks up to %d bytes, trims past %d bytes", MMAP_THRESHOLD, TRIM_THRESHOLD)
    return done
