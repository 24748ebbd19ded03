"""A cap on the server process's memory: an allocation past it fails with MemoryError instead of the OOM killer."""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import threading
from pathlib import Path
from typing import Literal, Union

from gradserve.server.engine.errors import LimitError

_LOGGER = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: --max-memory's default: cap at the container's memory limit, if it has one.
AUTO = "auto"
#: What --max-memory parses to: bytes, None (no cap) or AUTO.
MaxMemory = Union[int, None, Literal["auto"]]
#: The smallest cap that leaves room for requests: the server's threads (a stack each), libraries and heap
#: take about 300 MiB of RLIMIT_DATA with 16 calls in flight, though far less of it is resident. Below
#: that even starting fails (a plugin's import, gRPC's threads), so smaller caps are refused.
MIN_CAP = 512 << 20

# cgroup v1 says "no limit" with a huge number (2**63 rounded down to a page); nothing real comes near 2**60.
_UNLIMITED = 1 << 60
_UNITS = {"": 1, "b": 1} | {letter + suffix: 1024 ** power
                            for power, letter in enumerate("kmgt", start=1) for suffix in ("", "b", "i", "ib")}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


def container_memory_limit(root: str | os.PathLike = CGROUP_ROOT,
                           own: str | os.PathLike = "/proc/self/cgroup") -> int | None:
    """The memory limit of this process's cgroup in bytes, or None when it has none.

    cgroup v2's ``memory.max`` ("max": none), else cgroup v1's ``memory/memory.limit_in_bytes`` (none when it
    is the "unlimited" huge value or more than the machine's RAM), in the process's own cgroup (``own``: the
    /proc file that names it; "/" inside a container, a service's path under systemd) or any cgroup above it,
    whichever is lowest: every one of them applies.
    """
    root = Path(root)
    v2_path, v1_path = _own_cgroups(own)
    v2 = [_read(folder / "memory.max") for folder in _up_to(root, v2_path)]
    if any(value is not None for value in v2):
        limits = [_bytes(value) for value in v2 if value not in (None, "max")]
        return min((limit for limit in limits if limit is not None), default=None)
    memory = root / "memory"
    v1 = [_bytes(_read(folder / "memory.limit_in_bytes")) for folder in _up_to(memory, v1_path)]
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min((limit for limit in v1 if limit is not None and limit < min(_UNLIMITED, ram)), default=None)


def _own_cgroups(own: str | os.PathLike) -> tuple[str, str]:
    """This process's cgroup v2 path and its cgroup v1 memory path, from /proc/self/cgroup ("/" if unknown)."""
    v2 = v1 = "/"
    for line in (_read(Path(own)) or "").splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and not controllers:
            v2 = path or "/"
        elif "memory" in controllers.split(","):
            v1 = path or "/"
    return v2, v1


def _up_to(root: Path, path: str) -> list[Path]:
    """``root / path`` and every folder above it up to ``root`` itself."""
    parts = [part for part in path.split("/") if part and part != ".."]
    return [root.joinpath(*parts[:end]) for end in range(len(parts), -1, -1)]


def cap_memory(max_bytes: int | None) -> int | None:
    """Cap this process's data memory (RLIMIT_DATA) at ``max_bytes``; the cap set, None for no cap.

    RLIMIT_DATA (enforced since Linux 4.7) counts private writable mappings, where malloc and numpy put
    arrays, by their virtual size. Past it an allocation fails at once, so numpy raises MemoryError and the
    request gets RESOURCE_EXHAUSTED; without it the kernel overcommits, the pages are touched, and the
    OOM killer ends the whole server. The hard limit is never raised: a cap above it becomes the hard limit.
    Child processes (--workers) inherit the cap, each process on its own.
    """
    if max_bytes is None:
        return None
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        max_bytes = min(max_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (max_bytes, hard))
    return max_bytes


def apply_max_memory(setting: MaxMemory, root: str | os.PathLike = CGROUP_ROOT, processes: int = 1) -> int | None:
    """Cap the process as --max-memory says (AUTO: the container's limit, if any, shared by ``processes``
    server processes: --workers); log the cap and its source."""
    if setting == AUTO:
        limit = container_memory_limit(root)
        wanted = None if limit is None else limit // processes
        source = "no container memory limit" if limit is None else "the container's memory limit" + (
            f" over {processes} workers" if processes > 1 else "")
        if wanted is not None and wanted < MIN_CAP:
            _LOGGER.warning("memory not capped: %s gives %s per process, below the %s the server needs for a cap "
                            "to leave room for requests", source, format_size(wanted), format_size(MIN_CAP))
            return None
    else:
        wanted, source = setting, "--max-memory"
    cap = cap_memory(wanted)
    if cap is None:
        _LOGGER.info("memory not capped (%s)", source)
    else:
        lowered = " lowered to the hard RLIMIT_DATA" if cap != wanted else ""
        _LOGGER.info("memory capped at %s (%s%s): larger allocations fail with RESOURCE_EXHAUSTED",
                     format_size(cap), source, lowered)
    return cap


