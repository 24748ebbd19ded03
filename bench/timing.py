"""Timing: per-call medians measured in alternating rounds, and call rates from concurrent threads."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Callable

Clock = time.perf_counter


def medians(fns: dict[str, Callable[[], object]], rounds: int, calls: int, warmup: int = 1,
            clock: Callable[[], float] = Clock) -> dict[str, float]:
    """Median seconds per call of each function.

    The functions take turns, ``calls`` calls each per round, so that the load of a
    shared machine drifting during the run falls on subject and baseline alike.
    ``clock=time.process_time`` counts this process's CPU time instead of the wall
    clock: for single-threaded work, it leaves out the time other processes held the cores.
    """
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for index in range(warmup + rounds):
        for name, fn in fns.items():
            times = []
            for _ in range(calls):
                start = clock()
                fn()
                times.append(clock() - start)
            if index >= warmup:
                samples[name].extend(times)
    return {name: statistics.median(times) for name, times in samples.items()}


def rate(fn: Callable[[], object], threads: int, seconds: float) -> float:
    """Calls per second that ``threads`` threads calling ``fn`` in a loop complete together."""
    counts = [0] * threads
    start_line = threading.Barrier(threads + 1)
    stop = threading.Event()

    def worker(index: int) -> None:
        start_line.wait()
        n = 0
        while not stop.is_set():
            fn()
            n += 1
        counts[index] = n

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    start_line.wait()
    began = Clock()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return sum(counts) / (Clock() - began)


def rates(fns: dict[str, Callable[[], object]], threads: int, seconds: float, rounds: int) -> dict[str, float]:
    """Median call rate of each function over alternating rounds (after one short warm-up each)."""
    for fn in fns.values():
        rate(fn, threads, min(seconds, 0.2))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(rate(fn, threads, seconds))
    return {name: statistics.median(values) for name, values in samples.items()}
