"""The `gradserve` command: GRADSERVE_* variables of every kind, bad values, help, version, one-line failures."""

from __future__ import annotations

import importlib.metadata
import io
import json
import logging
import os
import socket
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper

import gradserve.client as gs
from gradserve.server.cli import main
from gradserve.server.runtime.logs import configure_logging
from serve_process import ServeProcess, gradserve_command

FILE_TOKEN = "token-from-the-file"
ENV_TOKEN = "token-from-the-variable"


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    """`gradserve serve` configured by variables alone, one of each kind."""
    tokens = tmp_path_factory.mktemp("tokens") / "tokens"
    tokens.write_text(f"# accepted tokens\n{FILE_TOKEN}\n")
    env = {
        "GRADSERVE_MAX_GRAPH_NODES": "3",  # int
        "GRADSERVE_SESSION_TTL": "0.000001",  # float: every session has expired by its Backward
        "GRADSERVE_LOG_JSON": "true",  # bool flag
        "GRADSERVE_LOG_LEVEL": "warning",  # choice, any case
        "GRADSERVE_TOKEN_FILE": str(tokens),  # file
        "GRADSERVE_TOKEN": ENV_TOKEN,  # the accepted tokens are this one plus the file's
        "GRADSERVE_MAX_MEMORY": "1G",  # memory size
    }
    with ServeProcess(env=env) as server:
        yield server


def chain(n: int) -> gs.Graph:
    g = gs.Graph(dtype="float64")
    value = g.input("x")
    for _ in range(n):
        value = g.Relu(value)
    g.output(value, "y")
    return g


def test_int_variable_sets_a_limit(configured):
    """GRADSERVE_MAX_GRAPH_NODES=3 refuses a graph of 4 nodes and serves one of 3."""
    with gs.connect(configured.target, token=FILE_TOKEN, timeout=30) as client:
        assert client.run(chain(3), {"x": np.array([-1.0, 2.0])}, grad=False).outputs["y"].tolist() == [0.0, 2.0]
        with pytest.raises(gs.ResourceExhausted, match="max-graph-nodes"):
            client.register(chain(4))


def test_float_variable_sets_the_session_ttl(configured):
    """GRADSERVE_SESSION_TTL=0.000001 (a float) expires a Forward session before its Backward."""
    with gs.connect(configured.target, token=FILE_TOKEN, timeout=30) as client:
        session = client.forward(chain(1), {"x": np.array([1.0])})
        with pytest.raises(gs.FailedPrecondition):
            session.backward({"y": np.array([1.0])})


def test_bool_flag_variable_turns_on_json_logs(configured):
    """GRADSERVE_LOG_JSON=true writes the server's lines as JSON objects."""
    lines = [json.loads(line) for line in configured.log().splitlines()]
    assert any(line["message"].startswith("gradserve serving on 127.0.0.1:") for line in lines)


def test_choice_variable_sets_the_log_level_in_any_case(configured):
    """GRADSERVE_LOG_LEVEL=warning (lower case) hides the line per call that INFO writes."""
    with gs.connect(configured.target, token=FILE_TOKEN, timeout=30) as client:
        client.list_layers()
    assert "ListLayers" not in configured.log()


def test_file_variable_names_the_token_file(configured):
    """GRADSERVE_TOKEN_FILE's token is accepted; a call without a token is refused."""
    with gs.connect(configured.target, token=FILE_TOKEN, timeout=30) as client:
        assert client.list_layers().layers
    with gs.connect(configured.target, timeout=30) as client, pytest.raises(gs.Unauthenticated):
        client.list_layers()


def test_token_variable_adds_to_the_accepted_tokens(configured):
    """GRADSERVE_TOKEN is accepted beside every token of GRADSERVE_TOKEN_FILE; another token is not."""
    with gs.connect(configured.target, token=ENV_TOKEN, timeout=30) as client:
        assert client.list_layers().layers
    with gs.connect(configured.target, token="# accepted tokens", timeout=30) as client:
        with pytest.raises(gs.Unauthenticated):
            client.list_layers()


def test_memory_size_variable_caps_the_process(configured):
    """GRADSERVE_MAX_MEMORY=1G sets the server process's RLIMIT_DATA (its soft limit) to 1 GiB."""
    limits = open(f"/proc/{configured.pid}/limits").read()
    (line,) = [line for line in limits.splitlines() if line.startswith("Max data size")]
    assert line.split()[3] == str(1 << 30)


