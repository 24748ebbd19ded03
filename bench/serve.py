"""A server process for the bench: `python -m bench.serve gradserve|echo`; prints its port, runs until stdin closes.

Both kinds get the same grpcio, thread-pool size and channel options, so that the
echo server is the transport limit for the gradserve server.
"""

from __future__ import annotations

import argparse
import sys

from gradserve.server.runtime.malloc import keep_freed_memory
from gradserve.server.rpc.server import ServerOptions, channel_options, start_server
from gradserve.server.runtime.blas import limit_blas_threads
from gradserve.server.service.limits import Limits

from bench.echo import start_echo_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__)
    parser.add_argument("kind", choices=("gradserve", "echo"))
    parser.add_argument("--max-workers", type=int, default=ServerOptions().max_workers)
    parser.add_argument("--max-session-bytes", type=int, default=Limits().max_session_bytes)
    parser.add_argument("--max-streams", type=int, default=Limits().max_streams)
    parser.add_argument("--glibc-malloc", action="store_true", help="leave glibc's malloc thresholds as they are")
    parser.add_argument("--blas-threads", type=int, default=1, help="as `gradserve serve --blas-threads`")
    args = parser.parse_args(argv)
    limits = Limits(max_session_bytes=args.max_session_bytes, max_streams=args.max_streams)
    if not args.glibc_malloc:
        keep_freed_memory()  # as `gradserve serve` does, for both kinds: the same process setup
    limit_blas_threads(args.blas_threads)
    if args.kind == "gradserve":
        running = start_server("127.0.0.1:0", options=ServerOptions(limits=limits, max_workers=args.max_workers))
        port, stop = running.port, running.stop
    else:
        options = channel_options(limits) + [("grpc.so_reuseport", 0)]
        server, port = start_echo_server("127.0.0.1:0", args.max_workers, options)
        stop = server.stop
    print(port, flush=True)
    sys.stdin.read()  # the bench closes our stdin to stop us (and so does its death)
    stop(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
