"""Security: TLS, mutual TLS, bearer tokens (health exempt), and no request that can run code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import gradserve.client as gs
from gradserve.server.rpc.server import ServerOptions, start_server
from gradserve.server.cli import parse_args, server_options_from_args
from pki import Authority
from serve_process import ServeProcess, gradserve_command

TOKEN = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def pki():
    ca, rogue = Authority("gradserve test CA"), Authority("rogue CA")
    return {"ca": ca, "server": ca.issue("localhost", server=True), "client": ca.issue("client", server=False),
            "rogue": rogue, "rogue_client": rogue.issue("intruder", server=False)}


@pytest.fixture(scope="module")
def tls_target(registry, pki):
    running = start_server("127.0.0.1:0", registry, ServerOptions(tls_cert=pki["server"].cert,
                                                                  tls_key=pki["server"].key))
    yield f"127.0.0.1:{running.port}"
    running.stop(None)


@pytest.fixture(scope="module")
def mtls_target(registry, pki):
    running = start_server("127.0.0.1:0", registry, ServerOptions(
        tls_cert=pki["server"].cert, tls_key=pki["server"].key, tls_client_ca=pki["ca"].cert))
    yield f"127.0.0.1:{running.port}"
    running.stop(None)


@pytest.fixture(scope="module")
def token_target(registry):
    running = start_server("127.0.0.1:0", registry, ServerOptions(tokens=(TOKEN,)))
    yield f"127.0.0.1:{running.port}"
    running.stop(None)


def price_graph() -> gs.Graph:
    g = gs.Graph(dtype="float64")
    apple, num = g.inputs("apple", "num")
    g.output(apple * num, "price")
    return g


def assert_price_works(client: gs.Client) -> None:
    res = client.run(price_graph(), {"apple": np.float64(100), "num": np.float64(2)})
    assert res.outputs["price"] == 200.0
    assert res.grads["apple"] == 2.0


# -- TLS and mutual TLS --

def test_tls_client_runs_a_graph(tls_target, pki):
    """A client that trusts the server's CA runs a graph over TLS."""
    with gs.connect(tls_target, root_certificates=pki["ca"].cert, timeout=30) as client:
        assert_price_works(client)


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_target):
    """A plaintext client gets UNAVAILABLE from a TLS server: nothing is served in clear text."""
    with gs.connect(tls_target, timeout=10) as client, pytest.raises(gs.Unavailable):
        client.list_layers()


def test_client_refuses_a_server_its_roots_do_not_trust(tls_target, pki):
    """The client verifies the server: a certificate from a CA it does not trust fails the handshake."""
    with gs.connect(tls_target, root_certificates=pki["rogue"].cert, timeout=10) as client:
        with pytest.raises(gs.Unavailable):
            client.list_layers()


def test_mutual_tls_serves_a_client_certificate_from_its_ca(mtls_target, pki):
    """With --tls-client-ca, a client presenting a certificate that CA signed is served."""
    with gs.connect(mtls_target, root_certificates=pki["ca"].cert, certificate_chain=pki["client"].cert,
                    private_key=pki["client"].key, timeout=30) as client:
        assert_price_works(client)


def test_mutual_tls_refuses_a_client_without_certificate(mtls_target, pki):
    """With --tls-client-ca, a TLS client without a certificate is refused."""
    with gs.connect(mtls_target, root_certificates=pki["ca"].cert, timeout=10) as client:
        with pytest.raises(gs.Unavailable):
            client.list_layers()


def test_mutual_tls_refuses_a_certificate_from_another_ca(mtls_target, pki):
    """With --tls-client-ca, a client certificate signed by another CA is refused."""
    with gs.connect(mtls_target, root_certificates=pki["ca"].cert, certificate_chain=pki["rogue_client"].cert,
                    private_key=pki["rogue_client"].key, timeout=10) as client:
        with pytest.raises(gs.Unavailable):
            client.list_layers()


def test_serve_flags_read_the_certificate_files(registry, pki, tmp_path):
    """`serve --tls-cert --tls-key --tls-client-ca` files make a mutual-TLS server."""
    files = {}
    for name, data in (("cert", pki["server"].cert), ("key", pki["server"].key), ("ca", pki["ca"].cert)):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(data)
    args = parse_args(["serve", "--port", "0", "--tls-cert", str(files["cert"]),
                       "--tls-key", str(files["key"]), "--tls-client-ca", str(files["ca"])])
    running = start_server("127.0.0.1:0", registry, server_options_from_args(args))
    try:
        target = f"127.0.0.1:{running.port}"
        with gs.connect(target, root_certificates=files["ca"], timeout=10) as client:
            with pytest.raises(gs.Unavailable):
                client.list_layers()
        with gs.connect(target, root_certificates=files["ca"], certificate_chain=pki["client"].cert,
                        private_key=pki["client"].key, timeout=30) as client:
            assert_price_works(client)
    finally:
        running.stop(None)