@pytest.mark.parametrize("command,name,value", [
    ("serve", "GRADSERVE_PORT", "abc"),
    ("serve", "GRADSERVE_GRACE", "soon"),
    ("serve", "GRADSERVE_LOG_JSON", "maybe"),
    ("serve", "GRADSERVE_LOG_LEVEL", "loud"),
    ("serve", "GRADSERVE_TLS_CERT", "/nonexistent/cert.pem"),
    ("serve", "GRADSERVE_MAX_MEMORY", "lots"),
    ("demo", "GRADSERVE_OPTIMIZER", "bogus"),
    ("health", "GRADSERVE_TIMEOUT", "-1"),
])
def test_a_bad_variable_exits_2_naming_it(command, name, value):
    """A GRADSERVE_* value that does not parse stops the command at once: exit 2, the variable named, no traceback."""
    # GRADSERVE_PORT=0 (unless it is the variable under test): a value wrongly accepted binds no fixed port.
    done = subprocess.run([*gradserve_command(), command], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GRADSERVE_PORT": "0", name: value})
    assert done.returncode == 2, done.stderr
    assert f"(env var: '{name}')" in done.stderr and "Traceback" not in done.stderr


def test_version(capsys):
    """`gradserve --version` prints the installed distribution's version."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"gradserve, version {importlib.metadata.version('gradserve')}"


@pytest.mark.parametrize("command,shown", [("serve", "default: 50051"), ("demo", "default: 20"),
                                           ("demo", "GRADSERVE_OPTIMIZER")])
def test_help_shows_defaults_and_variables(command, shown, capsys):
    """`--help` shows each option's default and its variable."""
    assert main([command, "--help"]) == 0
    assert shown in " ".join(capsys.readouterr().out.split())


def test_layers_table_fits_the_terminal(target, client, monkeypatch, capsys):
    """`gradserve layers` fits its table in the terminal's width and still names every layer."""
    monkeypatch.setenv("COLUMNS", "72")
    assert main(["layers", "--target", target]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 72
    first_words = {line.split()[0] for line in lines if line.strip() and not line.startswith(" ")}
    assert {layer.name for layer in client.list_layers().layers} <= first_words


def unanswered_target() -> str:
    """A loopback port that was just free and has nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def assert_one_line(err: str, starts: str) -> None:
    """``err`` is one line starting with ``starts``, besides the log lines of this process's own test server."""
    ours = f" [{os.getpid()}] gradserve."
    lines = [line for line in err.splitlines() if line.strip() and ours not in line]
    assert len(lines) == 1 and lines[0].startswith(starts), err


def test_layers_without_a_server_fails_in_one_line(capsys):
    """`gradserve layers` with nothing answering exits 1 with one line naming the target and the status."""
    target = unanswered_target()
    assert main(["layers", "--target", target]) == 1
    assert_one_line(capsys.readouterr().err, f"gradserve layers: {target}: UNAVAILABLE")


def test_import_onnx_of_a_file_that_is_not_onnx_fails_in_one_line(target, tmp_path, capsys):
    """`gradserve import-onnx` of bytes that are no ONNX model exits 1 with one line naming the file."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\xff\xff not a model")
    assert main(["import-onnx", str(path), "--target", target]) == 1
    assert_one_line(capsys.readouterr().err, f"gradserve import-onnx: cannot import the model: {path} is not an ONNX")


def test_import_onnx_refused_by_the_server_fails_in_one_line(target, tmp_path, capsys):
    """An ONNX model the server refuses (a graph without outputs) exits 1 with the server's reason, one line."""
    path = tmp_path / "empty.onnx"
    onnx.save(helper.make_model(helper.make_graph([], "empty", [], [])), path)
    assert main(["import-onnx", str(path), "--target", target]) == 1
    assert_one_line(capsys.readouterr().err, "gradserve import-onnx: INVALID_ARGUMENT")


@pytest.fixture()
def root_logging():
    """Put the root logger back as it was: configure_logging replaces its handlers."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = saved[0], saved[1]


def test_a_command_run_in_process_leaves_logging_as_it_found_it(capsys):
    """main() configures logging for its command only: no handler or level of its stays on the root logger
    (it would log this process's other servers' calls to stderr between tests)."""
    root = logging.getLogger()
    before = root.handlers[:], root.level
    assert main(["plugins"]) == 0
    assert (root.handlers, root.level) == before


def test_logging_writes_to_the_current_stderr_after_the_first_is_closed(root_logging, monkeypatch):
    """Logging set up while one sys.stderr was in place writes to its successor once it is closed (pytest's
    capture closes its stream after each test): no `--- Logging error ---`."""
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("INFO")
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("gradserve.test").info("still heard")
    assert "still heard" in second.getvalue() and "Logging error" not in second.getvalue()
