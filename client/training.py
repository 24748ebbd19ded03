"""Mini-batch training of a network on the server: fit(net, optimizer, x, t, epochs=...) -> History.

The parameters and the optimizer's state live on the server for the whole run (one Train stream, see
gradserve.client.trainer): each step sends only the batch and gets back the loss and the scores.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from gradserve.client.network import MultiLayerNet, accuracy
from gradserve.client.optimizers import Optimizer

_LOGGER = logging.getLogger(__name__)


@dataclass
class History:
    """Per-epoch training record: mean loss, train accuracy (over the epoch's batches) and test accuracy."""

    loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0

    @property
    def epochs(self) -> int:
        return len(self.loss)


def optimizer_spec(optimizer: str | Optimizer, settings: dict | None = None) -> tuple[str, dict[str, float]]:
    """(name, settings) for a Train stream from an optimizer name or a client-side optimizer object."""
    if isinstance(optimizer, str):
        return optimizer, dict(settings or {})
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a name or a gradserve.client.optimizers.Optimizer, not {optimizer!r}")
    names = inspect.signature(type(optimizer)).parameters
    return type(optimizer).__name__.lower(), {**{n: float(getattr(optimizer, n)) for n in names}, **(settings or {})}


def fit(net: MultiLayerNet, optimizer: str | Optimizer, x_train, t_train, *, epochs: int, batch_size: int = 100,
        x_test=None, t_test=None, seed: int = 0,
        on_step: Callable[[int, int, float], None] | None = None,
        on_epoch: Callable[[int, History], None] | None = None, **settings: float) -> History:
    """Train ``net`` on its client's server: every epoch visits each sample once, in batches, in an order drawn
    from ``seed``; ``net.params`` holds the trained parameters after each epoch and at the end.

    ``optimizer``: a name ("adam", with ``settings`` such as ``lr=1e-3``) or a client-side optimizer object,
    whose settings are used (its state is not: the server's starts from zero). ``on_step(epoch, step,
    loss)`` runs after every step, ``on_epoch(epoch, history)`` after every epoch (both count from 1).
    """
    x_train = np.asarray(x_train)
    t_train = np.asarray(t_train)
    if len(x_train) != len(t_train):
        raise ValueError(f"x_train has {len(x_train)} rows but t_train has {len(t_train)}")
    name, settings = optimizer_spec(optimizer, settings)
    rng = np.random.default_rng(seed)
    history = History()
    start = time.perf_counter()
    n = len(x_train)
    with net.trainer(name, outputs=["scores"], **settings) as trainer:
        for epoch in range(1, epochs + 1):
            order = rng.permutation(n)
            total_loss = 0.0
            correct = 0.0
            for step, begin in enumerate(range(0, n, batch_size), start=1):
                batch = order[begin:begin + batch_size]
                loss = trainer.step(net.batch_feeds(x_train[batch], t_train[batch]))
                total_loss += loss * len(batch)
                correct += accuracy(trainer.outputs["scores"], t_train[batch]) * len(batch)
                history.steps += 1
                if on_step is not None:
                    on_step(epoch, step, loss)
            net.set_params(trainer.params() if epoch < epochs else trainer.close())
            history.loss.append(total_loss / n)
            history.train_acc.append(correct / n)
            if x_test is not None:
                history.test_acc.append(net.accuracy(x_test, t_test))
            history.seconds = time.perf_counter() - start
            _LOGGER.debug("epoch %d: loss %.4f", epoch, history.loss[-1])
            if on_epoch is not None:
                on_epoch(epoch, history)
    return history
