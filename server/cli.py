"""The `gradserve` command (on click): serve, layers, plugins, health, import-onnx, demo.

Every --foo-bar option also reads the environment variable GRADSERVE_FOO_BAR (an option on the command line wins).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import threading
from types import SimpleNamespace

import click

_LOGGER = logging.getLogger(__name__)

ENV_PREFIX = "GRADSERVE_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam")
CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 110}
#: The ``obj`` that has a command callback hand back its options instead of running (parse_args).
_PARSE_ONLY = object()


def main(argv: list[str] | None = None) -> int:
    """The console entry point: run `gradserve ARGV`; the exit code (2 for a bad option or variable)."""
    try:
        return cli.main(args=argv, prog_name="gradserve", standalone_mode=False) or 0
    except click.ClickException as exc:  # a bad option or variable: click's one-line message, exit 2
        exc.show()
        return exc.exit_code
    except click.Abort:
        print("Aborted!", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `gradserve plugins | head`: the reader left, nothing more to say
        sys.stderr.close()
        return 0


def parse_args(argv: list[str]) -> SimpleNamespace:
    """The options `gradserve ARGV` would run with (GRADSERVE_* variables included), without running it."""
    return cli.main(args=list(argv), prog_name="gradserve", standalone_mode=False, obj=_PARSE_ONLY)


def option(*decls: str, **attrs):
    """A click option that also reads GRADSERVE_FOO_BAR for --foo-bar; --help and errors name the variable."""
    flag = next(d for d in decls if d.startswith("--"))
    attrs.setdefault("envvar", ENV_PREFIX + flag[2:].upper().replace("-", "_"))
    attrs.setdefault("show_envvar", True)
    return click.option(*decls, **attrs)


def runs(command):
    """A click callback running ``command(args)``: its options as one namespace, logging configured first."""

    @functools.wraps(command)
    def callback(**params):
        ctx = click.get_current_context()
        args = SimpleNamespace(command=ctx.info_name, **params)
        if ctx.obj is _PARSE_ONLY:
            return args
        from gradserve.server.runtime.logs import logging_to_stderr

        with logging_to_stderr(params.get("log_level", "INFO"), params.get("log_json", False)):
            return command(args)

    return callback


def fail(args, error, code: int = 1) -> int:
    """Say why the command failed, on one line of stderr; return its exit code."""
    print(f"gradserve {args.command}: {error}", file=sys.stderr)
    return code


def with_options(decorators):
    """One decorator applying ``decorators`` in order, top first, as if stacked above the function."""

    def apply(command):
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


class MemorySize(click.ParamType):
    """A --max-memory value: bytes, a size (512M, 2GiB), 0 or none for no cap, or auto."""

    name = "size"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        import argparse

        from gradserve.server.runtime.memory_cap import parse_max_memory

        try:
            return parse_max_memory(value)
        except argparse.ArgumentTypeError as exc:
            self.fail(str(exc), param, ctx)


#: A PEM or token file that must exist when it is named.
FILE = click.Path(exists=True, dir_okay=False)
PORT = click.IntRange(0, 65535)
COUNT = click.IntRange(min=1)
SECONDS = click.FloatRange(min=0)


class Gradserve(click.Group):
    """The command group; `serve` is built on first use: its limit options come from Limits, which needs numpy
    (`gradserve health`, a container's probe, imports neither)."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), "serve"})

    def get_command(self, ctx, name):
        return serve_command() if name == "serve" else super().get_command(ctx, name)


@click.group(cls=Gradserve, context_settings=CONTEXT,
             help="gradserve: backpropagation as a gRPC service. Every --foo-bar option also reads the environment "
                  "variable GRADSERVE_FOO_BAR (an option on the command line wins).")
@click.version_option(package_name="gradserve", prog_name="gradserve")
def cli():
    pass


def client_options(token: bool = True):
    """The options of a client command that reaches a server using TLS, mutual TLS or a token."""
    decorators = [
        option("--tls-ca", type=FILE, default=None, help="PEM roots that verify the server: connect with TLS"),
        option("--tls-client-cert", type=FILE, default=None, help="PEM client certificate, for mutual TLS"),
        option("--tls-client-key", type=FILE, default=None, help="PEM private key of --tls-client-cert"),
        option("--tls-server-name", default=None,
               help="name the server's certificate carries, when the target's host differs"),
    ]
    if token:
        decorators += [
            option("--token", default=None, help="bearer token to send"),
            option("--token-file", type=FILE, default=None, help="file whose first line is the bearer token"),
        ]
    return with_options(decorators)


def client_kwargs(args) -> dict:
    """gs.connect() keyword arguments from the options of client_options."""
    kwargs = {"root_certificates": args.tls_ca, "certificate_chain": args.tls_client_cert,
              "private_key": args.tls_client_key, "server_name": args.tls_server_name}
    if hasattr(args, "token"):
        from gradserve.server.rpc.auth import read_tokens

        tokens = read_tokens(args.token, args.token_file)
        kwargs["token"] = tokens[0] if tokens else None
    return kwargs


# -- serve --


@functools.cache
def serve_command() -> click.Command:
    """`gradserve serve`, with one option per field of Limits."""
    from dataclasses import fields

    from gradserve.server.service.limits import Limits

    limit_options = [option("--" + limit.name.replace("_", "-"), type=type(limit.default), default=limit.default,
                            help=limit.metadata["help"]) for limit in fields(Limits)]

    @click.command("serve", context_settings=CONTEXT)
    @option("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all)")
    @option("--port", type=PORT, default=50051, help="port to bind (0 picks a free one)")
    @option("--max-workers", type=COUNT, default=16, help="threads serving calls")
    @option("--blas-threads", type=click.IntRange(min=0), default=1,
            help="BLAS threads per server process (0: the BLAS library's default); scale out with --workers")
    @option("--max-memory", type=MemorySize(), default="auto",
            help="memory cap per server process: bytes or a size (512M, 2G); a request that needs more fails with "
                 "RESOURCE_EXHAUSTED instead of getting the server OOM-killed (0 or none: no cap; auto: the "
                 "container's memory limit, if it has one, shared by --workers)")
    @option("--graph-store", type=click.Path(file_okay=False), default=None,
            help="folder where named graphs persist")
    @option("--grace", type=SECONDS, default=10.0, help="seconds in-flight calls get on SIGTERM")
    @option("--max-connection-age", type=SECONDS, default=0.0,
            help="seconds after which a client is asked to reconnect (its calls under way get --grace); "
                 "round_robin clients then find replicas added since (0: never)")
    @option("--workers", type=COUNT, default=1,
            help="server processes sharing --port (SO_REUSEPORT); more than 1 needs an explicit port")
    @option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="INFO",
            help="WARNING hides the line per call")
    @option("--log-json", is_flag=True, help="log JSON lines (one per request and event)")
    @option("--tls-cert", type=FILE, default=None, help="PEM certificate chain: serve TLS only (with --tls-key)")
    @option("--tls-key", type=FILE, default=None, help="PEM private key of --tls-cert")
    @option("--tls-client-ca", type=FILE, default=None,
            help="PEM CA bundle: mutual TLS, every client must present a certificate it signed")
    @option("--token", default=None,
            help="bearer token every call must carry (health is exempt); prefer the variable or --token-file, "
                 "which `ps` does not show")
    @option("--token-file", type=FILE, default=None,
            help="file of accepted bearer tokens, one per line (several allow rotation)")
    @option("--metrics-port", type=PORT, default=None,
            help="serve Prometheus metrics on this port (default: off; 0 picks a free port; with --workers N, "
                 "worker i uses port + i)")
    @option("--metrics-host", default=None, help="address for metrics (default: --host)")
    @with_options(limit_options)
    @runs
    def serve(args) -> int:
        """Run the gRPC server."""
        return cmd_serve(args)

    return serve


