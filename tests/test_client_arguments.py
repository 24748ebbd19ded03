"""Arguments of the wrong type are refused by the client with a typed error naming them, before any call."""

from __future__ import annotations

import numpy as np
import pytest

import gradserve.client as gs


@pytest.fixture()
def graph() -> gs.Graph:
    g = gs.Graph(dtype="float64")
    x, y = g.inputs("x", "y")
    g.output(x * y, "out")
    return g


@pytest.mark.parametrize("call", ["run", "forward", "check_gradients"])
def test_feeds_that_are_not_a_mapping_raise_a_typed_error(client, graph, call):
    """feeds given as a set (the README once wrote `{...}`) raise ArgumentTypeError naming `feeds`."""
    with pytest.raises(gs.ArgumentTypeError, match=r"^feeds must be a mapping of names to arrays.*got set") as info:
        getattr(client, call)(graph, {...})
    assert info.value.argument == "feeds"
    assert isinstance(info.value, gs.InvalidArgument) and isinstance(info.value, TypeError)


def test_seed_grads_and_dout_that_are_not_mappings_are_named(client, graph):
    """seed_grads of Run and dout of Session.backward must be mappings too; the error names each."""
    feeds = {"x": np.float64(2), "y": np.float64(3)}
    with pytest.raises(gs.ArgumentTypeError, match="^seed_grads must be a mapping"):
        client.run(graph, feeds, seed_grads=[np.float64(1)])
    with client.forward(graph, feeds) as session, pytest.raises(gs.ArgumentTypeError, match="^dout must be"):
        session.backward(np.float64(1))


def test_a_session_stream_names_its_bad_arguments(client, graph):
    """A Session stream's forward, run and backward refuse non-mappings the same way, and the stream goes on."""
    feeds = {"x": np.float64(2), "y": np.float64(3)}
    with client.open_session(graph) as session:
        with pytest.raises(gs.ArgumentTypeError, match="^feeds must be a mapping"):
            session.forward({...})
        with pytest.raises(gs.ArgumentTypeError, match="^seed_grads must be a mapping"):
            session.run(feeds, seed_grads=[1.0])
        session.forward(feeds)
        with pytest.raises(gs.ArgumentTypeError, match="^dout must be a mapping"):
            session.backward(np.float64(1))
        assert session.backward()["x"] == 3.0
