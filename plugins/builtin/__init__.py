"""gradserve's built-in layers, registered through our own entry point like any plugin."""

from gradserve.plugins import hookimpl
from gradserve.plugins.builtin.activations import Exp, Log, Relu, Sigmoid, Softmax, Tanh
from gradserve.plugins.builtin.arithmetic import Add, Div, MatMul, Mul, Neg, Sub
from gradserve.plugins.builtin.network import Affine, BatchNormalization, Dropout, SoftmaxWithLoss
from gradserve.plugins.builtin.onnx_ops import Flatten, Gemm, Transpose
from gradserve.plugins.builtin.shaping import Constant, Identity, Mean, Reshape, Sum

LAYERS = (
    Mul, Add, Sub, Div, Neg, MatMul,
    Relu, Sigmoid, Tanh, Exp, Log, Softmax,
    Sum, Mean, Reshape, Identity, Constant,
    Affine, SoftmaxWithLoss, Dropout, BatchNormalization,
    Gemm, Transpose, Flatten,
)


@hookimpl
def register_layers(register):
    for layer in LAYERS:
        register(layer)
