"""The embedded server behind connect() with no target: in this process, on a free loopback port."""

from __future__ import annotations


def start_embedded():
    """Start a server on 127.0.0.1:0; return (port, stop). The only place the client touches the server."""
    from gradserve.server.rpc.server import start_server  # lazy: a remote user never imports the server

    running = start_server("127.0.0.1:0")
    return running.port, lambda: running.stop(None)
