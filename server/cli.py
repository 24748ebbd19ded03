"""The `gradserve` command: serve, layers, plugins, health, import-onnx, demo.

Every --foo-bar flag also reads the environment variable GRADSERVE_FOO_BAR (a flag given on the command line wins).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

_LOGGER = logging.getLogger(__name__)

ENV_PREFIX = "GRADSERVE_"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    apply_env_defaults(parser)
    args = parser.parse_args(argv)
    from gradserve.server.runtime.logs import configure_logging

    configure_logging(getattr(args, "log_level", "INFO"), getattr(args, "log_json", False))
    from gradserve.server.service.registry import PluginConflictError

    try:
        return args.func(args) or 0
    except PluginConflictError as exc:  # a start-up error the operator fixes: say it, no traceback
        print(f"gradserve {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `gradserve plugins | head`: the reader left, nothing more to say
        sys.stderr.close()
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help)

    from gradserve.server.runtime.memory_cap import AUTO, parse_max_memory

    serve = command("serve", "run the gRPC server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all)")
    serve.add_argument("--port", type=int, default=50051, help="port to bind (0 picks a free one)")
    serve.add_argument("--max-workers", type=int, default=16, help="threads serving calls")
    serve.add_argument("--blas-threads", type=int, default=1,
                       help="BLAS threads per server process (0: the BLAS library's default); scale out with --workers")
    serve.add_argument("--max-memory", type=parse_max_memory, default=AUTO,
                       help="memory cap per server process: bytes or a size (512M, 2G); a request that needs more "
                            "fails with RESOURCE_EXHAUSTED instead of getting the server OOM-killed (0 or none: "
                            "no cap; default auto: the container's memory limit, if it has one, shared by --workers)")
    serve.add_argument("--graph-store", default=None, help="folder where named graphs persist")
    serve.add_argument("--grace", type=float, default=10.0, help="seconds in-flight calls get on SIGTERM")
    serve.add_argument("--max-connection-age", type=float, default=0.0,
                       help="seconds after which a client is asked to reconnect (its calls under way get --grace); "
                            "round_robin clients then find replicas added since (0: never)")
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes sharing --port (SO_REUSEPORT); more than 1 needs an explicit port")
    serve.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (WARNING hides the "
                                                           "line per call)")
    serve.add_argument("--log-json", action="store_true", help="log JSON lines (one per request and event)")
    security = serve.add_argument_group("security")
    security.add_argument("--tls-cert", default=None, help="PEM certificate chain: serve TLS only (with --tls-key)")
    security.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    security.add_argument("--tls-client-ca", default=None,
                          help="PEM CA bundle: mutual TLS, every client must present a certificate it signed")
    security.add_argument("--token", default=None,
                          help="bearer token every call must carry (health is exempt); prefer GRADSERVE_TOKEN or "
                               "--token-file, which `ps` does not show")
    security.add_argument("--token-file", default=None,
                          help="file of accepted bearer tokens, one per line (several allow rotation)")
    observability = serve.add_argument_group("metrics")
    observability.add_argument("--metrics-port", type=int, default=None,
                               help="serve Prometheus metrics on this port (default: off; 0 picks a free port; "
                                    "with --workers N, worker i uses port + i)")
    observability.add_argument("--metrics-host", default=None, help="address for metrics (default: --host)")
    _add_limit_flags(serve)
    serve.set_defaults(func=cmd_serve)

    layers = command("layers", "list the layers a running server offers")
    layers.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of the server")
    layers.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_client_flags(layers)
    layers.set_defaults(func=cmd_layers)

    plugins = command("plugins", "print the installed plugins and their load status as JSON")
    plugins.set_defaults(func=cmd_plugins)

    health = command("health", "ask a server's gRPC health service; exit 0 only when SERVING")
    health.add_argument("--target", default=None, help="HOST:PORT to ask (default 127.0.0.1:PORT)")
    health.add_argument("--port", type=int, default=50051, help="local port to ask when no --target is given")
    health.add_argument("--service", default="", help="service to ask about ('' = the whole server)")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    _add_client_flags(health, token=False)
    health.set_defaults(func=cmd_health)

    onnx_import = command("import-onnx", "register an ONNX model's graph on a server; print its id as JSON "
                                         "(needs gradserve[onnx])")
    onnx_import.add_argument("model", help="the .onnx file")
    onnx_import.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of the server")
    onnx_import.add_argument("--name", default=None, help="serve the graph under this name (a KServe model)")
    onnx_import.add_argument("--freeze", action="store_true",
                             help="bake the initializers in as constants instead of parameters to feed")
    _add_client_flags(onnx_import)
    onnx_import.set_defaults(func=cmd_import_onnx)

    demo = command("demo", "the chapter's examples, a gradient check and a network trained live "
                           "(needs gradserve[demo])")
    demo.add_argument("--target", default=None, help="HOST:PORT of a server (default: start an embedded one)")
    demo.add_argument("--out", default="gradserve-out", help="folder for the pictures")
    demo.add_argument("--epochs", type=int, default=20, help="training epochs (the default reaches >= 95%%)")
    demo.add_argument("--hidden", type=int, default=100, help="hidden units of TwoLayerNet")
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--optimizer", default="adam", choices=["sgd", "momentum", "adagrad", "adam"])
    demo.add_argument("--lr", type=float, default=0.002, help="learning rate")
    demo.add_argument("--seed", type=int, default=0, help="seeds the split, the initial weights and the batches")
    demo.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING or ERROR")
    _add_client_flags(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    from dataclasses import fields

    from gradserve.server.service.limits import Limits

    group = parser.add_argument_group("limits")
    for limit in fields(Limits):
        group.add_argument("--" + limit.name.replace("_", "-"), type=type(limit.default), default=limit.default,
                           help=f"{limit.metadata['help']} (default {limit.default})")


def _add_client_flags(parser: argparse.ArgumentParser, token: bool = True) -> None:
    """How a client subcommand reaches a server that uses TLS, mutual TLS or a token."""
    group = parser.add_argument_group("connection")
    group.add_argument("--tls-ca", default=None, help="PEM roots that verify the server: connect with TLS")
    group.add_argument("--tls-client-cert", default=None, help="PEM client certificate, for mutual TLS")
    group.add_argument("--tls-client-key", default=None, help="PEM private key of --tls-client-cert")
    group.add_argument("--tls-server-name", default=None,
                       help="name the server's certificate carries, when the target's host differs")
    if token:
        group.add_argument("--token", default=None, help="bearer token to send (or GRADSERVE_TOKEN)")
        group.add_argument("--token-file", default=None, help="file whose first line is the bearer token")


def client_kwargs(args) -> dict:
    """gs.connect() keyword arguments from the flags of _add_client_flags."""
    kwargs = {"root_certificates": args.tls_ca, "certificate_chain": args.tls_client_cert,
              "private_key": args.tls_client_key, "server_name": args.tls_server_name}
    if hasattr(args, "token"):
        from gradserve.server.rpc.auth import read_tokens

        tokens = read_tokens(args.token, args.token_file)
        kwargs["token"] = tokens[0] if tokens else None
    return kwargs


def apply_env_defaults(parser: argparse.ArgumentParser, environ=os.environ) -> None:
    """Let GRADSERVE_FOO_BAR set the default of every --foo-bar flag, in every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                apply_env_defaults(sub, environ)
            continue
        long_flags = [o for o in action.option_strings if o.startswith("--")]
        if not long_flags or action.dest == "help":
            continue
        name = ENV_PREFIX + long_flags[0][2:].upper().replace("-", "_")
        value = environ.get(name)
        if value is None:
            continue
        if action.nargs == 0:  # store_true / store_false
            action.default = value.strip().lower() in ("1", "true", "yes", "on")
            continue
        try:
            action.default = action.type(value) if action.type else value
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:  # exits 2, as a bad flag does
            parser.error(f"{name}={value!r} is not a valid {long_flags[0]}: {exc}")


def limits_from_args(args):
    from gradserve.server.service.limits import Limits

    return Limits(**{name: getattr(args, name) for name in vars(Limits())})


def server_options_from_args(args):
    """ServerOptions from the serve flags, reading the TLS and token files (no gRPC object is made here)."""
    from gradserve.server.rpc.server import ServerOptions
    from gradserve.server.rpc.auth import SecurityConfigError, read_tokens

    def pem(flag: str, path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise SecurityConfigError(f"{flag} {path}: {exc.strerror}") from None

    return ServerOptions(
        limits=limits_from_args(args), max_workers=args.max_workers, graph_store=args.graph_store,
        tls_cert=pem("--tls-cert", args.tls_cert), tls_key=pem("--tls-key", args.tls_key),
        tls_client_ca=pem("--tls-client-ca", args.tls_client_ca), tokens=read_tokens(args.token, args.token_file),
        metrics_port=args.metrics_port, metrics_host=args.metrics_host or args.host,
        max_connection_age=args.max_connection_age or None, max_connection_age_grace=args.grace,
    )


def cmd_serve(args) -> int:
    from gradserve.server.rpc.auth import SecurityConfigError, check_tls

    try:
        options = server_options_from_args(args)
        check_tls(options.tls_cert, options.tls_key, options.tls_client_ca)  # refuse bad flags before any fork
    except SecurityConfigError as exc:
        print(f"gradserve serve: {exc}", file=sys.stderr)
        return 2
    from gradserve.server.runtime.malloc import keep_freed_memory
    from gradserve.server.runtime.blas import limit_blas_threads
    from gradserve.server.runtime.memory_cap import apply_max_memory

    keep_freed_memory()  # this process serves tensors: reuse freed memory instead of faulting it in anew
    limit_blas_threads(args.blas_threads)
    apply_max_memory(args.max_memory, processes=args.workers)  # before any fork: every worker inherits the cap
    if args.workers > 1:
        if args.port == 0:
            print("gradserve serve: --workers needs an explicit --port: with port 0 each worker would bind "
                  "a different free port", file=sys.stderr)
            return 2
        from gradserve.server.runtime.workers import supervise

        return supervise(args.workers, lambda index, ready: serve_until_signal(args, options, index, ready))
    return serve_until_signal(args, options)


def serve_until_signal(args, options, worker: int | None = None, ready=None) -> int:
    """Serve until SIGTERM or SIGINT, then drain: health NOT_SERVING, new calls refused, --grace for the rest."""
    from dataclasses import replace

    from gradserve.server.rpc.server import start_server

    stopping = threading.Event()

    def on_signal(signum, frame):
        if not stopping.is_set():
            _LOGGER.info("%s: draining for up to %.1fs", signal.Signals(signum).name, args.grace)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGTERM, signal.SIGINT))  # a forked worker starts blocked
    if worker is not None:
        metrics_port = options.metrics_port + worker if options.metrics_port else options.metrics_port
        options = replace(options, reuse_port=True, metrics_port=metrics_port)
    running = start_server(f"{args.host}:{args.port}", options=options)
    who = "" if worker is None else f" (worker {worker}, pid {os.getpid()})"
    _announce(args, f"gradserve serving on {args.host}:{running.port}{who}")
    if running.metrics_port is not None:
        _announce(args, f"gradserve metrics on http://{options.metrics_host}:{running.metrics_port}/metrics{who}")
    if ready is not None:
        ready()
    stopping.wait()
    running.stop(args.grace)
    _LOGGER.info("stopped")
    return 0


