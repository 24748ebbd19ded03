"""Benchmark: one 784-50-10 training step (batch 100, float32) through gradserve vs numpy in-process + a gRPC echo.

    python -m bench.train_step            # both placements of the server; prints service / (numpy + echo)

A step is: send the batch and the parameters, get the loss and the gradients
back (one Run), update the parameters with SGD. It is timed against, in the
same run, (a) the same step in this process with plain numpy layers (the book's
Affine, Relu and SoftmaxWithLoss, in bench/book.py) and (b) a bare gRPC echo
that receives the step's request bytes and answers with its response bytes: a
generic method handler on a server built like gradserve's, over a channel with
the client's options. So the ratio is what gradserve costs over the compute
and the transport it cannot avoid. ``--mode process`` runs both servers in a
child process (as deployed), ``embedded`` in this process (as ``gs.connect()``
with no target does). The numbers come from ``measure()``; ``main()`` prints them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent import futures

import grpc
import numpy as np

import gradserve.client as gs
from gradserve.client.connection import DEFAULT_MESSAGE_BYTES
from gradserve.client.network import TwoLayerNet
from gradserve.client.optimizers import SGD
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import message_size_options
from gradserve.proto.tensors import to_tensor_map

from bench.book import two_layer_step

SIZES = (784, 50, 10)
BATCH_SIZE = 100
ECHO_METHOD = "/gradserve.bench.Echo/Step"
#: The client's channel options (client/connection.py), so the echo pays what a gradserve call pays.
CHANNEL_OPTIONS = message_size_options(DEFAULT_MESSAGE_BYTES)


# -- (b) a bare gRPC echo of the same bytes --

def start_echo_server(response: bytes) -> tuple[grpc.Server, int]:
    """A server built as gradserve's (16 worker threads, the same options) answering every call with ``response``."""
    from gradserve.server.rpc.server import ServerOptions, channel_options

    options = ServerOptions()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=options.max_workers),
                         options=channel_options(options.limits) + [("grpc.so_reuseport", 0)])
    handler = grpc.method_handlers_generic_handler("gradserve.bench.Echo", {
        "Step": grpc.unary_unary_rpc_method_handler(lambda request, context: response),
    })
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _serve_in_child(kind: str, conn, response: bytes = b"") -> None:
    """Child process: start a gradserve or an echo server, send its port, stop when told."""
    if kind == "gradserve":
        from gradserve.server.rpc.server import start_server

        running = start_server("127.0.0.1:0")
        port, stop = running.port, lambda: running.stop(None)
    else:
        server, port = start_echo_server(response)
        stop = lambda: server.stop(None)  # noqa: E731
    conn.send(port)
    conn.recv()
    stop()


