"""A plugin distribution for tests: Gate holds a call in flight until the test opens a file; Tick is slow.

Installed on disk (a module and a dist-info with a `gradserve` entry point), so a test server, in this
process or a `gradserve serve` child, loads it the way it loads any plugin. A held call is then in flight
for as long as the test wants, with no sleeps or timing guesses.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

MODULE = "gsplug_gate"

_SOURCE = '''
"""Gate: x unchanged, once the file named by its `path` attribute exists."""

import os
import time
from pathlib import Path

from gradserve.plugins import Attr, Layer, hookimpl

HOLD_AT_MOST = 60.0  # a failed test must not hang the server forever


class Gate(Layer):
    """x unchanged, after touching `path`.entered and waiting until `path` exists."""

    inputs = ("x",)
    attributes = {"path": Attr("str", doc="the file whose creation opens the gate")}

    def forward(self, x):
        Path(self.path + ".entered").touch()
        until = time.monotonic() + HOLD_AT_MOST
        while not os.path.exists(self.path) and time.monotonic() < until:
            time.sleep(0.01)
        return x

    def backward(self, dout):
        return (dout,)


class Tick(Layer):
    """x unchanged, after sleeping `seconds`: a graph of many Ticks takes long without using memory."""

    inputs = ("x",)
    attributes = {"seconds": Attr("float", 0.02, "how long one call takes")}

    def forward(self, x):
        time.sleep(self.seconds)
        return x

    def backward(self, dout):
        return (dout,)


@hookimpl
def register_layers(register):
    register(Gate)
    register(Tick)
'''


def install(root: Path) -> Path:
    """Write the plugin's module and dist-info into ``root`` (a folder to put on sys.path / PYTHONPATH)."""
    (root / f"{MODULE}.py").write_text(textwrap.dedent(_SOURCE))
    info = root / f"{MODULE}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {MODULE.replace('_', '-')}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[gradserve]\n{MODULE} = {MODULE}\n")
    return root


class Gate:
    """One gate: ``path`` for the Gate node's attribute, ``entered()`` once a call reached it, ``open()``."""

    def __init__(self, folder: Path, name: str = "gate"):
        self.path = folder / name

    def entered(self) -> bool:
        return Path(f"{self.path}.entered").exists()

    def open(self) -> None:
        self.path.touch()