def limits_from_args(args):
    from gradserve.server.service.limits import Limits

    return Limits(**{name: getattr(args, name) for name in vars(Limits())})


def server_options_from_args(args):
    """ServerOptions from the serve options, reading the TLS and token files (no gRPC object is made here)."""
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
    from gradserve.server.service.registry import PluginConflictError

    try:
        options = server_options_from_args(args)
        check_tls(options.tls_cert, options.tls_key, options.tls_client_ca)  # refuse bad options before any fork
    except SecurityConfigError as exc:
        return fail(args, exc, code=2)
    if args.workers > 1 and args.port == 0:
        return fail(args, "--workers needs an explicit --port: with port 0 each worker would bind a different "
                          "free port", code=2)
    from gradserve.server.runtime.malloc import keep_freed_memory
    from gradserve.server.runtime.blas import limit_blas_threads
    from gradserve.server.runtime.memory_cap import apply_max_memory

    keep_freed_memory()  # this process serves tensors: reuse freed memory instead of faulting it in anew
    limit_blas_threads(args.blas_threads)
    apply_max_memory(args.max_memory, processes=args.workers)  # before any fork: every worker inherits the cap
    if args.workers > 1:
        from gradserve.server.runtime.workers import supervise

        return supervise(args.workers, lambda index, ready: serve_until_signal(args, options, index, ready))
    try:
        return serve_until_signal(args, options)
    except PluginConflictError as exc:  # a start-up error the operator fixes: say it, no traceback
        return fail(args, exc, code=2)


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