def test_health_command_speaks_tls(tls_target, pki, tmp_path):
    """`gradserve health --tls-ca` checks a TLS server; without it the check fails."""
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki["ca"].cert)
    command = [*gradserve_command(), "health", "--target", tls_target, "--timeout", "10"]
    assert subprocess.run([*command, "--tls-ca", str(ca)], capture_output=True).returncode == 0
    assert subprocess.run(command, capture_output=True).returncode == 1


# -- bearer tokens --

def test_missing_token_is_unauthenticated(token_target):
    """A call without a token is refused with UNAUTHENTICATED saying how to send one."""
    with gs.connect(token_target, timeout=10) as client, pytest.raises(gs.Unauthenticated) as err:
        client.list_layers()
    assert "missing bearer token" in err.value.message
    assert "authorization: Bearer" in err.value.message


def test_wrong_token_is_unauthenticated(token_target):
    """A wrong token is refused with UNAUTHENTICATED, and the message does not echo it."""
    with gs.connect(token_target, token="guess", timeout=10) as client, pytest.raises(gs.Unauthenticated) as err:
        client.run(price_graph(), {"apple": np.float64(1), "num": np.float64(1)})
    assert "invalid bearer token" in err.value.message
    assert "guess" not in err.value.message


def test_right_token_is_served(token_target):
    """A client with the token is served."""
    with gs.connect(token_target, token=TOKEN, timeout=30) as client:
        assert_price_works(client)


def test_health_answers_without_token(token_target):
    """Health checks need no token: orchestrators' probes carry none."""
    with grpc.insecure_channel(token_target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_requires_the_token(token_target):
    """Reflection is part of the API surface: it needs the token like every other service but health."""
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(token_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.ServerReflectionInfo(iter([request]), timeout=10))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answers = list(stub.ServerReflectionInfo(iter([request]), timeout=10,
                                                 metadata=(("authorization", f"Bearer {TOKEN}"),)))
    names = {s.name for s in answers[0].list_services_response.service}
    assert "gradserve.v1.GradServe" in names


def test_token_from_env_and_token_file_are_all_accepted(tmp_path):
    """`serve` accepts GRADSERVE_TOKEN and every token of --token-file (rotation); others are refused."""
    token_file = tmp_path / "tokens"
    token_file.write_text("# rotated monthly\nold-token\n\nnew-token\n")
    with ServeProcess("--token-file", str(token_file), env={"GRADSERVE_TOKEN": "env-token"}) as server:
        for token in ("env-token", "old-token", "new-token"):
            with gs.connect(server.target, token=token, timeout=30) as client:
                assert client.list_layers().layers
        with gs.connect(server.target, token="# rotated monthly", timeout=30) as client:
            with pytest.raises(gs.Unauthenticated):
                client.list_layers()


# -- no request can make the server import or run code --

def test_an_op_naming_a_module_imports_nothing(client, tmp_path, monkeypatch):
    """An op or attribute naming an importable module is only a name: NOT_FOUND, and the module stays unimported."""
    (tmp_path / "gsplug_trap.py").write_text("raise SystemExit('a request imported me')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for op in ("gsplug_trap", "gsplug_trap.anything", "os.system"):
        g = gs.Graph()
        g.output(g.node(op, g.input("x"), module="gsplug_trap"), "y")
        with pytest.raises(gs.NotFound):
            client.register(g)
    assert "gsplug_trap" not in sys.modules


_CODE_LOADING = re.compile(r"\b(pickle|cPickle|marshal|dill|cloudpickle|shelve|import_module|__import__|eval|exec|"
                           r"allow_pickle\s*=\s*True|yaml\.load|exec_module)\b")


def test_server_source_never_deserializes_or_evaluates_code():
    """Nothing in the server, plugin API or wire code unpickles, evals, or imports by a name it was sent."""
    import gradserve.plugins
    import gradserve.proto
    import gradserve.server

    offenders = []
    for package in (gradserve.server, gradserve.plugins, gradserve.proto):
        for path in Path(package.__path__[0]).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if _CODE_LOADING.search(code) and not code.lstrip().startswith(('"', "'")):
                    offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []
