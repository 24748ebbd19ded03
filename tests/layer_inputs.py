"""Example inputs for every built-in layer, used by the gradient checks (float64, random, some broadcast)."""

from __future__ import annotations

import numpy as np


def layer_cases(rng: np.random.Generator) -> dict[str, list[tuple[dict, dict]]]:
    """{op: [(inputs by name, attributes), ...]} with at least one case per built-in layer."""
    r = lambda *shape: rng.standard_normal(shape)  # noqa: E731
    pos = lambda *shape: rng.uniform(0.5, 2.0, shape)  # noqa: E731
    labels = rng.integers(0, 4, size=5)
    onehot = np.eye(4)[labels]
    return {
        "Mul": [({"x": r(3, 4), "y": r(3, 4)}, {}), ({"x": r(3, 4), "y": r(4)}, {}), ({"x": r(3, 1), "y": r(1, 4)}, {})],
        "Add": [({"x": r(3, 4), "y": r(4)}, {}), ({"x": r(2, 3, 4), "y": r(3, 1)}, {})],
        "Sub": [({"x": r(3, 4), "y": r(4)}, {}), ({"x": r(1), "y": r(2, 3)}, {})],
        "Div": [({"x": r(3, 4), "y": pos(4)}, {}), ({"x": r(2, 1), "y": pos(2, 3)}, {})],
        "Neg": [({"x": r(3, 4)}, {})],
        "MatMul": [({"x": r(3, 4), "y": r(4, 2)}, {}), ({"x": r(2, 3, 4), "y": r(4, 5)}, {}), ({"x": r(4), "y": r(4, 3)}, {})],
        "Relu": [({"x": r(3, 4) + 0.05}, {})],
        "Sigmoid": [({"x": r(3, 4)}, {})],
        "Tanh": [({"x": r(3, 4)}, {})],
        "Exp": [({"x": r(3, 4)}, {})],
        "Log": [({"x": pos(3, 4)}, {})],
        "Softmax": [({"x": r(3, 4)}, {}), ({"x": r(3, 4)}, {"axis": 0})],
        "Sum": [({"x": r(3, 4)}, {}), ({"x": r(2, 3, 4)}, {"axis": [1], "keepdims": True}), ({"x": r(2, 3, 4)}, {"axis": [0, 2]})],
        "Mean": [({"x": r(3, 4)}, {}), ({"x": r(2, 3, 4)}, {"axis": [-1]})],
        "Reshape": [({"x": r(3, 4)}, {"shape": [2, -1]}), ({"x": r(3, 4, 2)}, {"shape": [0, -1], "copy_zeros": True})],
        "Identity": [({"x": r(3, 4)}, {})],
        "Constant": [({}, {"value": [1.0, 2.0, 3.0], "shape": [3], "dtype": "float64"})],
        "Affine": [({"x": r(5, 3), "W": r(3, 4), "b": r(4)}, {}), ({"x": r(2, 2, 3), "W": r(6, 4), "b": r(4)}, {})],
        "SoftmaxWithLoss": [({"x": r(5, 4), "t": labels}, {}), ({"x": r(5, 4), "t": onehot}, {}),
                            ({"x": r(5, 4), "t": rng.dirichlet(np.ones(4), size=5)}, {})],
        "Dropout": [({"x": r(3, 4)}, {"ratio": 0.3})],
        "Gemm": [
            ({"A": r(3, 4), "B": r(4, 2), "C": r(2)}, {}),
            ({"A": r(4, 3), "B": r(2, 4), "C": r(3, 1)}, {"alpha": 0.5, "beta": -2.0, "transA": True, "transB": True}),
        ],
        "Transpose": [({"x": r(3, 4)}, {}), ({"x": r(2, 3, 4)}, {"perm": [1, -1, 0]})],
        "Flatten": [({"x": r(2, 3, 4)}, {}), ({"x": r(2, 3, 4)}, {"axis": -1}), ({"x": r(2, 3)}, {"axis": 0})],
        "BatchNormalization": [
            ({"x": r(6, 3), "gamma": pos(3), "beta": r(3), "running_mean": np.zeros(3), "running_var": np.ones(3)}, {}),
            ({"x": r(2, 3, 2, 2), "gamma": pos(3), "beta": r(3), "running_mean": r(3), "running_var": pos(3)},
             {"spatial": True, "epsilon": 1e-5}),
            ({"x": r(4, 2, 3), "gamma": pos(2), "beta": r(2), "running_mean": r(2), "running_var": pos(2)},
             {"spatial": True, "training_mode": True}),
        ],
        "LayerNormalization": [
            ({"x": r(3, 4), "scale": pos(4), "bias": r(4)}, {}),
            ({"x": r(2, 3, 4), "scale": pos(3, 4), "bias": r(4)}, {"axis": 1, "epsilon": 1e-3}),
        ],
        "Gelu": [({"x": r(3, 4)}, {}), ({"x": r(3, 4)}, {"approximate": "tanh"})],
        "Erf": [({"x": r(3, 4)}, {})],
        "LogSoftmax": [({"x": r(3, 4)}, {}), ({"x": r(2, 3, 4)}, {"axis": 1})],
        "Convolution": [
            ({"x": r(2, 3, 5, 5), "W": r(4, 3, 3, 3), "b": r(4)}, {}),
            ({"x": r(2, 4, 6, 5), "W": r(6, 2, 2, 3), "b": r(6)},
             {"strides": [2, 1], "pads": [1, 0, 0, 2], "dilations": [1, 2], "group": 2}),
            ({"x": r(1, 2, 7), "W": r(3, 2, 3), "b": r(3)}, {"auto_pad": "SAME_UPPER", "strides": [2]}),
        ],
        "Pooling": [
            ({"x": r(2, 3, 4, 4)}, {"kernel_shape": [2, 2], "strides": [2, 2]}),
            ({"x": r(1, 2, 5, 6)}, {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1], "ceil_mode": True,
                                    "strides": [2, 2]}),
            ({"x": r(2, 2, 5, 5)}, {"mode": "average", "kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
            ({"x": r(2, 2, 5, 5)}, {"mode": "average", "kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                    "count_include_pad": True, "strides": [2, 2], "ceil_mode": True}),
            ({"x": r(1, 2, 9)}, {"kernel_shape": [3], "dilations": [2], "auto_pad": "SAME_LOWER"}),
        ],
        "GlobalAveragePool": [({"x": r(2, 3, 4, 5)}, {}), ({"x": r(2, 3, 4)}, {})],
        "GlobalMaxPool": [({"x": r(2, 3, 4, 5)}, {})],
    }