def _announce(args, text: str) -> None:
    """Tell whoever started us where we serve, whatever --log-level says (as JSON with --log-json)."""
    print(json.dumps({"message": text}) if args.log_json else text, file=sys.stderr, flush=True)


def cmd_layers(args) -> int:
    import gradserve.client as gs

    with gs.connect(args.target, **client_kwargs(args)) as client:
        info = client.list_layers()
    for plugin in info.plugins:  # on stderr, so --json output stays parseable
        if plugin["status"] != "loaded":
            print(f"plugin {plugin['name']} ({plugin['distribution']} {plugin['version']}) is {plugin['status']} "
                  f"on the server: {plugin['reason']}", file=sys.stderr)
    if args.json:
        print(json.dumps([layer.as_dict() for layer in info.layers], indent=2))
        return 0
    rows = [("LAYER", "INPUTS", "OUTPUTS", "PLUGIN", "VERSION", "DOC")]
    rows += [(l.name, ",".join(l.inputs), ",".join(l.outputs), l.distribution, l.version, l.doc)
             for l in info.layers]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[5])
    return 0


def cmd_plugins(args) -> int:
    from gradserve.server.service.registry import load_registry

    registry = load_registry()
    print(json.dumps([p.as_dict() for p in registry.plugins], indent=2))
    return 0


def cmd_health(args) -> int:
    """Exit 0 when the server answers SERVING, 1 otherwise: a container HEALTHCHECK or an exec probe."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from gradserve.client.channel import open_channel

    # Without --target, ask this machine on --port: GRADSERVE_PORT then sets both serve and health.
    target = args.target or f"127.0.0.1:{args.port}"
    with open_channel(target, **client_kwargs(args)) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"{target}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def cmd_import_onnx(args) -> int:
    """Register an ONNX model's graph on a server; print its id, inputs, parameters and outputs as JSON."""
    import gradserve.client as gs
    from gradserve.client.onnx_import import OnnxConversionError, import_onnx

    try:
        imported = import_onnx(args.model, freeze=args.freeze)
        with gs.connect(args.target, **client_kwargs(args)) as client:
            graph_id = client.register(imported.graph, name=args.name)
    except (OnnxConversionError, gs.GradserveError, OSError) as exc:
        print(f"gradserve import-onnx: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"graph_id": graph_id, "name": args.name or "", "inputs": imported.inputs,
                      "parameters": sorted(imported.params), "outputs": imported.outputs}, indent=2))
    return 0


def cmd_demo(args) -> int:
    from gradserve.client.demo import DemoOptions, run_demo

    return run_demo(DemoOptions.from_args(args), connect_kwargs=client_kwargs(args))


if __name__ == "__main__":
    sys.exit(main())
