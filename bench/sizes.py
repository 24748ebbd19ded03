"""How big and how often: the full suite, and the quick one the smoke test runs in seconds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    rounds: int = 5  # alternating rounds of subject and baseline
    tiny_calls: int = 300  # calls per round for the tiny graph
    train_calls: int = 60
    batch: int = 100
    chain_nodes: int = 1000
    chain_calls: int = 25
    step_calls: int = 100  # in-process 784-50-10 steps per round
    large_mib: tuple[float, ...] = (4, 64)
    large_calls: tuple[int, ...] = (20, 2)
    threads: int = 16
    throughput_seconds: float = 2.0
    throughput_rounds: int = 3
    sessions: int = 1000
    resnet_batch: int = 8
    resnet_calls: int = 3
    conv_batch: int = 8
    conv_calls: int = 3


FULL = Sizes()
QUICK = Sizes(rounds=1, tiny_calls=20, train_calls=5, batch=10, chain_nodes=40, chain_calls=2, step_calls=5,
              large_mib=(0.25, 1), large_calls=(2, 1), threads=4, throughput_seconds=0.2, throughput_rounds=1,
              sessions=20, resnet_batch=1, resnet_calls=1, conv_batch=1, conv_calls=1)
