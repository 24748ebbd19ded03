"""Run the benchmark suite: every case against its baseline, measured in the same run on this machine.

    python -m bench              # the full suite (a few minutes)
    python -m bench --quick      # tiny sizes, seconds: checks that the suite works
    python -m bench --only tiny,chain
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

from bench import engine_cases, malloc, network_cases, service_cases, session_cases
from bench.report import table
from bench.sizes import FULL, QUICK

CASE_NAMES = service_cases.NAMES + session_cases.NAMES + engine_cases.NAMES + network_cases.NAMES + malloc.NAMES


def environment_lines(unset: dict[str, str]) -> tuple[list[str], object, int]:
    """What ran: versions, the BLAS kernel (threadpoolctl), malloc settings; plus torch (or None) and threads."""
    import grpc
    import numpy as np
    from google.protobuf.internal import api_implementation

    lines = [
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, {_cpu_model()}, load average "
        + " ".join(f"{x:.1f}" for x in os.getloadavg()),
        f"python {platform.python_version()}, numpy {np.__version__}, grpcio {grpc.__version__}, "
        f"protobuf {_version('protobuf')} ({api_implementation.Type()})",
    ]
    threads = 1
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        lines.append("blas: unknown (pip install threadpoolctl, or the project's bench extra)")
    else:
        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                threads = pool["num_threads"]
                lines.append(f"blas: {pool['internal_api']} {pool.get('version')} kernel "
                             f"{pool.get('architecture', '?')}, {threads} threads")
    lines.append("unset for this run: " + (", ".join(f"{k}={v}" for k, v in unset.items()) or "nothing"))
    lines.append("malloc: " + (", ".join(f"{k}={v}" for k, v in os.environ.items() if k.startswith("MALLOC_"))
                               or "glibc defaults"))
    try:
        import torch
    except ImportError:
        torch = None
        lines.append("torch: not installed (its cases are skipped)")
    else:
        torch.set_num_threads(threads)
        lines.append(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    return lines, torch, threads


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown cpu"


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def main(argv: list[str] | None = None, unset: dict[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and repetitions (a smoke run)")
    parser.add_argument("--only", default="", help=f"comma-separated cases among: {', '.join(CASE_NAMES)}")
    args = parser.parse_args(argv)
    only = set(filter(None, args.only.split(","))) or None
    unknown = (only or set()) - set(CASE_NAMES)
    if unknown:
        parser.error(f"unknown case {sorted(unknown)[0]!r}; choose among {', '.join(CASE_NAMES)}")
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    lines, torch, threads = environment_lines(unset or {})
    print("\n".join(lines), flush=True)
    rows = engine_cases.all_cases(sizes, only, torch, threads)
    rows += service_cases.all_cases(sizes, only)
    rows += session_cases.all_cases(sizes, only)
    rows += network_cases.all_cases(sizes, only, torch, threads)
    if only is None or "malloc" in only:
        rows += malloc.all_cases(sizes)
    print()
    print(table(rows))
    print(f"\n{len(rows)} rows in {time.perf_counter() - started:.0f} s"
          f"{' (quick sizes: the ratios mean nothing)' if args.quick else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
