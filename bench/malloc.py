"""glibc's malloc returning memory after every large temporary: the same work with and without tuning.

Run as `python -m bench.malloc` it is the probe: it times the book's numpy step and the
engine's step in its own process (malloc settings are read at process start) and prints JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from gradserve.server.runtime import malloc as allocator

#: What `gradserve serve` sets with mallopt, as environment variables for processes that do not.
TUNED = {"MALLOC_MMAP_THRESHOLD_": str(allocator.MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(allocator.TRIM_THRESHOLD)}


def environment(tuned: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TUNED}
    return {**env, **TUNED} if tuned else env


def probe(batch: int, rounds: int, calls: int) -> dict[str, float]:
    from gradserve.server.engine import execute as engine

    from bench import book, timing, workloads

    graph, feeds = workloads.mlp(batch)
    plan = workloads.plan_of(graph)
    wrt = list(workloads.MLP_PARAMS)
    return timing.medians({"numpy": lambda: book.two_layer_step(**feeds),
                           "engine": lambda: engine.run(plan, feeds, wrt=wrt)}, rounds, calls)


def measure_in_process(tuned: bool, batch: int, rounds: int, calls: int) -> dict[str, float]:
    from bench.servers import ROOT

    args = [sys.executable, "-m", "bench.malloc", str(batch), str(rounds), str(calls)]
    env = environment(tuned)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def all_cases(sizes) -> list:
    from bench import timing, workloads
    from bench.report import Row
    from bench.servers import ServerProcess, gradserve_client

    rows = []
    default = measure_in_process(False, sizes.batch, sizes.rounds, sizes.step_calls)
    tuned = measure_in_process(True, sizes.batch, sizes.rounds, sizes.step_calls)
    settings = " ".join(f"{k}={v}" for k, v in TUNED.items())
    for name, what in (("numpy", "book numpy"), ("engine", "engine")):
        rows.append(Row(f"malloc: {what} step in-process, tuned / glibc defaults", "µs", tuned[name] * 1e6,
                        default[name] * 1e6, "", settings if name == "numpy" else ""))
    mlp, mlp_feeds = workloads.mlp(sizes.batch)
    relu, relu_feeds = workloads.relu(int(sizes.large_mib[0] * (1 << 20)))
    work = (("training-step Run", mlp, mlp_feeds, list(workloads.MLP_PARAMS), sizes.train_calls),
            (f"Relu {sizes.large_mib[0]:g} MiB Run", relu, relu_feeds, False, sizes.large_calls[0]))
    with ServerProcess("gradserve", env=environment(False), glibc_malloc=True) as plain, \
            ServerProcess("gradserve", env=environment(False)) as tuned_server, \
            ServerProcess("gradserve", env=environment(False), blas_threads=0) as library_threads, \
            gradserve_client(plain.target) as plain_client, gradserve_client(tuned_server.target) as tuned_client, \
            gradserve_client(library_threads.target) as library_client:
        clients = {"plain": plain_client, "tuned": tuned_client, "library": library_client}
        for what, graph, feeds, grad, calls in work:
            ids = {name: c.register(graph) for name, c in clients.items()}
            t = timing.medians({name: (lambda c=c, name=name: c.run(ids[name], feeds, grad=grad))
                                for name, c in clients.items()}, sizes.rounds, calls)
            rows.append(Row(f"malloc: {what}, server as shipped / glibc defaults", "µs", t["tuned"] * 1e6,
                            t["plain"] * 1e6, "", "gradserve serve keeps freed memory (server/runtime/malloc.py)"
                            if grad is not False else ""))
            if grad is not False:
                rows.append(Row(f"blas: {what}, server as shipped / BLAS's own thread count", "µs", t["tuned"] * 1e6,
                                t["library"] * 1e6, "", "gradserve serve --blas-threads 1 (the default) vs 0"))
    return rows


NAMES = ("malloc",)

if __name__ == "__main__":
    batch, rounds, calls = map(int, sys.argv[1:4])
    print(json.dumps(probe(batch, rounds, calls)))