def parse_max_memory(text: str) -> MaxMemory:
    """A --max-memory value: bytes or a size with K, M, G, T (powers of 1024: 512M, 2GiB, 1.5Gi), 0 or
    "none" for no cap, or "auto"."""
    text = text.strip().lower()
    if text in (AUTO, "none"):
        return AUTO if text == AUTO else None
    match = _SIZE.fullmatch(text)
    unit = _UNITS.get(match[2]) if match else None
    if unit is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: give bytes or a size like 512M or 2GiB "
                                         "(K, M, G, T are powers of 1024), 0 or none for no cap, or auto")
    cap = int(float(match[1]) * unit) or None
    if cap is not None and cap < MIN_CAP:
        raise argparse.ArgumentTypeError(f"{format_size(cap)} leaves no room for requests: the server itself takes "
                                         f"about 300 MiB of it; give at least {format_size(MIN_CAP)}, or 0 for no cap")
    return cap


def format_size(nbytes: int) -> str:
    """``nbytes`` for a log line: 1.5 GiB, 512 MiB, 1000 B."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.4g} {unit}"
    return f"{nbytes} B"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:  # no such cgroup version here, or not readable: no limit to follow
        return None


def _bytes(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def current_cap() -> int | None:
    """The soft RLIMIT_DATA this process runs under (what --max-memory set), or None when there is none."""
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    return None if soft == resource.RLIM_INFINITY else soft


def data_bytes(status: str | os.PathLike = "/proc/self/status") -> int:
    """What RLIMIT_DATA measures of this process now: VmData (its private writable mappings), in bytes."""
    for line in (_read(Path(status)) or "").splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    return 0


#: What a call reserves per byte of request tensors: the tensors themselves, and as much again for what it
#: makes of them (outputs, gradients, temporaries). A guess the cap itself backs up: a call that allocates
#: more than it reserved still gets RESOURCE_EXHAUSTED from the cap, rarely enough that the margin holds.
RESERVE_FACTOR = 2
#: Calls smaller than this reserve nothing: they cost more to count than they could take.
RESERVE_FROM = 1 << 20


class MemoryBudget:
    """The bytes calls in flight may reserve under the cap: refused beyond it, so the cap itself is never met.

    RLIMIT_DATA is one limit for everything in the process. When a tensor allocation meets it, that call gets
    RESOURCE_EXHAUSTED; but gRPC's core and the interpreter allocate too, and one of their allocations failing
    aborts the whole process (a 1 GiB cap died so with four 144 MB calls in flight). So calls reserve their
    bytes here first, from a budget that leaves the cap a margin for everyone else: what the process held when
    it started serving (threads' stacks, libraries) and ``margin`` more. ``held`` tells what else is kept
    (the Forward sessions' bytes), which counts against the budget as well.
    """

    def __init__(self, total: int, held=lambda: 0):
        self.total = total
        self._held = held
        self._reserved = 0
        self._lock = threading.Lock()

    @classmethod
    def under_cap(cls, cap: int, held=lambda: 0) -> "MemoryBudget":
        """The budget under ``cap``: less what the process holds now and a margin of an eighth (64 MiB at least)."""
        margin = max(64 << 20, cap // 8)
        return cls(max(0, cap - data_bytes() - margin), held)

    @property
    def reserved(self) -> int:
        return self._reserved

    def reserve(self, nbytes: int, what: str = "the call") -> int:
        """Reserve ``nbytes`` (release() them after); LimitError when they do not fit; the bytes reserved."""
        if nbytes < RESERVE_FROM:
            return 0
        with self._lock:
            held = self._held()
            if self._reserved + held + nbytes > self.total:
                raise LimitError(f"{what} needs about {format_size(nbytes)} and the server's memory budget under "
                                 f"--max-memory has {format_size(max(0, self.total - self._reserved - held))} "
                                 f"of {format_size(self.total)} free (calls in flight and sessions hold the rest); "
                                 "try again later or send less at once")
            self._reserved += nbytes
        return nbytes

    def release(self, nbytes: int) -> None:
        if nbytes:
            with self._lock:
                self._reserved -= nbytes
