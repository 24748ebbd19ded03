"""`gradserve demo`: the chapter's apples, a gradient check and a network trained on digits, with pictures."""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

import gradserve.client as gs
from gradserve.client import book
from gradserve.client.drawing import write_picture
from gradserve.client.network import TwoLayerNet
from gradserve.client.optimizers import make_optimizer
from gradserve.client.training import History, fit

#: The one line that moves the book's layers onto the server.
BOOK_IMPORT = "from gradserve.client.book import MulLayer, AddLayer\n"

#: The seed chapter's code blocks, verbatim; run in one namespace as a reader would run them in order.
SEED_FORWARD = """\
apple = 200
apple_num = 5
tax = 1.1

# 계층들
mul_apple_layer = MulLayer()
mul_tax_layer = MulLayer()

# 순전파
apple_price = mul_apple_layer.forward(apple, apple_num)
price = mul_tax_layer.forward(apple_price, tax)
print(price) # 1100
"""
SEED_BACKWARD = """\
dprice=1

dapple_price, dtax = mul_tax_layer.backward(dprice)
dapple, dapple_num = mul_apple_layer.backward(dapple_price)
print(dapple, dapple_num, dtax) # 5.5 220 1000
"""
#: The book's own numbers for the same graph, and its apples-and-oranges graph.
BOOK_APPLE = """\
apple, apple_num, tax = 100, 2, 1.1
mul_apple_layer, mul_tax_layer = MulLayer(), MulLayer()

apple_price = mul_apple_layer.forward(apple, apple_num)
price = mul_tax_layer.forward(apple_price, tax)

dapple_price, dtax = mul_tax_layer.backward(1)
dapple, dapple_num = mul_apple_layer.backward(dapple_price)
print(price, dapple, dapple_num, dtax) # 220 2.2 110 200
"""
BOOK_APPLE_ORANGE = """\
apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
mul_apple_layer, mul_orange_layer = MulLayer(), MulLayer()
add_apple_orange_layer, mul_tax_layer = AddLayer(), MulLayer()

apple_price = mul_apple_layer.forward(apple, apple_num)
orange_price = mul_orange_layer.forward(orange, orange_num)
all_price = add_apple_orange_layer.forward(apple_price, orange_price)
price = mul_tax_layer.forward(all_price, tax)

dall_price, dtax = mul_tax_layer.backward(1)
dapple_price, dorange_price = add_apple_orange_layer.backward(dall_price)
dorange, dorange_num = mul_orange_layer.backward(dorange_price)
dapple, dapple_num = mul_apple_layer.backward(dapple_price)
print(price, dapple, dapple_num, dtax) # 715 2.2 110 650
print(dorange, dorange_num) # 3.3 165
"""

#: (title, code blocks, the values the chapter prints); the names are the code's own variables.
EXAMPLES = [
    ("The seed chapter's apples", [SEED_FORWARD, SEED_BACKWARD],
     {"price": 1100, "dapple": 5.5, "dapple_num": 220, "dtax": 1000}),
    ("The book's apples", [BOOK_APPLE], {"price": 220, "dapple": 2.2, "dapple_num": 110, "dtax": 200}),
    ("The book's apples and oranges", [BOOK_APPLE_ORANGE],
     {"price": 715, "dapple": 2.2, "dapple_num": 110, "dorange": 3.3, "dorange_num": 165, "dtax": 650}),
]

#: Every mean |numerical - backprop| of the float64 gradient check stays under this.
GRADCHECK_TOLERANCE = 1e-6


@dataclass
class DemoOptions:
    """The demo's settings; each is a `gradserve demo --flag`. The defaults reach >= 95% test accuracy."""

    target: str | None = None
    out: str = "gradserve-out"
    epochs: int = 20
    hidden: int = 100
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 0.002
    seed: int = 0

    @classmethod
    def from_args(cls, args) -> "DemoOptions":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


#: What the demo needs beyond gradserve itself: the `gradserve[demo]` extra.
DEMO_EXTRAS = ("rich", "sklearn", "matplotlib")


def missing_extras() -> list[str]:
    return [name for name in DEMO_EXTRAS if importlib.util.find_spec(name) is None]


