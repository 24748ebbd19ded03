"""--max-memory: RLIMIT_DATA makes an outsized allocation a RESOURCE_EXHAUSTED answer, not an OOM-killed server."""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import numpy as np
import pytest

import gradserve.client as gs
from gradserve.server.runtime.memory_cap import AUTO, MIN_CAP, cap_memory, container_memory_limit, parse_max_memory
from gradserve.server.rpc.status import status_for
from serve_process import ServeProcess, gradserve_command, reserved_port

GIB = 1 << 30
#: Mul of shapes (N, 1) and (1, N): a tiny request whose float64 answer takes N*N*8 bytes, about 3.6 GiB.
OUTER_N = 22_000


def cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    """A fake /sys/fs/cgroup holding ``files`` (relative path -> content)."""
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content + "\n")
    return tmp_path


def data_limit(pid: int) -> tuple[int | None, int | None]:
    """RLIMIT_DATA of process ``pid`` (soft, hard) as /proc/PID/limits shows it, None for unlimited."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max data size"):
            soft, hard = line.split()[3:5]
            return tuple(None if value == "unlimited" else int(value) for value in (soft, hard))
    raise AssertionError(f"no data size limit for pid {pid}")


def in_child(code: str) -> str:
    """Run ``code`` in a fresh interpreter (where setting a cap cannot hurt this test run); its stdout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cgroup_v2_limit_is_the_container_limit(tmp_path):
    """cgroup v2's memory.max is the limit, in bytes."""
    assert container_memory_limit(cgroup(tmp_path, {"memory.max": "1073741824"})) == GIB


def test_the_own_cgroup_and_those_above_it_count(tmp_path):
    """Without a cgroup namespace (a systemd service, say) /proc/self/cgroup names the process's cgroup: its
    limit counts, and so does every limit above it; the lowest wins."""
    own = tmp_path / "proc-self-cgroup"
    own.write_text("0::/system.slice/gradserve.service\n")
    root = cgroup(tmp_path / "v2", {"system.slice/gradserve.service/memory.max": str(2 * GIB),
                                    "system.slice/memory.max": str(GIB), "memory.max": "max"})
    assert container_memory_limit(root, own) == GIB
    (root / "system.slice" / "memory.max").write_text("max\n")
    assert container_memory_limit(root, own) == 2 * GIB
    own.write_text("12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n")
    root = cgroup(tmp_path / "v1", {"memory/docker/abc/memory.limit_in_bytes": str(GIB),
                                    "memory/memory.limit_in_bytes": str(2 ** 63 - 4096)})
    assert container_memory_limit(root, own) == GIB


def test_cgroup_v2_max_means_no_limit(tmp_path):
    """memory.max "max" means no limit, whatever a cgroup v1 file would say."""
    root = cgroup(tmp_path, {"memory.max": "max", "memory/memory.limit_in_bytes": "1073741824"})
    assert container_memory_limit(root) is None


def test_cgroup_v1_limit_is_the_container_limit(tmp_path):
    """Without cgroup v2, cgroup v1's memory.limit_in_bytes is the limit."""
    assert container_memory_limit(cgroup(tmp_path, {"memory/memory.limit_in_bytes": "536870912"})) == 512 << 20


@pytest.mark.parametrize("value", ["9223372036854771712", "ram+1"], ids=["unlimited", "over-the-RAM"])
def test_cgroup_v1_unlimited_values_mean_no_limit(tmp_path, value):
    """cgroup v1's "unlimited" huge value, or any value past the machine's RAM, is no limit."""
    if value == "ram+1":
        value = str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") + 4096)
    assert container_memory_limit(cgroup(tmp_path, {"memory/memory.limit_in_bytes": value})) is None


def test_no_cgroup_files_mean_no_limit(tmp_path):
    """With neither cgroup file there is no limit to follow."""
    assert container_memory_limit(tmp_path) is None