# -- the client-side commands --


@cli.command("layers", context_settings=CONTEXT)
@option("--target", default="127.0.0.1:50051", help="HOST:PORT of the server")
@option("--json", is_flag=True, help="print JSON instead of a table")
@client_options()
@runs
def layers(args) -> int:
    """List the layers a running server offers (a table that fits the terminal, or --json)."""
    import gradserve.client as gs

    try:
        with gs.connect(args.target, **client_kwargs(args)) as client:
            info = client.list_layers()
    except gs.GradserveError as exc:
        return fail(args, f"{args.target}: {exc}")
    for plugin in info.plugins:  # on stderr, so --json output stays parseable
        if plugin["status"] != "loaded":
            print(f"plugin {plugin['name']} ({plugin['distribution']} {plugin['version']}) is {plugin['status']} "
                  f"on the server: {plugin['reason']}", file=sys.stderr)
    if args.json:
        print(json.dumps([layer.as_dict() for layer in info.layers], indent=2))
        return 0
    from rich.console import Console

    console = Console(highlight=False)
    console.print(layer_table(info.layers, console.width))
    return 0


def layer_table(layers, width: int):
    """The layers as a table ``width`` columns wide: the doc wraps in what the other columns leave, and a
    narrow terminal drops the plugin and version columns (`--json` has them all).

    Rich alone shrinks every wrapping column alike, which leaves the doc a sliver beside short input lists.
    """
    from rich.table import Table

    rows = [{"LAYER": l.name, "INPUTS": ", ".join(l.inputs), "OUTPUTS": ", ".join(l.outputs),
             "PLUGIN": l.distribution, "VERSION": l.version, "DOC": l.doc} for l in layers]
    natural = {header: max([len(header)] + [len(row[header]) for row in rows]) for header in rows[0]} if rows else {}
    lists = max(12, width // 8)  # input and output lists wrap at their commas beyond this
    widths = {header: min(w, lists) if header in ("INPUTS", "OUTPUTS") else w for header, w in natural.items()}
    doc_min = 20
    headers = ["LAYER", "INPUTS", "OUTPUTS", "PLUGIN", "VERSION"]
    if sum(widths.get(h, 0) for h in headers) + 2 * len(headers) + doc_min > width:
        headers = headers[:3]
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header in headers:
        table.add_column(header, width=widths.get(header), no_wrap=header in ("LAYER", "VERSION"), overflow="fold")
    rest = width - sum(widths.get(h, 0) for h in headers) - 2 * len(headers)  # a space each side, but the edges
    table.add_column("DOC", width=max(doc_min, min(natural.get("DOC", 0), rest)))
    for row in rows:
        table.add_row(*(row[header] for header in (*headers, "DOC")))
    return table


@cli.command("plugins", context_settings=CONTEXT)
@runs
def plugins(args) -> int:
    """Print the installed plugins and their load status as JSON."""
    from gradserve.server.service.registry import PluginConflictError, load_registry

    try:
        registry = load_registry()
    except PluginConflictError as exc:  # a start-up error the operator fixes: say it, no traceback
        return fail(args, exc, code=2)
    print(json.dumps([p.as_dict() for p in registry.plugins], indent=2))
    return 0


@cli.command("health", context_settings=CONTEXT)
@option("--target", default=None, help="HOST:PORT to ask (default 127.0.0.1:PORT)")
@option("--port", type=PORT, default=50051, help="local port to ask when no --target is given")
@option("--service", default="", help="service to ask about ('' = the whole server)")
@option("--timeout", type=SECONDS, default=3.0, help="seconds to wait for the answer")
@client_options(token=False)
@runs
def health(args) -> int:
    """Ask a server's gRPC health service; exit 0 only when SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from gradserve.client.channel import open_channel

    # Without --target, ask this machine on --port: GRADSERVE_PORT then sets both serve and health.
    target = args.target or f"127.0.0.1:{args.port}"
    # A probe reports the state now: its caller (the container runtime, the kubelet) retries on its own schedule.
    with open_channel(target, retries=False, **client_kwargs(args)) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"{target}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


@cli.command("import-onnx", context_settings=CONTEXT)
@click.argument("model", type=FILE)
@option("--target", default="127.0.0.1:50051", help="HOST:PORT of the server")
@option("--name", default=None, help="serve the graph under this name (a KServe model)")
@option("--freeze", is_flag=True, help="bake the initializers in as constants instead of parameters to feed")
@client_options()
@runs
def import_onnx(args) -> int:
    """Register an ONNX model's graph on a server; print its id, inputs, parameters and outputs as JSON
    (needs gradserve[onnx])."""
    import gradserve.client as gs

    try:
        from gradserve.client.onnx_import import OnnxConversionError, import_onnx
    except ImportError as exc:
        return fail(args, f"{exc}: pip install 'gradserve[onnx]'")
    try:
        imported = import_onnx(args.model, freeze=args.freeze)
        with gs.connect(args.target, **client_kwargs(args)) as client:
            graph_id = client.register(imported.graph, name=args.name)
    except (OnnxConversionError, gs.GradserveError, OSError) as exc:
        return fail(args, exc)
    print(json.dumps({"graph_id": graph_id, "name": args.name or "", "inputs": imported.inputs,
                      "parameters": sorted(imported.params), "outputs": imported.outputs}, indent=2))
    return 0


@cli.command("demo", context_settings=CONTEXT)
@option("--target", default=None, help="HOST:PORT of a server (default: start an embedded one)")
@option("--out", type=click.Path(file_okay=False), default="gradserve-out", help="folder for the pictures")
@option("--epochs", type=COUNT, default=20, help="training epochs (the default reaches >= 95%)")
@option("--hidden", type=COUNT, default=100, help="hidden units of TwoLayerNet")
@option("--batch-size", type=COUNT, default=32, help="examples per training step")
@option("--optimizer", type=click.Choice(OPTIMIZERS, case_sensitive=False), default="adam",
        help="the book's update rule")
@option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.002, help="learning rate")
@option("--seed", type=int, default=0, help="seeds the split, the initial weights and the batches")
@option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="WARNING",
        help="how much the demo logs")
@client_options()
@runs
def demo(args) -> int:
    """The chapter's examples, a gradient check and a network trained live (needs gradserve[demo])."""
    from gradserve.client.demo import DemoOptions, run_demo

    return run_demo(DemoOptions.from_args(args), connect_kwargs=client_kwargs(args))


if __name__ == "__main__":
    sys.exit(main())
