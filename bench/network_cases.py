"""Real networks through the service: torchvision's resnet18, exported to ONNX and imported, forward and backward
by one Run against torch doing the same in this process, on the same number of threads."""

from __future__ import annotations

import io

import numpy as np

from bench import timing
from bench.report import Row, Skipped
from bench.servers import ServerProcess, gradserve_client
from bench.sizes import Sizes

NAMES = ("resnet18",)


def resnet18(sizes: Sizes, torch, threads: int) -> Row | Skipped:
    case = f"resnet18 b{sizes.resnet_batch} 3x32x32 forward+backward: Run through the service / torch in-process"
    if torch is None:
        return Skipped(case, "torch is not installed")
    try:
        import torchvision
        from gradserve.client.onnx_import import import_onnx
    except ImportError as exc:
        return Skipped(case, f"{exc.name} is not installed")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(sizes.resnet_batch, 3, 32, 32)
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, opset_version=17, input_names=["x"], output_names=["y"],
                      do_constant_folding=False, dynamo=False)
    imported = import_onnx(buffer.getvalue())
    feeds = imported.feeds({"x": x.numpy()})
    wrt = list(imported.params) + ["x"]
    dy = np.ones((sizes.resnet_batch, 10), np.float32)
    x_torch = x.clone().requires_grad_(True)

    def torch_step():
        model.zero_grad(set_to_none=True)
        x_torch.grad = None
        model(x_torch).backward(torch.from_numpy(dy))

    with ServerProcess("gradserve", blas_threads=threads) as server, gradserve_client(server.target) as client:
        graph_id = client.register(imported.graph)
        t = timing.medians({"service": lambda: client.run(graph_id, feeds, grad=wrt, seed_grads={"y": dy}),
                            "torch": torch_step}, sizes.rounds, sizes.resnet_calls)
    return Row(case, "ms", t["service"] * 1e3, t["torch"] * 1e3, "<= 3",
               f"float32, {threads} threads each; gradients of the input and all {len(imported.params)} parameters")


def all_cases(sizes: Sizes, only, torch, threads: int) -> list:
    return [resnet18(sizes, torch, threads)] if only is None or "resnet18" in only else []
