"""The Optimizer base class: an optimizer plugin's settings, its per-parameter state, and the update contract."""

from __future__ import annotations

import math
from typing import ClassVar, Mapping

import numpy as np

from gradserve.plugins.layer import SchemaError


class Optimizer:
    """An update rule for the parameters of a Train stream, applied one parameter at a time.

    A subclass declares ``settings`` (every setting and its float default, e.g. ``{"lr": 0.01}``) and ``state``
    (the names of the arrays it keeps per parameter, each starting as zeros of the parameter's shape and
    dtype), and implements ``update``. The server makes one instance per stream with the client's settings
    (each then an attribute: ``self.lr``) and owns the state, so it can count its bytes and hand it back.

    Example::

        class SGD(Optimizer):
            \"\"\"W <- W - lr * dW.\"\"\"

            settings = {"lr": 0.01}

            def update(self, param, grad, state, step):
                param -= self.lr * grad
    """

    name: ClassVar[str] = ""
    settings: ClassVar[Mapping[str, float]] = {}
    state: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def __init__(self, **settings: float):
        unknown = sorted(set(settings) - set(self.settings))
        if unknown:
            known = ", ".join(self.settings) or "none"
            raise SchemaError(f"optimizer {self.name} has no setting {unknown[0]!r} (its settings: {known})")
        for key, default in self.settings.items():
            value = settings.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(value):
                raise SchemaError(f"optimizer {self.name}: setting {key!r} must be a finite number, not {value!r}")
            setattr(self, key, float(value))

    def update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, np.ndarray], step: int) -> None:
        """Change ``param`` and the arrays of ``state`` in place; never ``grad``. ``step`` counts from 1."""
        raise NotImplementedError

    def new_state(self, param: np.ndarray) -> dict[str, np.ndarray]:
        """The state of one parameter before its first update: zeros for every name in ``state``."""
        return {name: np.zeros_like(param) for name in self.state}

    @classmethod
    def doc(cls) -> str:
        """The first line of the class docstring (what ListLayers shows)."""
        return (cls.__doc__ or "").strip().split("\n", 1)[0]

    @classmethod
    def validate_schema(cls) -> None:
        """Raise SchemaError unless the class declares a usable name, settings and state."""
        if not cls.name or not cls.name.isidentifier():
            raise SchemaError(f"optimizer {cls.__name__}: name {cls.name!r} is not an identifier")
        for key, default in cls.settings.items():
            if not key.isidentifier() or hasattr(Optimizer, key):
                raise SchemaError(f"optimizer {cls.name}: setting name {key!r} is not allowed")
            if isinstance(default, bool) or not isinstance(default, (int, float)):
                raise SchemaError(f"optimizer {cls.name}: setting {key!r} needs a number as default")
        if not isinstance(cls.state, tuple) or not all(isinstance(n, str) and n for n in cls.state):
            raise SchemaError(f"optimizer {cls.name}: state must be a tuple of names, not {cls.state!r}")
        if cls.update is Optimizer.update:
            raise SchemaError(f"optimizer {cls.name} does not implement update()")

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{key}={getattr(self, key):g}' for key in self.settings)})"
