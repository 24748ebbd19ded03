"""check_layer(): the conformance checks every gradserve layer must pass, with numpy alone (no server)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from gradserve.plugins import Layer, SchemaError, TensorType
from gradserve.plugins.layer import describe
from gradserve.plugins.numerical import central_differences

#: Every check, in the order they run; a ConformanceError names one of them.
CHECKS = (
    "registration",         # (plugin_layers) the module's register_layers hook registers Layer classes
    "schema",               # the class follows the Layer contract, with docs and matching signatures
    "forward",              # forward runs and returns the declared outputs as finite arrays
    "output dtype",         # float outputs keep the float inputs' precision
    "shape rule",           # output_types, when the layer declares it, gives forward's shapes and dtypes
    "input mutation",       # neither forward nor backward writes into an input
    "dout mutation",        # backward does not write into the douts it receives
    "output mutation",      # backward does not write into what forward returned
    "backward",             # backward runs and returns a tuple with one entry per input
    "missing gradient",     # every differentiable float input gets an array
    "unexpected gradient",  # inputs left out of `differentiable` get None
    "gradient shape",       # each gradient has its input's shape
    "gradient dtype",       # gradients are floating point
    "determinism",          # the same inputs, attributes and seed give the same numbers
    "needed gradients",     # asked (needs_input_grad) for one input's gradient, backward gives that one
    "numerical gradient",   # backprop matches float64 central differences
)

_DOUT_SEED = 20240917  # douts are random but fixed, so a failure reproduces


class ConformanceError(AssertionError):
    """A layer failed a conformance check: ``check`` names it, ``layer`` and ``input`` say where."""

    def __init__(self, check: str, layer: str, message: str, input: str | None = None, context: str = ""):
        self.check = check
        self.layer = layer
        self.input = input
        where = f", input {input!r}" if input is not None else ""
        during = f" ({context})" if context else ""
        super().__init__(f"check {check!r} failed for layer {layer}{where}{during}: {message}")


@dataclass
class LayerReport:
    """What a passing check_layer() saw: outputs and gradients of the run on the given inputs."""

    layer: str
    outputs: dict[str, np.ndarray]
    grads: dict[str, np.ndarray | None]
    checks: list[str] = field(default_factory=list)


def check_layer(
    layer_cls: type[Layer],
    inputs: Mapping[str, Any] | Sequence[Any],
    attrs: Mapping[str, Any] | None = None,
    *,
    training: bool = False,
    seed: int | None = 0,
    eps: float = 1e-6,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    max_elements: int = 256,
) -> LayerReport:
    """Run every conformance check on ``layer_cls`` with these inputs; raise ConformanceError on the first failure.

    ``inputs`` maps input names to arrays (or lists them in schema order);
    ``attrs`` are node attributes (defaults fill the rest). ``training`` and
    ``seed`` are set on each instance as the server does for a request. Pick
    inputs away from kinks (Relu at 0, ties in a max): the numerical gradient
    check compares backprop with float64 central differences of step ``eps``,
    element by element (at most ``max_elements`` sampled elements per input),
    allowing ``atol + rtol * max(|backprop|, |numerical|)``.
    """
    __tracebackhide__ = True
    return _Checker(layer_cls, attrs, training, seed, eps, rtol, atol, max_elements).run(inputs)


class _Checker:
    def __init__(self, layer_cls, attrs, training, seed, eps, rtol, atol, max_elements):
        self.cls = layer_cls
        self.name = getattr(layer_cls, "name", None) or getattr(layer_cls, "__name__", repr(layer_cls))
        self.training = training
        self.seed = seed
        self.eps, self.rtol, self.atol, self.max_elements = eps, rtol, atol, max_elements
        self.given_attrs = dict(attrs or {})
        self.context = f"attrs {self.given_attrs}, training={training}, seed={seed}"
        self.passed: list[str] = []

    def fail(self, check: str, message: str, input: str | None = None):
        __tracebackhide__ = True
        raise ConformanceError(check, self.name, message, input, self.context)

    # -- the sequence of checks --

    def run(self, inputs) -> LayerReport:
        __tracebackhide__ = True
        self.check_schema()
        self.attrs = self.cls.bind_attributes(self.given_attrs)  # a SchemaError here is the test's mistake
        arrays = self.arrays(inputs)
        outs, grads = self.one_pass(arrays)
        again_outs, again_grads = self.one_pass(arrays)
        self.check_same(outs, again_outs, self.cls.outputs, "output")
        if grads is not None:
            self.check_same(grads, again_grads, self.cls.inputs, "gradient for input")
        self.passed.append("determinism")
        if grads is not None:
            self.check_needed(arrays, grads)
        if any(a.dtype.kind == "f" and a.dtype != np.float32 for a in arrays):
            self.one_pass([a.astype(np.float32) if a.dtype.kind == "f" else a for a in arrays])
        self.check_numerical([a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays])
        return LayerReport(
            self.name,
            dict(zip(self.cls.outputs, outs)),
            dict(zip(self.cls.inputs, grads)) if grads is not None else {},
            [c for c in CHECKS if c in self.passed],
        )

    def check_schema(self) -> None:
        __tracebackhide__ = True
        cls = self.cls
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            self.fail("schema", f"{cls!r} is not a subclass of gradserve.plugins.Layer")
        try:
            cls.validate_schema()
        except SchemaError as exc:
            self.fail("schema", str(exc))
        if not cls.doc():
            self.fail("schema", "the class has no docstring; its first line is the layer's doc in ListLayers")
        undocumented = [n for n, a in cls.attributes.items() if not a.doc]
        if undocumented:
            self.fail("schema", f"attribute(s) {undocumented} have no doc; give Attr(type, default, doc)")
        for method, names in (("forward", cls.inputs), ("backward", cls.outputs)):
            try:
                inspect.signature(getattr(cls, method)).bind(None, *names)
            except TypeError:
                what = "inputs" if method == "forward" else "outputs (one dout each)"
                self.fail("schema", f"{method}{inspect.signature(getattr(cls, method))} cannot take the "
                                    f"{len(names)} declared {what} {tuple(names)} positionally")
        self.passed.append("schema")

    def arrays(self, inputs) -> list[np.ndarray]:
        names = tuple(self.cls.inputs)
        if isinstance(inputs, Mapping):
            missing = [n for n in names if n not in inputs]
            extra = [n for n in inputs if n not in names]
            if missing or extra:
                raise TypeError(f"{self.name} takes inputs {names}; missing {missing}, unknown {extra}")
            values = [inputs[n] for n in names]
        else:
            values = list(inputs)
            if len(values) != len(names):
                raise TypeError(f"{self.name} takes {len(names)} inputs {names}, got {len(values)}")
        return [np.array(v) for v in values]  # private copies: the caller's arrays are never touched

    def new_layer(self) -> Layer:
        layer = self.cls(**self.attrs)
        # What the engine does for a request: the flag, and a seed per (request seed, node).
        layer.training = self.training
        layer.seed = None if self.seed is None else (self.seed, 0)
        return layer

    # -- one forward/backward pass, checking the contract on the way --

    def one_pass(self, arrays: list[np.ndarray]):
        """Forward then backward on private copies; return (outputs, gradients or None when nothing is seeded)."""
        __tracebackhide__ = True
        work = [a.copy() for a in arrays]
        layer = self.new_layer()
        outs = self.forward(layer, work)
        self.check_unchanged(work, arrays, self.cls.inputs, "input mutation", "forward wrote into input")
        self.passed.append("input mutation")
        self.check_outputs(outs, arrays)
        self.check_shape_rule(outs, arrays)
        douts = self.douts(outs)
        if all(d is None for d in douts):
            return outs, None
        kept_outs = [o.copy() for o in outs]
        kept_douts = [None if d is None else d.copy() for d in douts]
        grads = self.backward(layer, douts)
        self.check_unchanged(douts, kept_douts, self.cls.outputs, "dout mutation",
                             "backward wrote into the dout of output", as_input=False)
        self.check_unchanged(work, arrays, self.cls.inputs, "input mutation", "backward wrote into input")
        self.check_unchanged(outs, kept_outs, self.cls.outputs, "output mutation",
                             "backward wrote into forward's output", as_input=False)
        self.check_grads(grads, work)
        return outs, grads

    def forward(self, layer: Layer, arrays: list[np.ndarray]) -> list[np.ndarray]:
        __tracebackhide__ = True
        try:
            with np.errstate(all="ignore"):
                result = layer.forward(*arrays)
        except Exception as exc:
            self.fail("forward", f"forward raised {type(exc).__name__}: {exc} (inputs {_describe_all(arrays)})")
        declared = self.cls.outputs
        if len(declared) == 1:
            if isinstance(result, tuple):
                self.fail("forward", f"declares one output {declared[0]!r} but forward returned a tuple "
                                     f"of {len(result)}; return the array itself")
            result = (result,)
        elif not isinstance(result, tuple) or len(result) != len(declared):
            self.fail("forward", f"declares {len(declared)} outputs {declared} but forward returned "
                                 f"{describe(result)}; return a tuple in that order")
        outs = []
        for name, value in zip(declared, result):
            if isinstance(value, (np.generic, int, float, bool)):
                value = np.asarray(value)
            if not isinstance(value, np.ndarray):
                self.fail("forward", f"output {name!r} is {describe(value)}, not a numpy array")
            outs.append(value)
        return outs

    def check_outputs(self, outs: list[np.ndarray], arrays: list[np.ndarray]) -> None:
        __tracebackhide__ = True
        float_dtypes = {a.dtype for a in arrays if a.dtype.kind == "f"}
        inputs_finite = all(np.isfinite(a).all() for a in arrays if a.dtype.kind in "fc")
        for name, out in zip(self.cls.outputs, outs):
            if out.dtype.kind not in "biufc":
                self.fail("output dtype", f"output {name!r} has dtype {out.dtype}; return numeric arrays")
            if len(float_dtypes) == 1 and out.dtype.kind == "f" and out.dtype not in float_dtypes:
                (expected,) = float_dtypes
                self.fail("output dtype", f"output {name!r} is {out.dtype.name} for {expected.name} inputs; keep "
                                          f"the inputs' precision (a numpy scalar such as np.float64(0.5) promotes "
                                          f"a float32 array: write x.dtype.type(0.5) or a Python float)")
            if inputs_finite and out.dtype.kind in "fc" and not np.isfinite(out).all():
                self.fail("forward", f"output {name!r} holds NaN or inf for finite inputs "
                                     f"{_describe_all(arrays)}: {_numbers(out)}")
        self.passed += ["forward", "output dtype"]

    def check_shape_rule(self, outs: list[np.ndarray], arrays: list[np.ndarray]) -> None:
        __tracebackhide__ = True
        try:
            declared = self.new_layer().output_types(*(TensorType(a.shape, a.dtype) for a in arrays))
        except Exception as exc:
            self.fail("shape rule", f"output_types raised {type(exc).__name__}: {exc} on inputs forward takes "
                                    f"({_describe_all(arrays)})")
        if declared is None:  # no rule: the server sizes this layer's outputs only by running it
            return
        got = [(tuple(o.shape), o.dtype) for o in outs]
        said = [(tuple(t.shape), np.dtype(t.dtype)) for t in declared] if isinstance(declared, tuple) else declared
        if said != got:
            self.fail("shape rule", f"output_types says {said}, forward gave {got} (inputs {_describe_all(arrays)})")
        self.passed.append("shape rule")

    def douts(self, outs: list[np.ndarray]) -> list[np.ndarray | None]:
        rng = np.random.default_rng(_DOUT_SEED)
        return [rng.standard_normal(o.shape).astype(o.dtype) if o.dtype.kind == "f" else None for o in outs]

    def backward(self, layer: Layer, douts: list[np.ndarray | None]):
        __tracebackhide__ = True
        try:
            with np.errstate(all="ignore"):
                return layer.backward(*douts)
        except Exception as exc:
            self.fail("backward", f"backward raised {type(exc).__name__}: {exc} (douts {_describe_all(douts)})")

    def check_grads(self, grads, arrays: list[np.ndarray]) -> None:
        __tracebackhide__ = True
        names = self.cls.inputs
        if not isinstance(grads, tuple) or len(grads) != len(names):
            self.fail("backward", f"backward must return a tuple with one gradient per input {names} "
                                  f"(None where none), got {describe(grads)}")
        differentiable = set(self.cls.differentiable_inputs())
        for name, grad, value in zip(names, grads, arrays):
            if name not in differentiable:
                if grad is not None:
                    self.fail("unexpected gradient", f"backward returned {describe(grad)} for an input that "
                                                     f"`differentiable` leaves out; return None for it", name)
                continue
            if value.dtype.kind != "f":
                continue  # the engine never differentiates integer or boolean inputs
            if grad is None:
                self.fail("missing gradient", f"backward returned None for a differentiable input of shape "
                                              f"{value.shape}; return its gradient, or leave it out of "
                                              f"`differentiable` if it takes none", name)
            grad = np.asarray(grad)
            if grad.shape != value.shape:
                self.fail("gradient shape", f"the gradient has shape {grad.shape}, the input has shape "
                                            f"{value.shape} (reduce broadcast gradients with reduce_to_shape)", name)
            if grad.dtype.kind != "f":
                self.fail("gradient dtype", f"the gradient has dtype {grad.dtype}; gradients are floating point",
                          name)
        self.passed += ["dout mutation", "output mutation", "backward", "missing gradient",
                        "unexpected gradient", "gradient shape", "gradient dtype"]

    def check_needed(self, arrays: list[np.ndarray], grads) -> None:
        """With ``needs_input_grad`` naming one differentiable input, backward gives that input's gradient (the
        others may be None): the engine asks so when the other inputs are data rather than parameters."""
        __tracebackhide__ = True
        names = self.cls.inputs
        differentiable = set(self.cls.differentiable_inputs())
        wanted = [k for k, (name, a) in enumerate(zip(names, arrays)) if name in differentiable and a.dtype.kind == "f"]
        for k in wanted if len(wanted) > 1 else ():
            work = [a.copy() for a in arrays]
            layer = self.new_layer()
            outs = self.forward(layer, work)
            layer.needs_input_grad = tuple(j == k for j in range(len(names)))
            partial = self.backward(layer, self.douts(outs))
            if not isinstance(partial, tuple) or len(partial) != len(names):
                self.fail("backward", f"backward must return a tuple with one gradient per input {names} "
                                      f"(None where none), got {describe(partial)}")
            got = partial[k]
            if got is None or np.shape(got) != np.shape(grads[k]) or not np.allclose(
                    got, grads[k], rtol=self.rtol, atol=self.atol):
                self.fail("needed gradients", f"with needs_input_grad {layer.needs_input_grad} backward gave "
                                              f"{describe(got)}, not the gradient it gives when every one is "
                                              f"needed", names[k])
        self.passed.append("needed gradients")

    # -- comparisons --

    def check_unchanged(self, now, before, names, check, what, as_input=True) -> None:
        __tracebackhide__ = True
        for name, a, b in zip(names, now, before):
            if b is not None and not _same(a, b):
                self.fail(check, f"{what} {name!r} in place: {_first_difference(a, b)}; compute into new "
                                 f"arrays (they may be read-only views shared with other nodes)",
                          name if as_input else None)

    def check_same(self, first, second, names, what) -> None:
        __tracebackhide__ = True
        for name, a, b in zip(names, first, second):
            if a is None and b is None:
                continue
            if a is None or b is None or not _same(np.asarray(a), np.asarray(b)):
                detail = _first_difference(np.asarray(b), np.asarray(a)) if a is not None and b is not None else \
                    f"{describe(a)} then {describe(b)}"
                self.fail("determinism", f"two runs with the same inputs, attributes and seed gave different "
                                         f"{what} {name!r}: {detail}; draw random numbers from self.rng only")

    def check_numerical(self, arrays: list[np.ndarray]) -> None:
        """Backprop vs central differences of L = sum(out * dout), all outputs seeded, then each alone."""
        __tracebackhide__ = True
        outs, grads = self.one_pass(arrays)
        if grads is None:
            return
        douts = self.douts(outs)
        seeded = [k for k, d in enumerate(douts) if d is not None]
        differentiable = set(self.cls.differentiable_inputs())
        targets = [i for i, n in enumerate(self.cls.inputs) if n in differentiable and arrays[i].dtype.kind == "f"]
        if not targets:
            self.passed.append("numerical gradient")
            return
        alone = {}
        if len(seeded) > 1:  # each output seeded alone, the others None, as the engine calls backward
            for k in seeded:
                layer = self.new_layer()
                self.forward(layer, [a.copy() for a in arrays])
                only = [d if j == k else None for j, d in enumerate(douts)]
                alone[k] = self.backward(layer, only)

        def losses(current):
            outs = self.forward(self.new_layer(), current)
            return np.array([np.sum(outs[k].astype(np.float64) * douts[k]) for k in seeded])

        sample = np.random.default_rng(0)
        for i in targets:
            base = arrays[i]
            positions = np.arange(base.size)
            if base.size > self.max_elements:
                positions = np.sort(sample.choice(base.size, self.max_elements, replace=False))
            numerical = central_differences(lambda bumped: losses([*arrays[:i], bumped, *arrays[i + 1:]]), base,
                                            self.eps, positions).reshape(len(seeded), positions.size)
            name = self.cls.inputs[i]
            self.compare(name, base.shape, positions, np.asarray(grads[i]), numerical.sum(axis=0),
                         "with every output seeded")
            for row, k in enumerate(seeded):
                if k in alone:
                    grad = alone[k][i] if isinstance(alone[k], tuple) and len(alone[k]) > i else None
                    grad = np.zeros(base.shape) if grad is None else np.asarray(grad)
                    self.compare(name, base.shape, positions, grad, numerical[row],
                                 f"with only output {self.cls.outputs[k]!r} seeded (the others None)")
        self.passed.append("numerical gradient")

    def compare(self, name, shape, positions, backprop, numerical, how) -> None:
        __tracebackhide__ = True
        if backprop.shape != shape:
            self.fail("gradient shape", f"the gradient {how} has shape {backprop.shape}, the input has {shape}", name)
        picked = backprop.reshape(-1)[positions].astype(np.float64)
        diff = np.abs(picked - numerical)
        allowed = self.atol + self.rtol * np.maximum(np.abs(picked), np.abs(numerical))
        bad = ~(diff <= allowed)  # a NaN on either side is a disagreement, not a pass
        if not bad.any():
            return
        worst = int(np.argmax(np.where(bad, np.nan_to_num(diff - allowed, nan=np.inf), -np.inf)))
        index = tuple(int(v) for v in np.unravel_index(positions[worst], shape)) if shape else ()
        message = (f"backprop and float64 central differences (eps={self.eps:g}) disagree {how} at "
                   f"{int(bad.sum())} of {positions.size} elements; worst at index {index}: backprop "
                   f"{picked[worst]:.8g}, numerical {numerical[worst]:.8g} (|diff| {diff[worst]:.3g} > allowed "
                   f"{allowed[worst]:.3g})")
        if positions.size <= 24:
            message += f"\n  backprop:  {_numbers(picked)}\n  numerical: {_numbers(numerical)}"
        self.fail("numerical gradient", message, name)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _first_difference(now: np.ndarray, before: np.ndarray) -> str:
    if now.shape != before.shape or now.dtype != before.dtype:
        return f"was {describe(before)}, now {describe(now)}"
    equal = now == before
    if now.dtype.kind in "fc":
        equal |= np.isnan(now) & np.isnan(before)
    differ = ~equal
    index = tuple(int(v) for v in np.argwhere(differ)[0]) if differ.ndim else ()
    return (f"{int(differ.sum())} of {now.size} elements differ, first at index {index}: "
            f"was {before[index].item()!r}, now {now[index].item()!r}")


def _describe_all(values) -> str:
    return "[" + ", ".join("None" if v is None else describe(np.asarray(v)) for v in values) + "]"


def _numbers(array: np.ndarray) -> str:
    return np.array2string(np.asarray(array), precision=6, threshold=24, separator=", ").replace("\n", " ")


# -- optimizers --

#: Every optimizer check, in the order they run; a ConformanceError names one of them.
OPTIMIZER_CHECKS = (
    "optimizer schema",   # the class follows the Optimizer contract and takes its settings
    "update",             # update runs on float32 and float64 parameters of several shapes
    "grad mutation",      # update never writes into the gradient
    "param shape",        # the parameter keeps its shape and dtype (it is updated in place)
    "state shape",        # the state keeps its names, and each array its parameter's shape and dtype
    "finite",             # parameters and state stay finite
    "determinism",        # two instances given the same steps give the same numbers, bit for bit
    "descent",            # on |w|^2 / 2 a few steps with the default settings bring w closer to 0
)


@dataclass
class OptimizerReport:
    """What a passing check_optimizer() saw: the parameter after each step, by dtype."""

    optimizer: str
    params: dict[str, list[np.ndarray]]
    checks: list[str] = field(default_factory=list)


def check_optimizer(optimizer_cls, settings: Mapping[str, float] | None = None, *, steps: int = 5,
                    shape: tuple[int, ...] = (3, 4), descends: bool = True) -> OptimizerReport:
    """Run every optimizer conformance check on ``optimizer_cls``; raise ConformanceError on the first failure.

    ``settings`` override the class's defaults for every check but "descent" (which uses the defaults);
    ``descends=False`` skips "descent" for an optimizer that is not meant to minimize.
    """
    __tracebackhide__ = True
    from gradserve.plugins import Optimizer

    name = getattr(optimizer_cls, "name", None) or getattr(optimizer_cls, "__name__", repr(optimizer_cls))

    def fail(check: str, message: str, context: str = ""):
        raise ConformanceError(check, name, message, context=context)

    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, Optimizer)):
        fail("optimizer schema", f"not an Optimizer subclass: {optimizer_cls!r}")
    try:
        optimizer_cls.validate_schema()
        optimizer_cls(**dict(settings or {}))
    except SchemaError as exc:
        fail("optimizer schema", str(exc))
    rng = np.random.default_rng(_DOUT_SEED)
    report = OptimizerReport(name, {})
    for dtype in (np.float32, np.float64):
        start = rng.standard_normal(shape).astype(dtype)
        grads = [rng.standard_normal(shape).astype(dtype) for _ in range(steps)]
        first = _optimizer_steps(optimizer_cls, settings, start, grads, fail, np.dtype(dtype).name)
        second = _optimizer_steps(optimizer_cls, settings, start, grads, fail, np.dtype(dtype).name)
        for step, (a, b) in enumerate(zip(first, second), start=1):
            if not _same(a, b):
                fail("determinism", f"two instances disagree after step {step}: {_first_difference(a, b)}",
                     np.dtype(dtype).name)
        report.params[np.dtype(dtype).name] = first
    if descends:
        w = np.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape) + 0.5
        optimizer = optimizer_cls()
        state = optimizer.new_state(w)
        before = float(np.sum(w * w))
        for step in range(1, max(steps, 20) + 1):
            optimizer.update(w, w.copy(), state, step)
        if not float(np.sum(w * w)) < before:
            fail("descent", f"20 steps on |w|^2/2 with the default settings took |w|^2 from {before:.6g} to "
                            f"{float(np.sum(w * w)):.6g}")
    report.checks = [check for check in OPTIMIZER_CHECKS if descends or check != "descent"]
    return report


def _optimizer_steps(optimizer_cls, settings, start: np.ndarray, grads: list[np.ndarray], fail,
                     context: str) -> list[np.ndarray]:
    """Run the steps on a copy of ``start``, checking every step; the parameter after each."""
    optimizer = optimizer_cls(**dict(settings or {}))
    param = start.copy()
    state = optimizer.new_state(param)
    names = sorted(state)
    after = []
    for step, grad in enumerate(grads, start=1):
        grad_before = grad.copy()
        try:
            optimizer.update(param, grad, state, step)
        except Exception as exc:  # noqa: BLE001 - a plugin's failure is the finding
            fail("update", f"update raised {type(exc).__name__}: {exc}", f"{context}, step {step}")
        if not _same(grad, grad_before):
            fail("grad mutation", f"update wrote into the gradient: {_first_difference(grad, grad_before)}", context)
        if param.shape != start.shape or param.dtype != start.dtype:
            fail("param shape", f"the parameter is now {param.dtype}{list(param.shape)}, it was "
                                f"{start.dtype}{list(start.shape)}", context)
        if sorted(state) != names:
            fail("state shape", f"the state's names changed from {names} to {sorted(state)}", context)
        for key, array in state.items():
            if not isinstance(array, np.ndarray) or array.shape != start.shape or array.dtype != start.dtype:
                got = f"{array.dtype}{list(array.shape)}" if isinstance(array, np.ndarray) else type(array).__name__
                fail("state shape", f"state {key!r} is {got}; it must stay {start.dtype}{list(start.shape)}",
                     context)
        if not np.all(np.isfinite(param)) or not all(np.all(np.isfinite(a)) for a in state.values()):
            fail("finite", f"step {step} left non-finite numbers in the parameter or the state", context)
        after.append(param.copy())
    if _same(after[-1], start):
        fail("update", "the parameter did not change: update must change it in place (param -= ..., not "
                       "param = ...)", context)
    return after
