"""Where a tiny Run's time goes: p50 latency and CPU per call of each process, Run against the bare echo.

    python -m bench.percall            # 5 rounds of 1,000 calls each
    python -m bench.percall --calls 300 --rounds 3

The server's CPU comes from /proc (every thread of its process), the client's from ``time.process_time``
(this process: the calling thread and gRPC's own). On the machines the benchmarks ran on, a Run's extra
latency over the echo is about the extra CPU of both processes added up (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench import workloads
from bench.servers import Echo, ServerProcess, gradserve_client
from bench.service_cases import run_request


def measure(call, server: ServerProcess, calls: int) -> tuple[float, float, float]:
    """(p50 seconds, client CPU seconds per call, server CPU seconds per call) over ``calls`` calls."""
    times = []
    server_before, client_before = server.cpu_seconds(), time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    client = (time.process_time() - client_before) / calls
    return statistics.median(times), client, (server.cpu_seconds() - server_before) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.percall", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of Run and echo")
    args = parser.parse_args(argv)
    graph, feeds = workloads.apple()
    with ServerProcess("gradserve") as gs_server, ServerProcess("echo") as echo_server:
        client, echo = gradserve_client(gs_server.target), Echo(echo_server.target)
        try:
            graph_id = client.register(graph)
            payload = run_request(graph_id, feeds)
            subjects = {"Run": (lambda: client.run(graph_id, feeds), gs_server),
                        "echo": (lambda: echo(payload), echo_server)}
            for call, _ in subjects.values():  # warm up: connections, imports, the plan
                for _ in range(100):
                    call()
            results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in subjects}
            for _ in range(args.rounds):
                for name, (call, server) in subjects.items():
                    results[name].append(measure(call, server, args.calls))
        finally:
            client.close()
            echo.close()
    print(f"{'µs per call (median of rounds)':32}  {'p50':>7}  {'client CPU':>10}  {'server CPU':>10}")
    medians = {name: [statistics.median(r[i] for r in rounds) * 1e6 for i in range(3)]
               for name, rounds in results.items()}
    for name, (p50, client_cpu, server_cpu) in medians.items():
        print(f"{name:32}  {p50:7.0f}  {client_cpu:10.0f}  {server_cpu:10.0f}")
    run, echo_ = medians["Run"], medians["echo"]
    print(f"{'Run - echo':32}  {run[0] - echo_[0]:7.0f}  {run[1] - echo_[1]:10.0f}  {run[2] - echo_[2]:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