@pytest.mark.parametrize("text, expected", [
    ("1073741824", GIB), ("1G", GIB), ("1g", GIB), ("1GiB", GIB), ("1Gi", GIB), ("1gb", GIB), ("1024M", GIB),
    ("1048576k", GIB), ("1.5G", 3 << 29), (" 2 GiB ", 2 * GIB), ("0", None), ("none", None), ("NONE", None),
    ("auto", AUTO), ("Auto", AUTO),
])
def test_max_memory_values_parse(text, expected):
    """Sizes are bytes or K/M/G/T (powers of 1024, any case, optional i/B); 0 and none mean no cap."""
    assert parse_max_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "1x", "-1G", "1e9", "", "G"])
def test_unparsable_max_memory_is_refused(text):
    """A value that is no size is refused, with a message saying what to give."""
    with pytest.raises(argparse.ArgumentTypeError, match="is not a size: give bytes or a size like 512M"):
        parse_max_memory(text)


def test_max_memory_below_the_server_own_needs_is_refused():
    """A cap the server itself would fill (below MIN_CAP) is refused instead of starting a broken server."""
    with pytest.raises(argparse.ArgumentTypeError, match="give at least 512 MiB, or 0 for no cap"):
        parse_max_memory("100M")
    assert parse_max_memory(str(MIN_CAP)) == MIN_CAP