def run_demo(options: DemoOptions, console=None, connect_kwargs: dict | None = None) -> int:
    """Run the whole demo; 0 when every check passed, 1 when one failed, 2 without the demo extra."""
    missing = missing_extras()
    if missing:
        print(f"gradserve demo needs {', '.join(missing)}: pip install 'gradserve[demo]'", file=sys.stderr)
        return 2
    from rich.console import Console

    console = console or Console()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with gs.connect(options.target, **(connect_kwargs or {})) as client:
        where = options.target or f"an embedded server at {client.target}"
        console.rule("[bold]gradserve demo")
        console.print(f"Every layer below runs on {where}.\n")
        book.set_client(client)
        try:
            ok = run_examples(console)
            files = draw_apples(client, out)
            data = load_digits_split(options.seed)
            ok = run_gradient_check(client, data, options, console) and ok
            net, history = train(client, data, options, console)
            files += draw_training(net, data, history, out)
        except gs.GradserveError as error:  # the server's message says what to fix; a traceback would not
            console.print(f"[red]the call to {client.target} failed: {error}")
            return 1
        finally:
            book.set_client(None)
    console.rule("[bold]Done")
    console.print(f"final test accuracy: [bold]{history.test_acc[-1]:.4f}[/] "
                  f"({history.epochs} epochs, {history.steps} steps on one Train stream, "
                  f"{history.seconds:.1f} s of training; "
                  f"{time.perf_counter() - started:.1f} s in all)")
    console.print(f"pictures written to {out.resolve()}:")
    for path in files:
        console.print(f"  {path}")
    if not any(path.suffix == ".svg" for path in files):
        console.print("(install Graphviz for SVG drawings of the graphs: apt-get install graphviz)")
    return 0 if ok else 1


# -- the chapter's apples --

def run_examples(console) -> bool:
    """Run each example's code with the book's layers served remotely; check the numbers the chapter prints."""
    from rich.syntax import Syntax

    ok = True
    for title, blocks, expected in EXAMPLES:
        console.rule(title)
        # exec, because the point is the chapter's own code, unchanged but for the import, shown as it runs.
        namespace: dict = {}
        exec(BOOK_IMPORT, namespace)
        for index, code in enumerate(blocks):
            console.print(Syntax((BOOK_IMPORT if index == 0 else "") + code, "python", theme="ansi_dark"))
            exec(compile(code, f"<{title}>", "exec"), namespace)
        got = {name: float(namespace[name]) for name in expected}
        wrong = {n: v for n, v in got.items() if not np.isclose(v, expected[n], rtol=1e-9)}
        summary = ", ".join(f"{name} {value:g}" for name, value in got.items())
        if wrong:
            ok = False
            console.print(f"[red]✗ {summary}; the chapter says {expected}")
        else:
            console.print(f"[green]✓[/] {summary}  (as the chapter prints)\n")
    return ok


def apple_graph(orange: bool) -> tuple[gs.Graph, dict[str, np.ndarray]]:
    """The chapter's figure as a Graph: the seed's apples, or the book's apples and oranges; and its feeds."""
    g = gs.Graph(dtype="float64")
    if orange:
        apple, apple_num, orange_, orange_num, tax = g.inputs("apple", "apple_num", "orange", "orange_num", "tax")
        all_price = g.Add(g.Mul(apple, apple_num, name="mul_apple"), g.Mul(orange_, orange_num, name="mul_orange"),
                          name="add_apple_orange")
        feeds = {"apple": 100, "apple_num": 2, "orange": 150, "orange_num": 3, "tax": 1.1}
    else:
        apple, apple_num, tax = g.inputs("apple", "apple_num", "tax")
        all_price = g.Mul(apple, apple_num, name="mul_apple")
        feeds = {"apple": 200, "apple_num": 5, "tax": 1.1}
    g.output(g.Mul(all_price, tax, name="mul_tax"), "price")
    return g, {name: np.float64(value) for name, value in feeds.items()}


def draw_apples(client, out: Path) -> list[Path]:
    files = []
    for stem, orange, title in (("apple", False, "the seed's apples: forward values, gradients in red"),
                                ("apple_orange", True, "the book's apples and oranges")):
        graph, feeds = apple_graph(orange)
        files += write_drawing(client.run(graph, feeds, trace=True).to_dot(title), out / stem)
    return files


def write_drawing(dot_source: str, stem: Path) -> list[Path]:
    """The .dot file always; an .svg beside it when Graphviz is installed."""
    dot_path = stem.with_suffix(".dot")
    dot_path.write_text(dot_source, encoding="utf-8")
    svg = write_picture(dot_source, stem.with_suffix(".svg"))
    return [dot_path] + ([svg] if svg else [])


# -- the network --

@dataclass
class Digits:
    x_train: np.ndarray
    t_train: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray


def load_digits_split(seed: int = 0, test_size: float = 0.2) -> Digits:
    """scikit-learn's bundled 8x8 digits (no download): pixels scaled to [0, 1], a stratified held-out split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, t = load_digits(return_X_y=True)
    x = x / 16.0  # pixel values are 0..16; the book's normalize=True puts them in [0, 1] too
    x_train, x_test, t_train, t_test = train_test_split(x, t, test_size=test_size, random_state=seed, stratify=t)
    return Digits(x_train, t_train.astype(np.int64), x_test, t_test.astype(np.int64))


def run_gradient_check(client, data: Digits, options: DemoOptions, console) -> bool:
    """The chapter's gradient_check: numerical vs backprop gradients of a float64 TwoLayerNet on 3 samples."""
    from rich.table import Table

    console.rule("Gradient check (CheckGradients, float64, 3 samples)")
    net = TwoLayerNet(64, options.hidden, 10, dtype="float64", seed=options.seed, client=client)
    checks = net.gradient_check(data.x_train[:3], data.t_train[:3])
    table = Table("parameter", "shape", "mean |numerical - backprop|", "max", "")
    ok = True
    for name, check in checks.items():
        good = check.mean_abs_diff < GRADCHECK_TOLERANCE
        ok = ok and good
        table.add_row(name, str(net.params[name].shape), f"{check.mean_abs_diff:.3e}", f"{check.max_abs_diff:.3e}",
                      "[green]✓" if good else "[red]✗")
    console.print(table)
    console.print(f"every difference under {GRADCHECK_TOLERANCE:g}: {'yes' if ok else 'NO'}\n")
    return ok


def train(client, data: Digits, options: DemoOptions, console) -> tuple[TwoLayerNet, History]:
    """Train TwoLayerNet(64, hidden, 10) on the digits with a live progress bar, the parameters and the
    optimizer's state on the server (one Train stream; each step sends a batch)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console.rule(f"Training TwoLayerNet(64, {options.hidden}, 10) on scikit-learn's digits")
    net = TwoLayerNet(64, options.hidden, 10, weight_init_std="he", dtype="float32", seed=options.seed,
                      client=client)
    optimizer = make_optimizer(options.optimizer, lr=options.lr)
    console.print(f"{len(data.x_train)} training and {len(data.x_test)} held-out images, batches of "
                  f"{options.batch_size}, {optimizer}; the parameters and the optimizer's state stay on the server "
                  "(one Train stream): each step sends the batch and gets its loss back.")
    steps_per_epoch = -(-len(data.x_train) // options.batch_size)
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]:>3}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("train {task.fields[train]}"),
        TextColumn("test {task.fields[test]}"), TimeElapsedColumn(), console=console,
    )
    with progress:
        task = progress.add_task("train", total=options.epochs * steps_per_epoch, epoch=1, epochs=options.epochs,
                                 loss=float("nan"), train="-", test="-")

        def on_step(epoch, step, loss):
            progress.update(task, advance=1, epoch=epoch, loss=loss)

        def on_epoch(epoch, history):
            train_acc, test_acc = f"{history.train_acc[-1]:.3f}", f"{history.test_acc[-1]:.3f}"
            progress.update(task, loss=history.loss[-1], train=train_acc, test=test_acc)
            progress.console.print(f"epoch {epoch:>3}/{options.epochs}  loss {history.loss[-1]:.4f}  "
                                   f"train accuracy {train_acc}  test accuracy {test_acc}")

        history = fit(net, optimizer, data.x_train, data.t_train, epochs=options.epochs,
                      batch_size=options.batch_size, x_test=data.x_test, t_test=data.t_test, seed=options.seed,
                      on_step=on_step, on_epoch=on_epoch)
    return net, history


def draw_training(net: TwoLayerNet, data: Digits, history: History, out: Path) -> list[Path]:
    """The training graph of one batch (traced) and the loss and accuracy curves."""
    result = net.trace(data.x_train[:8], data.t_train[:8])
    title = f"{net!r}: one training Run on 8 images (values, gradients in red)"
    files = write_drawing(result.to_dot(title), out / "training_graph")
    files.append(plot_history(history, out / "training.png"))
    return files


def plot_history(history: History, path: Path) -> Path:
    """Loss and accuracy per epoch as a PNG (matplotlib's Agg backend: no display needed)."""
    from matplotlib.figure import Figure  # a bare Figure draws with Agg and never touches pyplot's global state

    epochs = np.arange(1, history.epochs + 1)
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, acc_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, history.loss, marker="o", color="#1f77b4")
    loss_axes.set(title="training loss", xlabel="epoch", ylabel="mean cross-entropy")
    acc_axes.plot(epochs, history.train_acc, marker="o", label="train")
    acc_axes.plot(epochs, history.test_acc, marker="s", label="test (held out)")
    acc_axes.axhline(0.95, color="grey", linestyle=":", linewidth=1)
    acc_axes.set(title="accuracy", xlabel="epoch", ylabel="accuracy",
                 ylim=(min(0.5, *history.test_acc, *history.train_acc), 1.0))
    acc_axes.legend(loc="lower right")
    for axes in (loss_axes, acc_axes):
        axes.grid(alpha=0.3)
    figure.suptitle("TwoLayerNet on scikit-learn's digits, trained through gradserve")
    figure.savefig(path, dpi=110)
    return path
