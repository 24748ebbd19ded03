"""The Train stream row: one 784-50-10 step (batch 100, float32, SGD) on a Train stream against, measured in the
same run, the book's numpy step in this process plus a unary echo of the batch's bytes.

The stream's step sends only the batch (the parameters and the optimizer live on the server) and gets the loss
back; the baseline is what any remote trainer must pay at the least: the compute (the book's layers and the
same SGD update, in-process) and one unary round trip of the same bytes. Alone: ``python -m bench --only
train_stream``.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits

from gradserve.client.optimizers import SGD
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import wire

from bench import book, timing, workloads
from bench.report import Row

MIB = 1 << 20
LR = 0.1
GOAL = "<= 1.0"  # issue 15; the stretch goal is 0.8


def batch_request(feeds) -> bytes:
    """The bytes of the TrainRequest a step sends (as the client encodes it): what the echo carries."""
    return wire.encode(pb.TrainRequest(batch=pb.TrainBatch()), {"feeds": feeds}).data


def train_stream(client, echo, sizes) -> Row:
    graph, feeds = workloads.mlp(sizes.batch)
    params = {name: feeds[name] for name in workloads.MLP_PARAMS}
    batch = {"x": feeds["x"], "t": feeds["t"]}
    payload = batch_request(batch)
    reference = {name: array.copy() for name, array in params.items()}
    sgd = SGD(lr=LR)

    def numpy_step():
        sgd.update(reference, book.two_layer_step(batch["x"], batch["t"], **reference)[1])

    # One BLAS thread for the in-process step, as the bench's server has (bench/serve.py --blas-threads 1): with
    # two on a loaded two-core machine OpenBLAS's threads wait on each other and the baseline gets 10-100x slower.
    with client.trainer(graph, params, "sgd", lr=LR, feeds=["x", "t"]) as trainer, \
            threadpool_limits(limits=1, user_api="blas"):
        t = timing.medians({
            "stream": lambda: trainer.step(batch),
            "numpy": numpy_step,
            "echo": lambda: echo(payload),
        }, sizes.rounds, sizes.train_calls * 2, warmup=1)
    return Row(f"Train stream step 784-50-10 b{sizes.batch} SGD: step / (numpy step + echo of the batch)", "µs",
               t["stream"] * 1e6, (t["numpy"] + t["echo"]) * 1e6, GOAL,
               f"numpy step + SGD {t['numpy'] * 1e6:.0f} µs + unary echo of the {len(payload) / MIB:.2f} MiB batch "
               f"{t['echo'] * 1e6:.0f} µs (one BLAS thread on both sides); stretch goal 0.8")
