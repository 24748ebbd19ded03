"""Conformance inputs for the elementwise, reductions and tensors layers (away from kinks and ties)."""

from __future__ import annotations

import numpy as np


def onnx_layer_cases(rng: np.random.Generator) -> dict[str, list[tuple[dict, dict]]]:
    """{op: [(inputs by name, attributes), ...]} for every layer of elementwise.py, reductions.py and tensors.py."""
    r = lambda *shape: rng.standard_normal(shape)  # noqa: E731
    pos = lambda *shape: rng.uniform(0.5, 2.0, shape)  # noqa: E731
    unit = lambda *shape: rng.uniform(-0.8, 0.8, shape)  # noqa: E731
    away = lambda *shape: rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.2, 2.0, size=shape)  # noqa: E731
    distinct = lambda *shape: rng.permutation(np.arange(int(np.prod(shape)))).reshape(shape) * 0.1 - 1  # noqa: E731
    ints = lambda *shape: rng.integers(0, 8, size=shape)  # noqa: E731
    bools = lambda *shape: rng.integers(0, 2, size=shape).astype(bool)  # noqa: E731
    x = {"x": r(3, 4)}
    cases = {name: [(x, {})] for name in ("Sin", "Cos", "Atan", "Sinh", "Cosh", "Asinh", "Softplus", "Mish",
                                           "Swish", "Celu", "Sign", "Floor", "Ceil", "Round")}
    cases.update({
        "Abs": [({"x": away(3, 4)}, {}), ({"x": ints(3)}, {})],
        "Sqrt": [({"x": pos(3, 4)}, {})],
        "Reciprocal": [({"x": pos(3, 4)}, {})],
        "Tan": [({"x": unit(3, 4)}, {})],
        "Asin": [({"x": unit(3, 4)}, {})],
        "Acos": [({"x": unit(3, 4)}, {})],
        "Acosh": [({"x": pos(3, 4) + 1}, {})],
        "Atanh": [({"x": unit(3, 4)}, {})],
        "Softsign": [({"x": away(3, 4)}, {})],
        "HardSigmoid": [({"x": r(3, 4)}, {"alpha": 0.3, "beta": 0.4})],
        "HardSwish": [({"x": away(3, 4) * 2}, {})],
        "Elu": [({"x": away(3, 4)}, {"alpha": 0.7})],
        "Selu": [({"x": away(3, 4)}, {})],
        "LeakyRelu": [({"x": away(3, 4)}, {"alpha": 0.1})],
        "ThresholdedRelu": [({"x": away(3, 4) + 0.05}, {"alpha": 0.0})],
        "Shrink": [({"x": away(3, 4)}, {"bias": 0.1, "lambd": 0.1})],
        "Pow": [({"x": pos(3, 4), "y": r(4)}, {}), ({"x": r(3, 4), "y": np.array(2.0)}, {})],
        "Mod": [({"x": pos(3, 4) + 0.05, "y": np.full(4, 0.3)}, {"fmod": True}), ({"x": ints(4) - 3, "y": ints(4) + 1}, {})],
        "Max": [({"x": distinct(3, 4), "y": distinct(4) + 0.05}, {})],
        "Min": [({"x": distinct(3, 4), "y": distinct(1, 4) + 0.05}, {})],
        "PRelu": [({"x": away(3, 4), "slope": r(4)}, {})],
        "Clip": [({"x": distinct(3, 4), "min": np.array(-0.55), "max": np.array(0.25)}, {}),
                 ({"x": ints(3, 4), "min": np.array(2), "max": np.array(5)}, {})],
        "Where": [({"condition": bools(3, 4), "x": r(3, 4), "y": r(4)}, {})],
        "Equal": [({"x": ints(3, 4), "y": ints(4)}, {})],
        "Less": [({"x": r(3, 4), "y": r(4)}, {})],
        "LessOrEqual": [({"x": r(3, 4), "y": r(4)}, {})],
        "Greater": [({"x": r(3, 4), "y": r(4)}, {})],
        "GreaterOrEqual": [({"x": r(3, 4), "y": r(4)}, {})],
        "Not": [({"x": bools(3, 4)}, {})],
        "And": [({"x": bools(3, 4), "y": bools(4)}, {})],
        "Or": [({"x": bools(3, 4), "y": bools(4)}, {})],
        "Xor": [({"x": bools(3, 4), "y": bools(4)}, {})],
        "IsNaN": [({"x": r(3, 4)}, {})],
        "IsInf": [({"x": r(3, 4)}, {"detect_negative": False})],
        "BitwiseNot": [({"x": ints(3, 4)}, {})],
        "BitwiseAnd": [({"x": ints(3, 4), "y": ints(4)}, {})],
        "BitwiseOr": [({"x": ints(3, 4), "y": ints(4)}, {})],
        "BitwiseXor": [({"x": ints(3, 4), "y": ints(4)}, {})],
        "BitShift": [({"x": ints(3, 4).astype(np.uint8), "y": np.array([1, 2, 0, 3], dtype=np.uint8)},
                      {"direction": "LEFT"})],
        "ReduceMax": [({"x": distinct(2, 3, 4)}, {"axes": [1]}), ({"x": distinct(3, 4)}, {"keepdims": False})],
        "ReduceMin": [({"x": distinct(2, 3, 4)}, {"axes": [0, -1], "keepdims": False})],
        "ReduceProd": [({"x": pos(2, 3, 4)}, {"axes": [1]}), ({"x": r(3, 4)}, {"keepdims": False})],
        "ReduceSumSquare": [({"x": r(2, 3, 4)}, {"axes": [2]})],
        "ReduceL1": [({"x": away(2, 3, 4)}, {"axes": [0]})],
        "ReduceL2": [({"x": r(2, 3, 4)}, {"axes": [1, 2], "keepdims": False})],
        "ReduceLogSum": [({"x": pos(2, 3, 4)}, {"axes": [1]})],
        "ReduceLogSumExp": [({"x": r(2, 3, 4)}, {"axes": [-1]}), ({"x": r(3, 4)}, {})],
        "ArgMax": [({"x": r(3, 4)}, {"axis": 1}), ({"x": r(3, 4)}, {"keepdims": False, "select_last_index": True})],
        "ArgMin": [({"x": r(3, 4)}, {"axis": -1, "keepdims": False})],
        "Concat": [({"x": r(2, 3), "y": r(2, 4)}, {"axis": 1}), ({"x": r(1, 3), "y": r(2, 3)}, {})],
        "Slice": [({"x": r(4, 5)}, {"starts": [1, -1], "ends": [100, 0], "axes": [0, 1], "steps": [2, -2]}),
                  ({"x": r(3, 4)}, {"starts": [1], "ends": [3]})],
        "Gather": [({"data": r(5, 3), "indices": np.array([[0, 4], [4, -1]])}, {}),
                   ({"data": r(2, 5, 3), "indices": np.array([1, 0, 1])}, {"axis": 1})],
        "GatherElements": [({"data": r(3, 4), "indices": np.array([[0, 0], [2, -1], [1, 1]])}, {"axis": 1})],
        "Expand": [({"x": r(3, 1)}, {"shape": [2, 1, 4]})],
        "Pad": [({"x": r(3, 4)}, {"pads": [1, -1, 2, 2], "value": 0.5}),
                ({"x": r(3, 4)}, {"pads": [2, 1, 0, 3], "mode": "reflect"}),
                ({"x": r(3, 4)}, {"pads": [1, 2, 3, 0], "mode": "edge"}),
                ({"x": r(3, 4)}, {"pads": [1, 2, 3, 4], "mode": "wrap"})],
        "Squeeze": [({"x": r(3, 1, 4, 1)}, {"axes": [-1]}), ({"x": r(1, 3, 1)}, {})],
        "Unsqueeze": [({"x": r(3, 4)}, {"axes": [0, -1]})],
        "Tile": [({"x": r(2, 3)}, {"repeats": [2, 3]})],
        "Cast": [({"x": r(3, 4)}, {"to": "int64"}),  # float to float changes precision, which the kit refuses
                 ({"x": ints(3)}, {"to": "float64"})],
        "Shape": [({"x": r(2, 3, 4)}, {}), ({"x": r(2, 3, 4)}, {"start": 1, "end": -1})],
        "Size": [({"x": r(2, 3)}, {})],
        "Range": [({"start": np.array(1.0), "limit": np.array(4.2), "delta": np.array(0.5)}, {}),
                  ({"start": np.array(10), "limit": np.array(2), "delta": np.array(-3)}, {})],
        "ConstantOfShape": [({"shape": np.array([2, 3])}, {"value": 1.5, "dtype": "float64"})],
        "EyeLike": [({"x": r(3, 4)}, {"k": 1})],
        "DepthToSpace": [({"x": r(1, 8, 2, 3)}, {"blocksize": 2}), ({"x": r(2, 4, 2, 2)}, {"blocksize": 2, "mode": "CRD"})],
        "SpaceToDepth": [({"x": r(1, 2, 4, 6)}, {"blocksize": 2}), ({"x": r(2, 1, 2, 4)}, {"blocksize": 2, "mode": "CRD"})],
        "Trilu": [({"x": r(2, 3, 4)}, {}), ({"x": r(4, 3)}, {"upper": False, "k": -1})],
        "CumSum": [({"x": r(3, 4)}, {"axis": 1}), ({"x": r(3, 4)}, {"exclusive": True, "reverse": True})],
        "TopK": [({"x": distinct(3, 5)}, {"k": 2}), ({"x": distinct(4, 3)}, {"k": 3, "axis": 0, "largest": False})],
        "Hardmax": [({"x": distinct(3, 4)}, {}), ({"x": distinct(3, 4)}, {"axis": 0})],
        "OneHot": [({"indices": np.array([0, 2, -1]), "depth": np.array(4), "values": np.array([0.5, 2.0])},
                    {"axis": 0})],
    })
    return cases
