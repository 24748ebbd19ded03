"""Train a SimpleConvNet with this plugin's Snake and Maxout on scikit-learn's digits (1x8x8) through gradserve.

The server runs every forward and backward pass (Convolution and Pooling are
gradserve's built-ins, Snake and Maxout come from the gradserve-conv plugin
installed beside it); this script holds the parameters, sends batches with the
Python client and applies Adam, reusing gradserve's client-side
MultiLayerNet, fit() and optimizers.

    pip install 'gradserve[demo]' ./examples/gradserve-conv
    gradserve serve --port 50051 &
    python examples/gradserve-conv/train_simple_convnet.py --target 127.0.0.1:50051

It exits with status 1 when the test accuracy ends below --min-accuracy.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import gradserve.client as gs
from gradserve.client.demo import load_digits_split
from gradserve.client.network import MultiLayerNet, init_scale
from gradserve.client.optimizers import Adam
from gradserve.client.training import fit


class SimpleConvNet(MultiLayerNet):
    """Conv - Snake - Pool - Affine - Maxout - Affine - SoftmaxWithLoss: the book's SimpleConvNet, run remotely,
    with the plugin's layers where the book has Relu.

    The book's constructor (input_dim, conv_param, hidden_size, output_size,
    weight_init_std), with a 3x3 "same" convolution as defaults for 8x8 digits.
    Snake learns one frequency per filter (alpha1); Maxout takes the max of
    pairs of the first Affine's 2 * hidden_size units.
    """

    def __init__(self, input_dim=(1, 8, 8), conv_param=None, hidden_size: int = 100, output_size: int = 10,
                 weight_init_std="he", dtype="float32", seed: int | None = None, client: gs.Client | None = None):
        self.input_dim = tuple(input_dim)
        self.conv_param = {"filter_num": 30, "filter_size": 3, "pad": 1, "stride": 1, **(conv_param or {})}
        self.hidden_size, self.output_size = hidden_size, output_size
        self.dtype = np.dtype(dtype)
        self._setup(weight_init_std, seed, client)

    def _init_params(self, weight_init_std, rng: np.random.Generator) -> dict[str, np.ndarray]:
        channels, size, _ = self.input_dim
        p = self.conv_param
        conv_out = (size + 2 * p["pad"] - p["filter_size"]) // p["stride"] + 1
        pooled = p["filter_num"] * (conv_out // 2) ** 2
        shapes = {
            "W1": (p["filter_num"], channels, p["filter_size"], p["filter_size"]), "b1": (p["filter_num"],),
            "alpha1": (p["filter_num"],),
            "W2": (pooled, 2 * self.hidden_size), "b2": (2 * self.hidden_size,),
            "W3": (self.hidden_size, self.output_size), "b3": (self.output_size,),
        }
        params = {}
        for name, shape in shapes.items():
            if name.startswith("b"):
                params[name] = np.zeros(shape, dtype=self.dtype)
            elif name.startswith("alpha"):
                params[name] = np.ones(shape, dtype=self.dtype)
            else:
                scale = init_scale(weight_init_std, int(np.prod(shape[1:])) if len(shape) == 4 else shape[0])
                params[name] = (scale * rng.standard_normal(shape)).astype(self.dtype)
        return params

    def _build(self, training: bool) -> gs.Graph:
        g = gs.Graph(dtype=self.dtype.name)
        x = g.input("x", dtype=self.dtype, shape=[-1, *self.input_dim])
        v = {n: g.input(n, dtype=self.dtype, shape=a.shape) for n, a in self.params.items()}
        p = self.conv_param
        conv = g.Convolution(x, v["W1"], v["b1"], strides=[p["stride"]] * 2, pads=[p["pad"]] * 4, name="Conv1")
        h = g.Snake(conv, v["alpha1"], name="Snake1")
        h = g.Pooling(h, kernel_shape=[2, 2], strides=[2, 2], name="Pool1")
        h = g.Maxout(g.Affine(h, v["W2"], v["b2"], name="Affine1"), pieces=2, name="Maxout1")
        W3, b3 = v["W3"], v["b3"]
        scores = g.Affine(h, W3, b3, name="Affine2")
        g.output(scores, "scores")
        if training:
            g.output(g.SoftmaxWithLoss(scores, g.input("t"), name="SoftmaxWithLoss"), "loss")
        return g

    def __repr__(self) -> str:
        return f"SimpleConvNet({self.input_dim}, {self.conv_param}, {self.hidden_size}, {self.output_size})"


def load_digits(seed: int = 0):
    """The digits as (N, 1, 8, 8) images in [0, 1], with a stratified 80/20 split."""
    data = load_digits_split(seed)
    return data.x_train.reshape(-1, 1, 8, 8), data.t_train, data.x_test.reshape(-1, 1, 8, 8), data.t_test


def train(client: gs.Client, epochs: int = 10, batch_size: int = 100, lr: float = 0.003, seed: int = 0,
          log=print):
    """Train a SimpleConvNet through ``client``; return (net, History) with per-epoch loss and accuracies."""
    x_train, t_train, x_test, t_test = load_digits(seed)
    net = SimpleConvNet(seed=seed, client=client)

    def on_epoch(epoch, history):
        log(f"epoch {epoch:2d}/{epochs}  loss {history.loss[-1]:.4f}  train accuracy {history.train_acc[-1]:.4f}  "
            f"test accuracy {history.test_acc[-1]:.4f}")

    history = fit(net, Adam(lr), x_train, t_train, epochs=epochs, batch_size=batch_size, x_test=x_test,
                  t_test=t_test, seed=seed, on_epoch=on_epoch)
    return net, history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=os.environ.get("GRADSERVE_TARGET"),
                        help="HOST:PORT of a gradserve server with gradserve-conv installed "
                             "(default: GRADSERVE_TARGET, else an embedded server)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.003, help="Adam's learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-accuracy", type=float, default=0.95, help="exit 1 below this test accuracy")
    args = parser.parse_args(argv)
    with gs.connect(args.target) as client:
        layers = {layer.name: layer for layer in client.list_layers().layers}
        missing = [name for name in ("Snake", "Maxout") if name not in layers]
        if missing:
            print(f"the server at {client.target} has no {' or '.join(missing)} layer: install gradserve-conv "
                  f"beside gradserve there (pip install ./examples/gradserve-conv) and restart it", file=sys.stderr)
            return 2
        snake = layers["Snake"]
        print(f"server {client.target}: Snake and Maxout from plugin {snake.plugin!r} "
              f"({snake.distribution} {snake.version})")
        net, history = train(client, args.epochs, args.batch_size, args.lr, args.seed)
    print(f"{net}: test accuracy {history.test_acc[-1]:.4f} after {history.epochs} epochs "
          f"({history.steps} steps, {history.seconds:.1f}s)")
    return 0 if history.test_acc[-1] >= args.min_accuracy else 1


if __name__ == "__main__":
    sys.exit(main())
