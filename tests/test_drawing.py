"""Result.to_dot(): the computational graph drawn as the chapter draws it, values above, gradients beneath."""

import re
import shutil

import numpy as np
import pytest

import gradserve.client as gs
from gradserve.client.demo import apple_graph
from gradserve.client.drawing import GRAD_COLOR, format_grad, format_value, write_picture


def edge(dot: str, source: str, target: str) -> str:
    """The label of the edge source -> target in DOT text."""
    match = re.search(rf'"{re.escape(source)}" -> "{re.escape(target)}" \[label=(.*?)(, arrowhead=none)?\];$', dot,
                      re.MULTILINE)
    assert match, f"no edge {source} -> {target} in:\n{dot}"
    return match.group(1)


def forward_and_grad(label: str) -> tuple[str, str | None]:
    first = label[1:-1].split("<br/>")[0]
    forward = "" if first.startswith("<font") else first
    grad = re.search(rf'<font color="{GRAD_COLOR}">← (.*?)</font>', label)
    return forward, grad.group(1) if grad else None


def test_seed_apple_graph_shows_values_and_gradients(client):
    """The seed's apple graph: 200, 5, 1.1 forward to 1000 and 1100; 5.5, 220, 1000 flow back."""
    graph, feeds = apple_graph(orange=False)
    dot = client.run(graph, feeds, trace=True).to_dot("apples")
    assert dot.startswith("digraph") and 'label="apples"' in dot
    assert forward_and_grad(edge(dot, "input:apple", "node:mul_apple")) == ("200", "5.5")
    assert forward_and_grad(edge(dot, "input:apple_num", "node:mul_apple")) == ("5", "220")
    assert forward_and_grad(edge(dot, "input:tax", "node:mul_tax")) == ("1.1", "1000")
    assert forward_and_grad(edge(dot, "node:mul_apple", "node:mul_tax")) == ("1000", "1.1")
    assert forward_and_grad(edge(dot, "node:mul_tax", "output:price")) == ("1100", "1")
    assert dot.count('label="×"') == 2


def test_apple_orange_graph_has_the_books_numbers(client):
    """The book's apples and oranges: 715 out; 2.2, 110, 3.3, 165, 650 back; an Add node drawn as +."""
    graph, feeds = apple_graph(orange=True)
    dot = client.run(graph, feeds, trace=True).to_dot()
    assert forward_and_grad(edge(dot, "node:mul_tax", "output:price")) == ("715", "1")
    assert forward_and_grad(edge(dot, "input:orange", "node:mul_orange")) == ("150", "3.3")
    assert forward_and_grad(edge(dot, "input:orange_num", "node:mul_orange")) == ("3", "165")
    assert forward_and_grad(edge(dot, "input:tax", "node:mul_tax")) == ("1.1", "650")
    assert forward_and_grad(edge(dot, "node:add_apple_orange", "node:mul_tax")) == ("650", "1.1")
    assert 'label="+"' in dot


def test_without_trace_the_result_still_draws(client):
    """A Run without trace draws what it has: the outputs' values and the inputs' gradients."""
    graph, feeds = apple_graph(orange=False)
    dot = client.run(graph, feeds).to_dot()
    assert forward_and_grad(edge(dot, "input:apple", "node:mul_apple")) == ("", "5.5")
    assert forward_and_grad(edge(dot, "node:mul_tax", "output:price"))[0] == "1100"
    assert forward_and_grad(edge(dot, "node:mul_apple", "node:mul_tax")) == ("", None)


def test_a_value_used_twice_shows_the_summed_gradient_before_the_fork(client):
    """y = x * x: x's edge into the fork carries 3 and the sum of both branches' gradients, 6."""
    g = gs.Graph(dtype="float64")
    x = g.input("x")
    g.output(g.Mul(x, x, name="square"), "y")
    dot = client.run(g, {"x": np.float64(3.0)}, trace=True).to_dot()
    assert forward_and_grad(edge(dot, "input:x", "fork:x")) == ("3", "6")
    assert '"fork:x" -> "node:square";' in dot


def test_arrays_show_dtype_shape_and_gradient_norm(client, rng):
    """Large values are drawn by dtype and shape, their gradients by L2 norm; tiny ones by their numbers."""
    assert format_value(np.zeros((100, 784), np.float32)) == "float32 (100, 784)"
    assert format_value(np.array([1.0, 2.5])) == "[1, 2.5]"
    assert format_value(np.float64(220.00000000000003)) == "220"
    assert format_grad(np.full(100, 0.5)) == "‖g‖ 5"
    g = gs.Graph()
    x = g.input("x")
    g.output(g.Sum(g.Relu(x, name="relu")), "total")
    dot = client.run(g, {"x": rng.standard_normal((8, 3)).astype(np.float32)}, trace=True).to_dot()
    assert "float32 (8, 3)" in dot and "‖g‖" in dot
    assert 'label="relu\\nRelu"' in dot


def test_a_result_without_its_graph_cannot_draw(client):
    """A Run by graph id has no Graph to draw: the error says to pass the Graph."""
    graph, feeds = apple_graph(orange=False)
    result = client.run(client.register(graph), feeds, trace=True)
    with pytest.raises(ValueError, match="pass the Graph"):
        result.to_dot()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graphviz_renders_the_dot_to_svg(client, tmp_path):
    """write_picture turns the DOT into an SVG that holds the drawn numbers."""
    graph, feeds = apple_graph(orange=False)
    path = write_picture(client.run(graph, feeds, trace=True).to_dot(), tmp_path / "apple.svg")
    svg = path.read_text()
    assert "<svg" in svg and "1100" in svg and "5.5" in svg
