"""Cases over the network: gradserve's Run against the bare echo of the same bytes, same machine, same run."""

from __future__ import annotations


from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto.tensors import to_tensor_map
from gradserve.server.engine import execute as engine

from bench import book, timing, workloads
from bench.train_stream import train_stream
from bench.report import Row
from bench.servers import Echo, ServerProcess, gradserve_client
from bench.sizes import Sizes

MIB = 1 << 20


def run_request(graph_id: str, feeds, wrt=(), no_grad=False) -> bytes:
    """The bytes of the RunRequest the client sends: what the echo carries as its baseline."""
    request = pb.RunRequest(graph=pb.GraphRef(graph_id=graph_id), wrt=list(wrt), no_grad=no_grad)
    to_tensor_map(feeds, request.feeds)
    return request.SerializeToString()


def tiny(client, echo: Echo, sizes: Sizes) -> Row:
    graph, feeds = workloads.apple()
    graph_id = client.register(graph)
    payload = run_request(graph_id, feeds)
    t = timing.medians({"run": lambda: client.run(graph_id, feeds), "echo": lambda: echo(payload)},
                       sizes.rounds, sizes.tiny_calls)
    return Row("tiny graph: apple graph by id, p50 Run / echo p50", "µs", t["run"] * 1e6, t["echo"] * 1e6,
               "<= 1.3", f"echo of the {len(payload)}-byte RunRequest")


def train_step(client, echo: Echo, sizes: Sizes) -> Row:
    graph, feeds = workloads.mlp(sizes.batch)
    graph_id = client.register(graph)
    wrt = list(workloads.MLP_PARAMS)
    payload = run_request(graph_id, feeds, wrt)
    t = timing.medians({
        "run": lambda: client.run(graph_id, feeds, grad=wrt),
        "numpy": lambda: book.two_layer_step(**feeds),
        "echo": lambda: echo(payload),
    }, sizes.rounds, sizes.train_calls)
    return Row(f"training step 784-50-10 b{sizes.batch}: Run / (numpy step + echo)", "µs", t["run"] * 1e6,
               (t["numpy"] + t["echo"]) * 1e6, "<= 1.25",
               f"numpy step {t['numpy'] * 1e6:.0f} µs + echo of {len(payload) / MIB:.2f} MiB {t['echo'] * 1e6:.0f} µs")


def large(client, echo: Echo, sizes: Sizes) -> list[Row]:
    rows = []
    for mib, calls in zip(sizes.large_mib, sizes.large_calls):
        graph, feeds = workloads.relu(int(mib * MIB))
        graph_id = client.register(graph)
        payload = run_request(graph_id, feeds, no_grad=True)
        t = timing.medians({"run": lambda: client.run(graph_id, feeds, grad=False), "echo": lambda: echo(payload)},
                           max(2, sizes.rounds // 2), calls)
        rows.append(Row(f"large: Relu on {mib:g} MiB float32, Run / unary echo", "ms", t["run"] * 1e3,
                        t["echo"] * 1e3, "<= 1.2", ""))
    return rows


def throughput(client, echo: Echo, sizes: Sizes) -> Row:
    graph, feeds = workloads.apple()
    graph_id = client.register(graph)
    payload = run_request(graph_id, feeds)
    r = timing.rates({"run": lambda: client.run(graph_id, feeds), "echo": lambda: echo(payload)},
                     sizes.threads, sizes.throughput_seconds, sizes.throughput_rounds)
    return Row(f"throughput: {sizes.threads} client threads, tiny graph, Runs/s / echo calls/s", "/s", r["run"],
               r["echo"], ">= 0.75", "one channel shared by the threads, server and client on this machine")


def train_embedded(sizes: Sizes) -> Row:
    """The training-step benchmark of bench/train_step.py with the server in this process (``gs.connect()``)."""
    from bench import train_step

    r = train_step.measure("embedded", steps=sizes.train_calls * sizes.rounds, warmup=3, rounds=sizes.rounds,
                           batch_size=sizes.batch)
    return Row(f"training step b{sizes.batch}, embedded server (bench/train_step.py): step / (numpy + echo)", "µs",
               r["service_ms"] * 1e3, (r["numpy_ms"] + r["echo_ms"]) * 1e3, "",
               "server, client and echo in one process; SGD update included; the echo answers with the response bytes")


def memory(sizes: Sizes) -> list[Row]:
    """Server RSS growth for live sessions against the bytes they hold; then under a session-bytes cap."""
    graph, feeds = workloads.mlp(sizes.batch)
    per_session = engine.forward(workloads.plan_of(graph), feeds).nbytes()
    held = per_session * sizes.sessions
    rows = []
    for cap in (None, held // 4):
        with ServerProcess("gradserve", max_session_bytes=cap) as server, gradserve_client(server.target) as client:
            graph_id = client.register(graph)
            for _ in range(3):  # warm up: imports, plan, allocator
                client.forward(graph_id, feeds).release()
            before = server.rss()
            sessions = [client.forward(graph_id, feeds) for _ in range(sizes.sessions)]
            growth = server.rss() - before
            del sessions
        if cap is None:
            rows.append(Row(f"memory: {sizes.sessions} live 784-50-10 sessions, RSS growth / session bytes", "MiB",
                            growth / MIB, held / MIB, "<= 1.5", f"{per_session / 1024:.0f} KiB per session"))
        else:
            rows.append(Row(f"memory: same under a session-bytes cap of {cap / MIB:.0f} MiB, RSS growth / cap",
                            "MiB", growth / MIB, cap / MIB, "<= 1.5", "sessions past the cap are evicted (LRU)"))
    return rows


def all_cases(sizes: Sizes, only) -> list[Row]:
    rows: list[Row] = []
    wanted = [name for name in CASES if only is None or name in only]
    if wanted:
        with ServerProcess("gradserve") as gs_server, ServerProcess("echo") as echo_server:
            client, echo = gradserve_client(gs_server.target), Echo(echo_server.target)
            try:
                for name in wanted:
                    result = CASES[name](client, echo, sizes)
                    rows.extend(result if isinstance(result, list) else [result])
            finally:
                client.close()
                echo.close()
    if only is None or "embedded" in only:
        rows.append(train_embedded(sizes))
    if only is None or "memory" in only:
        rows.extend(memory(sizes))
    return rows


CASES = {"tiny": tiny, "train": train_step, "large": large, "throughput": throughput, "train_stream": train_stream}
NAMES = tuple(CASES) + ("embedded", "memory")
