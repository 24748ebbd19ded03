"""Hot-loop costs (process time, best of 7) of the paths docs/benchmarks.md's third round put back to plain code.

    python -m bench.hotloops     # run it in each tree to compare (it imports the installed gradserve)
"""
import time
import numpy as np
from gradserve.proto import gradserve_pb2 as pb, wire
from gradserve.proto.tensors import from_tensor_map


def best(fn, n: int, repeat: int = 7) -> float:
    """Seconds per call of ``fn``: the least over ``repeat`` rounds of ``n`` calls."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(n):
            fn()
        times.append((time.process_time() - start) / n)
    return min(times)


tiny = {"outputs": {"price": np.float64(220.0)},
        "grads": {"apple": np.float64(2.2), "apple_num": np.float64(110.0), "tax": np.float64(200.0)}}
print(f"encode tiny RunResponse: {best(lambda: wire.encode(pb.RunResponse(graph_id='g' * 32), tiny), 20000) * 1e6:.2f} us")

rng = np.random.default_rng(0)
big = {"feeds": {"x": rng.standard_normal((1024, 1024)).astype(np.float32), "w": np.float32(2)}}
decoder = wire.Decoder(pb.RunRequest)
for id_len in (31, 32, 33):
    request = pb.RunRequest(graph=pb.GraphRef(graph_id="g" * id_len))
    data = wire.encode(request, big).data
    enc = best(lambda: wire.encode(pb.RunRequest(graph=pb.GraphRef(graph_id="g" * id_len)), big), 30)
    dec = best(lambda: from_tensor_map(decoder.decode(data).tensors["feeds"])["x"].sum(), 30)
    print(f"4 MiB request, graph id of {id_len}: encode {enc * 1e3:.3f} ms, decode + read + sum {dec * 1e3:.3f} ms")

from gradserve.plugins.builtin.arithmetic import Add, Mul
x, y, d = np.array([1.5]), np.array([2.0]), np.array([1.0])


def mul():
    layer = Mul()
    layer.forward(x, y)
    layer.backward(d)


def add():
    layer = Add()
    layer.forward(x, y)
    layer.backward(d)



print(f"Mul forward+backward, 1 element: {best(mul, 50000) * 1e6:.2f} us; Add: {best(add, 50000) * 1e6:.2f} us")