def test_serve_refuses_a_bad_max_memory_with_exit_code_two():
    """`gradserve serve --max-memory lots` is a usage error (exit 2) naming the flag."""
    done = subprocess.run([*gradserve_command(), "serve", "--port", "0", "--max-memory", "lots"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Invalid value for '--max-memory'" in done.stderr and "'lots' is not a size" in done.stderr


def test_no_cap_leaves_rlimit_data_unchanged():
    """cap_memory(None) (--max-memory 0 or none) sets nothing."""
    before = resource.getrlimit(resource.RLIMIT_DATA)
    assert cap_memory(parse_max_memory("0")) is None
    assert resource.getrlimit(resource.RLIMIT_DATA) == before


def test_cap_never_raises_the_hard_limit():
    """A cap sets the soft RLIMIT_DATA; one above the hard limit becomes the hard limit, never raises it."""
    out = in_child("""
        import resource
        from gradserve.server.runtime.memory_cap import cap_memory
        resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))
        print(cap_memory(8 << 30), resource.getrlimit(resource.RLIMIT_DATA))
        print(cap_memory(1 << 30), resource.getrlimit(resource.RLIMIT_DATA))
    """)
    assert out.splitlines() == [f"{3 << 30} ({3 << 30}, {3 << 30})", f"{1 << 30} ({1 << 30}, {3 << 30})"]


@pytest.mark.parametrize("memory_max, expected", [("1610612736", "1610612736"), ("max", "None"),
                                                  ("268435456", "None")], ids=["limit", "no-limit", "small-limit"])
def test_auto_caps_at_the_container_limit(tmp_path, memory_max, expected):
    """--max-memory auto caps at the container's limit; none, or one too small to leave room, sets no cap."""
    root = cgroup(tmp_path, {"memory.max": memory_max})
    out = in_child(f"""
        import resource
        from gradserve.server.runtime.memory_cap import AUTO, apply_max_memory
        before = resource.getrlimit(resource.RLIMIT_DATA)
        cap = apply_max_memory(AUTO, root={str(root)!r})
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        print(cap, soft if cap is not None else (soft, hard) == before)
    """)
    assert out.split() == [expected, expected if expected != "None" else "True"]


def test_auto_shares_the_container_limit_among_workers(tmp_path):
    """With --workers N, auto caps each process at the container's limit / N (and sets none below the minimum)."""
    root = cgroup(tmp_path, {"memory.max": str(4 * GIB)})
    out = in_child(f"""
        from gradserve.server.runtime.memory_cap import AUTO, apply_max_memory
        print(apply_max_memory(AUTO, root={str(root)!r}, processes=4))
    """)
    assert out.split() == [str(GIB)]
    out = in_child(f"""
        from gradserve.server.runtime.memory_cap import AUTO, apply_max_memory
        print(apply_max_memory(AUTO, root={str(root)!r}, processes=16))
    """)
    assert out.split() == ["None"]


@pytest.mark.parametrize("detail", ["", "Unable to allocate 4 GiB"])
def test_memory_error_outside_a_layer_is_resource_exhausted(detail):
    """A MemoryError outside a layer (converting tensors) is RESOURCE_EXHAUSTED saying so, not INTERNAL."""
    status = status_for(MemoryError(detail))
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert status.message == "the call needs more memory than the server has" + (f": {detail}" if detail else "")


def test_outsized_answer_is_resource_exhausted_and_the_server_goes_on():
    """Under --max-memory 1G, Mul of (N,1) by (1,N) needing 3.6 GiB fails alone: RESOURCE_EXHAUSTED naming the
    node, and the same server then answers a small graph. (The element limits are raised so that the shape check,
    which refuses it first at the defaults, lets it reach the allocation the cap must stop.)"""
    with ServeProcess("--max-memory", "1G", "--max-tensor-elements", str(2 * OUTER_N ** 2),
                      "--max-pass-elements", str(4 * OUTER_N ** 2)) as server, gs.connect(server.target, timeout=60) as client:
        assert data_limit(server.pid)[0] == GIB
        assert "memory capped at 1 GiB (--max-memory)" in server.log()
        g = gs.Graph()
        g.output(g.Mul(g.input("a"), g.input("b"), name="outer"), "y")
        with pytest.raises(gs.ResourceExhausted) as refused:
            client.run(g, {"a": np.ones((OUTER_N, 1)), "b": np.ones((1, OUTER_N))}, grad=False)
        assert refused.value.node == "outer"
        assert "node 'outer': Mul.forward needs more memory than the server has" in refused.value.message
        answer = client.run(g, {"a": np.array([[1.0], [2.0]]), "b": np.array([[3.0, 4.0]])}, grad=["a"],
                            seed_grads={"y": np.ones((2, 2))})
        np.testing.assert_array_equal(answer.outputs["y"], [[3.0, 4.0], [6.0, 8.0]])
        np.testing.assert_array_equal(answer.grads["a"], [[7.0], [7.0]])
        assert server.alive()


def test_max_memory_zero_sets_no_cap():
    """`--max-memory 0` leaves RLIMIT_DATA as the server inherited it, and says so."""
    with ServeProcess("--max-memory", "0") as server:
        assert data_limit(server.pid) == data_limit(os.getpid())
        assert "memory not capped (--max-memory)" in server.log()


def test_every_worker_is_capped():
    """With --workers, each worker process runs under the cap."""
    with reserved_port() as port, ServeProcess("--workers", "2", "--max-memory", "2G", port=port) as server:
        workers = server.children()
        assert len(workers) == 2
        assert [data_limit(pid)[0] for pid in workers] == [2 * GIB, 2 * GIB]


def test_a_request_too_big_to_read_is_resource_exhausted_not_invalid():
    """MemoryError while reading a request's bytes says RESOURCE_EXHAUSTED (the server's memory), not that the
    bytes are no valid message; bytes that do not parse still get INVALID_ARGUMENT."""
    from gradserve.proto import gradserve_pb2 as pb
    from gradserve.server.rpc.undecodable import _lenient

    def out_of_memory(data: bytes):
        raise MemoryError

    refused = _lenient(out_of_memory, "/gradserve.v1.GradServe/Run")(b"\x00" * 10)
    assert refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "memory" in refused.message
    garbage = _lenient(pb.RunRequest.FromString, "/gradserve.v1.GradServe/Run")(b"\x12\x09garbage")
    assert garbage.code is grpc.StatusCode.INVALID_ARGUMENT and "gradserve.v1.RunRequest" in garbage.message
