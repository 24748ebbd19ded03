"""The `gradserve` command: serve, layers, plugins, health, demo. Every --foo-bar flag also reads GRADSERVE_FOO_BAR."""

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
    logging.basicConfig(level=getattr(args, "log_level", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args) or 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all)")
    serve.add_argument("--port", type=int, default=50051, help="port to bind (0 picks a free one)")
    serve.add_argument("--max-workers", type=int, default=16, help="threads serving calls")
    serve.add_argument("--graph-store", default=None, help="folder where named graphs persist")
    serve.add_argument("--grace", type=float, default=10.0, help="seconds in-flight calls get on SIGTERM")
    serve.add_argument("--log-level", default="INFO")
    _add_limit_flags(serve)
    serve.set_defaults(func=cmd_serve)

    layers = commands.add_parser("layers", help="list the layers a running server offers")
    layers.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of the server")
    layers.add_argument("--json", action="store_true", help="print JSON instead of a table")
    layers.set_defaults(func=cmd_layers)

    plugins = commands.add_parser("plugins", help="print the installed plugins and their load status as JSON")
    plugins.set_defaults(func=cmd_plugins)

    health = commands.add_parser("health", help="ask a server's gRPC health service; exit 0 only when SERVING")
    health.add_argument("--target", default=None, help="HOST:PORT to ask (default 127.0.0.1:PORT)")
    health.add_argument("--port", type=int, default=50051, help="local port to ask when no --target is given")
    health.add_argument("--service", default="", help="service to ask about ('' = the whole server)")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    health.set_defaults(func=cmd_health)
    return parser


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    from gradserve.server.limits import Limits

    defaults = Limits()
    for name, value in vars(defaults).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value,
                            help=f"limit (default {value})")


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
        value = environ.get(ENV_PREFIX + long_flags[0][2:].upper().replace("-", "_"))
        if value is None:
            continue
        if action.nargs == 0:  # store_true / store_false
            action.default = value.strip().lower() in ("1", "true", "yes", "on")
        else:
            action.default = action.type(value) if action.type else value


def limits_from_args(args):
    from gradserve.server.limits import Limits

    return Limits(**{name: getattr(args, name) for name in vars(Limits())})


def cmd_serve(args) -> int:
    from gradserve.server.app import ServerOptions, start_server

    options = ServerOptions(limits=limits_from_args(args), max_workers=args.max_workers,
                            graph_store=args.graph_store)
    running = start_server(f"{args.host}:{args.port}", options=options)
    print(f"gradserve serving on {args.host}:{running.port}", file=sys.stderr, flush=True)
    stopping = threading.Event()

    def on_signal(signum, frame):
        _LOGGER.info("signal %d: draining for up to %.1fs", signum, args.grace)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    running.stop(args.grace)
    _LOGGER.info("stopped")
    return 0


def cmd_layers(args) -> int:
    import gradserve.client as gs

    with gs.connect(args.target) as client:
        info = client.list_layers()
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
    from gradserve.server.registry import load_registry

    registry = load_registry()
    print(json.dumps([p.as_dict() for p in registry.plugins], indent=2))
    return 0


def cmd_health(args) -> int:
    """Exit 0 when the server answers SERVING, 1 otherwise: a container HEALTHCHECK or an exec probe."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # Without --target, ask this machine on --port: GRADSERVE_PORT then sets both serve and health.
    target = args.target or f"127.0.0.1:{args.port}"
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"{target}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
