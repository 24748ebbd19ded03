"""Layers ONNX models use that the book has no layer for: Gemm, Transpose, Flatten."""

import numpy as np

import math

from gradserve.plugins import Attr, Layer, TensorType, probe_dtypes, reduce_to_shape


class Gemm(Layer):
    """General matrix product alpha * A' @ B' + beta * C, with A' and B' optionally transposed (ONNX Gemm)."""

    inputs = ("A", "B", "C")
    attributes = {
        "alpha": Attr("float", 1.0, "scales A' @ B'"),
        "beta": Attr("float", 1.0, "scales C"),
        "transA": Attr("bool", False, "use A transposed"),
        "transB": Attr("bool", False, "use B transposed"),
    }

    def forward(self, A, B, C):
        if A.ndim != 2 or B.ndim != 2:
            raise ValueError(f"Gemm takes 2-D A and B, got shapes {A.shape} and {B.shape}")
        self.a = A.T if self.transA else A
        self.b = B.T if self.transB else B
        self.c_shape = C.shape
        shape = (self.a.shape[0], self.b.shape[1])
        if np.broadcast_shapes(C.shape, shape) != shape:
            raise ValueError(f"C of shape {C.shape} does not broadcast to the product's shape {shape}")
        # Python-float scalars keep the operands' dtype (float32 stays float32).
        return self.alpha * (self.a @ self.b) + self.beta * C

    def output_types(self, A, B, C):
        if len(A.shape) != 2 or len(B.shape) != 2:
            raise ValueError(f"Gemm takes 2-D A and B, got shapes {A.shape} and {B.shape}")
        a = A.shape[::-1] if self.transA else A.shape
        b = B.shape[::-1] if self.transB else B.shape
        if a[1] != b[0]:
            raise ValueError(f"Gemm: A' of shape {a} and B' of shape {b} do not agree")
        shape = (a[0], b[1])
        if np.broadcast_shapes(C.shape, shape) != shape:
            raise ValueError(f"C of shape {C.shape} does not broadcast to the product's shape {shape}")
        return (TensorType(shape, probe_dtypes(self, A, B, C)[0]),)

    def backward(self, dout):
        needs = self.needs_input_grad or (True, True, True)
        da = self.alpha * (dout @ self.b.T) if needs[0] else None
        db = self.alpha * (self.a.T @ dout) if needs[1] else None
        dc = reduce_to_shape(self.beta * dout, self.c_shape) if needs[2] else None
        return (da.T if self.transA and da is not None else da), (db.T if self.transB and db is not None else db), dc


class Transpose(Layer):
    """x with its axes permuted by perm (reversed when perm is unset), as numpy.transpose."""

    inputs = ("x",)
    attributes = {"perm": Attr("ints", None, "the new order of the axes; unset reverses them")}

    def forward(self, x):
        self.perm = tuple(range(x.ndim))[::-1] if self.perm is None else self.perm
        if len(self.perm) != x.ndim or sorted(a % x.ndim for a in self.perm) != list(range(x.ndim)):
            raise ValueError(f"perm {list(self.perm)} is not a permutation of the {x.ndim} axes of x")
        return np.transpose(x, self.perm)

    def output_types(self, x):
        ndim = len(x.shape)
        perm = tuple(range(ndim))[::-1] if self.perm is None else self.perm
        if len(perm) != ndim or sorted(a % ndim for a in perm) != list(range(ndim)):
            raise ValueError(f"perm {list(perm)} is not a permutation of the {ndim} axes of x")
        return (TensorType(tuple(x.shape[a] for a in perm), x.dtype),)

    def backward(self, dout):
        return (np.transpose(dout, np.argsort([a % dout.ndim for a in self.perm])),)


class Flatten(Layer):
    """x as a matrix: the axes before `axis` become rows, the rest columns (ONNX Flatten)."""

    inputs = ("x",)
    attributes = {"axis": Attr("int", 1, "the first axis of the columns; negative counts from the end")}

    def output_types(self, x):
        axis = self._axis(len(x.shape))
        return (TensorType((math.prod(x.shape[:axis]), math.prod(x.shape[axis:])), x.dtype),)

    def _axis(self, ndim: int) -> int:
        axis = self.axis + ndim if self.axis < 0 else self.axis
        if not 0 <= axis <= ndim:
            raise ValueError(f"axis {self.axis} is out of range for x of rank {ndim}")
        return axis

    def forward(self, x):
        axis = self._axis(x.ndim)
        self.x_shape = x.shape
        rows = int(np.prod(x.shape[:axis], dtype=np.int64))
        cols = int(np.prod(x.shape[axis:], dtype=np.int64))
        return x.reshape(rows, cols)

    def backward(self, dout):
        return (dout.reshape(self.x_shape),)

LAYERS = (Gemm, Transpose, Flatten)
