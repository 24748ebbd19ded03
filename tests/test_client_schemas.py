"""Layer schemas belong to a client: what one client listed never changes another client's graphs."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

import gradserve.client as gs
from gradserve.server.rpc.server import start_server
from gradserve.server.service.registry import load_registry


@pytest.fixture(scope="module")
def twin_target():
    """A server with the installed layers plus the test plugin's Twin (two outputs, a floats attribute)."""
    plugin = importlib.metadata.EntryPoint("two_output_layer", "two_output_layer", "gradserve")
    running = start_server("127.0.0.1:0", load_registry({}, [*importlib.metadata.entry_points(group="gradserve"),
                                                               plugin]))
    yield f"127.0.0.1:{running.port}"
    running.stop(None)


def twin_node(graph: gs.Graph):
    """What ``graph.Twin(x, scale=[3, 4])`` adds: the Values it returns, and the node's scale attribute."""
    out = graph.Twin(graph.input("x"), scale=[3, 4])
    node = graph.to_proto().nodes[-1]
    return out, node.attrs["scale"].WhichOneof("value")


def test_two_clients_of_different_servers_keep_their_own_schemas(target, twin_target):
    """A client of the Twin server and a client of a plain server, listed in either order, build each its own."""
    with gs.connect(twin_target) as twin_client, gs.connect(target) as plain_client:
        twin_client.list_layers()
        plain_client.list_layers()
        assert "Twin" in twin_client.schemas() and "Twin" not in plain_client.schemas()
        (lo, hi), kind = twin_node(twin_client.graph())
        assert (lo.name, hi.name, kind) == ("twin1:lo", "twin1:hi", "floats")
        single, kind = twin_node(plain_client.graph())
        assert isinstance(single, gs.Value) and kind == "ints"
        twin_client.list_layers()  # listed last: still no effect on the other client's graphs
        single, _ = twin_node(plain_client.graph())
        assert isinstance(single, gs.Value)


def test_an_offline_graph_means_what_it_was_built_with(twin_target):
    """A Graph built without a client is the same whichever server was listed: one output unless n_outputs= says."""
    with gs.connect(twin_target) as twin_client:
        twin_client.list_layers()
        g = gs.Graph()
        single, kind = twin_node(g)
        assert isinstance(single, gs.Value) and kind == "ints"
        lo, hi = g.Twin(g.input("y"), n_outputs=2)
        assert (lo.name, hi.name) == ("twin2:0", "twin2:1")


def test_a_client_graph_runs_with_its_server_schema(twin_target):
    """client.graph() gives Twin its two named outputs, and the server computes both and the summed gradient."""
    with gs.connect(twin_target) as client:
        g = client.graph("float64")
        lo, hi = g.Twin(g.input("x"), scale=[3, 4])
        g.output(lo, "lo")
        g.output(hi, "hi")
        res = client.run(g, {"x": np.array([1.0, 2.0])}, seed_grads={"lo": np.ones(2), "hi": np.ones(2)})
        assert res.outputs["lo"].tolist() == [3.0, 6.0] and res.outputs["hi"].tolist() == [4.0, 8.0]
        assert res.grads["x"].tolist() == [7.0, 7.0]


def test_client_graph_methods_carry_the_server_docs(twin_target):
    """The builder methods of client.graph() have the server's doc and signature; an offline Graph's do not."""
    with gs.connect(twin_target) as client:
        method = client.graph().Twin
        assert "lo = x * scale[0]" in method.__doc__ and "scale" in str(method.__signature__)
        assert "Twin" in dir(client.graph()) and "Twin" not in dir(gs.Graph())
        assert gs.Graph().Twin.__doc__ is None
