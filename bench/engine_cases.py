"""Cases in one process: the engine against the same layers in a plain loop, and against PyTorch autograd."""

from __future__ import annotations

import time

import numpy as np

import gradserve.client as gs
from gradserve.server.engine import execute as engine

from bench import book, timing, workloads
from bench.report import Row, Skipped
from bench.sizes import Sizes


def _plain_loop(classes, feeds):
    """The chain as a reader writes it: the engine's own layer classes, forward in a loop, backward reversed."""
    x, a = feeds["x"], feeds["a"]

    def run():
        layers = []
        value = x
        for cls in classes:
            layer = cls()
            value = layer.forward(value, a)
            layers.append(layer)
        dvalue, da = np.ones_like(value), None
        for layer in reversed(layers):
            dvalue, grad_a = layer.backward(dvalue)
            da = grad_a if da is None else da + grad_a
        return dvalue, da

    return run


def chain(sizes: Sizes, torch) -> list:
    graph, feeds = workloads.chain(sizes.chain_nodes)
    plan = workloads.plan_of(graph)
    fns = {"engine": lambda: engine.run(plan, feeds),
           "loop": _plain_loop([step.cls for step in plan.steps], feeds)}
    if torch is not None:
        fns["torch"] = _torch_chain(torch, sizes.chain_nodes, feeds)
    # CPU time of this (single-threaded) process: other people's processes on a shared machine do not count.
    t = timing.medians(fns, sizes.rounds, sizes.chain_calls, clock=time.process_time)
    per_node = {name: seconds / sizes.chain_nodes * 1e6 for name, seconds in t.items()}
    rows = [Row(f"engine overhead: {sizes.chain_nodes}-node Mul/Add chain, engine / plain loop", "µs/node",
                per_node["engine"], per_node["loop"], "<= 1.5",
                "forward and backward, 1-element float64 arrays, CPU time (both chain rows)")]
    if torch is None:
        rows.append(Skipped("engine vs PyTorch: chain, µs per node", "torch is not installed"))
    else:
        rows.append(Row(f"engine vs PyTorch: {sizes.chain_nodes}-node chain, engine / torch autograd", "µs/node",
                        per_node["engine"], per_node["torch"], "<= 0.5", ""))
    return rows


def _torch_chain(torch, n_nodes, feeds):
    x0, a0 = (torch.from_numpy(feeds[k]) for k in ("x", "a"))

    def run():
        x, a = x0.clone().requires_grad_(), a0.clone().requires_grad_()
        value = x
        for i in range(n_nodes):
            value = value * a if i % 2 == 0 else value + a
        return torch.autograd.grad(value, (x, a), torch.ones_like(value))

    return run


def step(sizes: Sizes, torch, threads: int) -> list:
    graph, feeds = workloads.mlp(sizes.batch)
    plan = workloads.plan_of(graph)
    wrt = list(workloads.MLP_PARAMS)
    fns = {"engine": lambda: engine.run(plan, feeds, wrt=wrt), "numpy": lambda: book.two_layer_step(**feeds)}
    if torch is not None:
        fns["torch"] = _torch_step(torch, feeds)
    t = timing.medians(fns, sizes.rounds, sizes.step_calls)
    rows = [Row(f"engine vs book numpy: 784-50-10 step b{sizes.batch}, in-process", "µs", t["engine"] * 1e6,
                t["numpy"] * 1e6, "", "the book's layer objects in a loop")]
    if torch is None:
        rows.append(Skipped("engine vs PyTorch: 784-50-10 step", "torch is not installed"))
    else:
        rows.append(Row(f"engine vs PyTorch: 784-50-10 step b{sizes.batch}, engine / torch autograd", "µs",
                        t["engine"] * 1e6, t["torch"] * 1e6, "<= 1.1", f"float32, {threads} threads each"))
    return rows


def _torch_step(torch, feeds):
    functional = torch.nn.functional
    x, t = torch.from_numpy(feeds["x"]), torch.from_numpy(feeds["t"])
    params = [torch.from_numpy(feeds[name].copy()).requires_grad_() for name in workloads.MLP_PARAMS]

    def run():
        W1, b1, W2, b2 = params
        loss = functional.cross_entropy(functional.relu(x @ W1 + b1) @ W2 + b2, t)
        return torch.autograd.grad(loss, params)

    return run


def conv(sizes: Sizes, torch, threads: int) -> list:
    """One 3x3 Convolution (64 -> 64 channels, 32x32, "same" padding) forward and backward in the engine, every
    gradient (dx, dW, db), against torch autograd doing the same on the same threads."""
    batch, channels, size = sizes.conv_batch, 64, 32
    g = gs.Graph(dtype="float32")
    g.output(g.Convolution(*g.inputs("x", "W", "b"), pads=[1, 1, 1, 1]), "out")
    plan = workloads.plan_of(g)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((batch, channels, size, size), dtype=np.float32),
             "W": (rng.standard_normal((channels, channels, 3, 3), dtype=np.float32) * 0.05),
             "b": np.zeros(channels, np.float32)}
    dout = {"out": np.ones((batch, channels, size, size), np.float32)}
    case = f"Convolution 3x3 {channels}->{channels} {size}x{size} b{batch} forward+backward, engine / torch autograd"
    if torch is None:
        return [Skipped(case, "torch is not installed")]
    x, W, b = (torch.from_numpy(feeds[k]).requires_grad_() for k in ("x", "W", "b"))
    seed = torch.from_numpy(dout["out"])

    def torch_step():
        out = torch.nn.functional.conv2d(x, W, b, padding=1)
        return torch.autograd.grad(out, (x, W, b), seed)

    fns = {"engine": lambda: engine.run(plan, feeds, output_grads=dout, wrt=["x", "W", "b"]), "torch": torch_step}
    t = timing.medians(fns, sizes.rounds, sizes.conv_calls)
    return [Row(case, "ms", t["engine"] * 1e3, t["torch"] * 1e3, "<= 2",
                f"float32, {threads} threads each; im2col + OpenBLAS GEMM against torch's own kernels")]


def all_cases(sizes: Sizes, only, torch, threads: int) -> list:
    rows = []
    if only is None or "conv" in only:
        rows.extend(conv(sizes, torch, threads))
    if only is None or "chain" in only:
        rows.extend(chain(sizes, torch))
    if only is None or "step" in only:
        rows.extend(step(sizes, torch, threads))
    return rows


NAMES = ("chain", "step", "conv")