class ChildServer:
    """A server in a spawned child process (a clean interpreter: gRPC and fork do not mix)."""

    def __init__(self, kind: str, response: bytes = b""):
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_serve_in_child, args=(kind, child_conn, response), daemon=True)
        self._process.start()
        if not self._conn.poll(60):
            self._process.kill()
            raise RuntimeError(f"the {kind} server did not start within 60 s")
        self.port = self._conn.recv()

    def stop(self) -> None:
        self._conn.send("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


# -- measuring --

def step_bytes(net: TwoLayerNet, client: gs.Client, x, t) -> tuple[bytes, bytes]:
    """The serialized Run request of one training step (as Client.run builds it) and the server's response."""
    request = pb.RunRequest(graph=pb.GraphRef(graph_id=client.register(net.graph)), wrt=net.param_names)
    to_tensor_map(net.feeds(x, t), request.feeds)
    to_tensor_map(net.seed_grads, request.output_grads)
    payload = request.SerializeToString()
    with grpc.insecure_channel(client.target, options=CHANNEL_OPTIONS) as channel:
        response = channel.unary_unary("/gradserve.v1.GradServe/Run")(payload)  # no serializers: bytes in and out
    return payload, response


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def measure(mode: str = "process", steps: int = 200, warmup: int = 20, rounds: int = 5,
            batch_size: int = BATCH_SIZE, sizes=SIZES, target: str | None = None) -> dict:
    """Median milliseconds per step for the service, numpy in-process and the echo; and the ratio.

    ``mode``: "process" (servers in a child process), "embedded" (in this
    process), or "remote" (the gradserve server at ``target``; the echo in a
    child process). The three are measured in ``rounds`` interleaved blocks so
    that a noisy neighbour weighs on all of them alike.
    """
    rng = np.random.default_rng(0)
    batches = [(rng.random((batch_size, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], batch_size))
               for _ in range(8)]
    children: list[ChildServer] = []
    try:
        if mode == "process":
            children.append(ChildServer("gradserve"))
            client = gs.connect(f"127.0.0.1:{children[0].port}")
        elif mode == "embedded":
            client = gs.connect()
        elif mode == "remote":
            if not target:
                raise ValueError("mode 'remote' needs a target")
            client = gs.connect(target)
        else:
            raise ValueError(f"unknown mode {mode!r}; use process, embedded or remote")
        with client:
            net = TwoLayerNet(sizes[0], sizes[1], sizes[2], seed=0, client=client)
            reference = {k: v.copy() for k, v in net.params.items()}  # (a): the book's layers on these
            request, response = step_bytes(net, client, *batches[0])
            if mode == "embedded":
                echo_server, echo_port = start_echo_server(response)
            else:
                children.append(ChildServer("echo", response))
                echo_server, echo_port = None, children[-1].port
            echo_channel = grpc.insecure_channel(f"127.0.0.1:{echo_port}", options=CHANNEL_OPTIONS)
            echo = echo_channel.unary_unary(ECHO_METHOD)
            service_sgd, numpy_sgd = SGD(lr=0.1), SGD(lr=0.1)

            def service_step(x, t):
                service_sgd.update(net.params, net.forward_backward(x, t).grads)

            def numpy_step(x, t):
                numpy_sgd.update(reference, two_layer_step(x, t, **reference)[1])

            def echo_step(x, t):
                echo(request)

            timings = {"service": [], "numpy": [], "echo": []}
            steps_per_round = max(1, steps // rounds)
            for name, fn in (("service", service_step), ("numpy", numpy_step), ("echo", echo_step)):
                for i in range(warmup):
                    fn(*batches[i % len(batches)])
            for _ in range(rounds):
                for name, fn in (("service", service_step), ("numpy", numpy_step), ("echo", echo_step)):
                    for i in range(steps_per_round):
                        x, t = batches[i % len(batches)]
                        begin = time.perf_counter()
                        fn(x, t)
                        timings[name].append(time.perf_counter() - begin)
            echo_channel.close()
            if echo_server is not None:
                echo_server.stop(None)
    finally:
        for child in children:
            child.stop()
    service, numpy_ms, echo_ms = (_median_ms(timings[k]) for k in ("service", "numpy", "echo"))
    return {
        "mode": mode, "sizes": list(sizes), "batch_size": batch_size, "dtype": "float32",
        "steps": len(timings["service"]), "request_bytes": len(request), "response_bytes": len(response),
        "service_ms": service, "numpy_ms": numpy_ms, "echo_ms": echo_ms,
        "ratio": service / (numpy_ms + echo_ms),
    }


def environment() -> str:
    """What the numbers depend on besides the code: load, BLAS threads and malloc settings."""
    settings = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "MALLOC_"))}
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cpus, load average {load}; "
            + (", ".join(f"{k}={v}" for k, v in sorted(settings.items())) or "no BLAS or malloc settings"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mode", choices=["process", "embedded", "both", "remote"], default="both")
    parser.add_argument("--target", default=None, help="HOST:PORT of a running server (implies --mode remote)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps of each kind")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON lines")
    args = parser.parse_args(argv)
    modes = ["remote"] if args.target else (["process", "embedded"] if args.mode == "both" else [args.mode])
    print(environment(), flush=True)
    for mode in modes:
        result = measure(mode, steps=args.steps, target=args.target)
        if args.json:
            print(json.dumps(result), flush=True)
            continue
        print(f"{mode:>8}: 784-50-10 step, batch {result['batch_size']}, float32 "
              f"(request {result['request_bytes'] / 1e3:.0f} kB, response {result['response_bytes'] / 1e3:.0f} kB), "
              f"median of {result['steps']}:", flush=True)
        print(f"          service {result['service_ms']:.3f} ms | (a) numpy in-process {result['numpy_ms']:.3f} ms"
              f" | (b) gRPC echo {result['echo_ms']:.3f} ms", flush=True)
        print(f"          service / (a + b) = {result['ratio']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
