"""Train streams behind a round_robin client: each stays on one replica of three while Runs spread."""

from __future__ import annotations

import socket
import time

import numpy as np

import gradserve.client as gs
from gradserve.client.network import TwoLayerNet
from gradserve.client.optimizers import make_optimizer
from gradserve.proto import REPLICA_KEY

from test_scale_out import APPLE_FEEDS, apple_graph, assert_apple, replicas, replicas_target  # noqa: F401 - fixtures

STREAMS = 3
STEPS = 8


def test_train_streams_stay_on_one_replica_while_runs_spread(replicas, replicas_target):
    """Three Train streams opened through a round_robin client each live on one replica for every step (the
    replica they name at open is the one that ends them, and their parameters equal the client's own Adam
    over the same steps, which state spread over replicas could not give) while Runs reach every replica."""
    expected = {f"{socket.gethostname()}:{p.pid}" for p in replicas}
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((4, 6)), rng.integers(0, 3, 4)) for _ in range(STEPS)]
    with gs.connect(replicas_target, round_robin=True, timeout=30) as client:
        graph = apple_graph()
        served: list[str] = []
        give_up = time.monotonic() + 30
        while set(served) != expected and time.monotonic() < give_up:  # every subchannel READY
            served.append(client.run(graph, APPLE_FEEDS).replica)
        net = TwoLayerNet(6, 5, 3, dtype="float64", seed=0)
        net.client = client
        trainers = [client.trainer(net.graph, net.params, "adam", lr=0.01) for _ in range(STREAMS)]
        opened_on = [trainer.replica for trainer in trainers]
        for x, t in data:
            for trainer in trainers:
                trainer.step(net.batch_feeds(x, t))
            result = client.run(graph, APPLE_FEEDS)  # between steps, Runs go on spreading
            assert_apple(result.outputs, result.grads)
            served.append(result.replica)
        finals = [trainer.close() for trainer in trainers]
        ended_on = [dict(trainer._call.trailing_metadata() or ()).get(REPLICA_KEY, "") for trainer in trainers]
    assert set(served) == expected
    assert set(opened_on) <= expected and ended_on == opened_on
    reference = {k: v.copy() for k, v in net.params.items()}
    adam = make_optimizer("adam", lr=0.01)
    with gs.connect(replicas_target, timeout=30) as local:
        for x, t in data:
            run = local.run(net.graph, {**reference, **net.batch_feeds(x, t)}, grad=net.param_names,
                            seed_grads=net.seed_grads)
            adam.update(reference, run.grads)
    for final in finals:
        for key in reference:
            np.testing.assert_allclose(final[key], reference[key], rtol=1e-6, atol=1e-6)
