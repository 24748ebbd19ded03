"""Models exported by torch.onnx.export, imported and run through gradserve: outputs and the gradients of the
input and of every parameter equal torch autograd's (the torch lane: needs torch and torchvision)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("onnx")

from gradserve.client.onnx_import import import_onnx  # noqa: E402
from torch_models import build, cases, export  # noqa: E402

RTOL, ATOL = 1e-7, 1e-9  # float64 on both sides


@pytest.mark.parametrize("name", list(cases()))
def test_exported_model_matches_torch_autograd(client, name):
    """Forward outputs, the input's gradient and every parameter's gradient match torch to float64 precision."""
    model, x, training = build(name)
    imported = import_onnx(export(model, x, training))
    params = dict(model.named_parameters())
    missing = set(params) - set(imported.params)
    assert not missing, f"parameters not found among the ONNX initializers: {sorted(missing)}"

    if x.is_floating_point():
        x.requires_grad_(True)
    y = model(x)
    dy = torch.randn_like(y)
    y.backward(dy)

    wrt = sorted(params) + (["x"] if x.is_floating_point() else [])
    feeds = imported.feeds({"x": x.detach().numpy()})
    res = client.run(imported.graph, feeds, grad=wrt, seed_grads={"y": dy.numpy()}, training=training)
    np.testing.assert_allclose(res.outputs["y"], y.detach().numpy(), rtol=RTOL, atol=ATOL)
    if x.is_floating_point():
        np.testing.assert_allclose(res.grads["x"], x.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg="d/dx")
    for pname, param in params.items():
        np.testing.assert_allclose(res.grads[pname], param.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=f"d/d{pname}")
