"""`gradserve demo`: the chapter's numbers, the gradient check, training on digits and the pictures it names."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from gradserve.client.demo import DemoOptions, load_digits_split, train


def gradserve_command() -> list[str]:
    """The installed console script beside this interpreter, else the CLI module."""
    script = Path(sys.executable).with_name("gradserve")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gradserve.server.cli"]


def test_demo_runs_end_to_end(tmp_path):
    """A short `gradserve demo` prints the chapter's values and gradients, the check, the accuracy, and its files."""
    out = tmp_path / "pictures"
    env = dict(os.environ, COLUMNS="200")  # one line per summary, whatever the terminal
    env.pop("GRADSERVE_TARGET", None)
    done = subprocess.run(gradserve_command() + ["demo", "--epochs", "2", "--hidden", "16", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout
    assert "Every layer below runs on an embedded server" in text
    assert "from gradserve.client.book import MulLayer, AddLayer" in text
    assert "price 1100, dapple 5.5, dapple_num 220, dtax 1000" in text
    assert "price 220, dapple 2.2, dapple_num 110, dtax 200" in text
    assert "price 715, dapple 2.2, dapple_num 110, dorange 3.3, dorange_num 165, dtax 650" in text
    differences = dict(re.findall(r"│ (W1|b1|W2|b2) +│ [^│]+│ ([0-9.e+-]+) ", text))
    assert sorted(differences) == ["W1", "W2", "b1", "b2"]
    assert all(float(d) < 1e-6 for d in differences.values())
    assert re.search(r"epoch +2/2 +loss [0-9.]+ +train accuracy [0-9.]+ +test accuracy [0-9.]+", text)
    assert re.search(r"final test accuracy: 0\.\d{4}", text)
    listed = [Path(line.strip()) for line in text.split(f"pictures written to {out.resolve()}:")[1].splitlines()
              if line.strip().startswith(str(out.resolve()))]
    names = {path.name for path in listed}
    assert {"apple.dot", "apple_orange.dot", "training_graph.dot", "training.png"} <= names
    assert all(path.is_file() and path.stat().st_size > 0 for path in listed)
    assert (out / "training.png").read_bytes().startswith(b"\x89PNG")
    assert "1100" in (out / "apple.dot").read_text()
    if "apple.svg" in names:
        assert "<svg" in (out / "apple.svg").read_text()


def test_default_demo_training_reaches_95_percent(client):
    """The demo's default settings train TwoLayerNet on the digits to at least 0.95 held-out accuracy."""
    options = DemoOptions()
    net, history = train(client, load_digits_split(options.seed), options, Console(file=io.StringIO()))
    assert history.epochs == options.epochs
    assert history.test_acc[-1] >= 0.95
    assert net.dtype.name == "float32"


def test_demo_options_come_from_the_cli(monkeypatch):
    """`gradserve demo` flags fill DemoOptions, and GRADSERVE_* variables set their defaults."""
    from gradserve.server.cli import parse_args

    monkeypatch.setenv("GRADSERVE_EPOCHS", "7")
    args = parse_args(["demo", "--hidden", "40", "--optimizer", "momentum", "--lr", "0.1"])
    assert DemoOptions.from_args(args) == DemoOptions(epochs=7, hidden=40, optimizer="momentum", lr=0.1)


@pytest.mark.parametrize("name,value,says", [("GRADSERVE_PORT", "abc", "'abc' is not a valid integer"),
                                             ("GRADSERVE_MAX_MEMORY", "lots", "is not a size")])
def test_a_bad_environment_value_is_refused_like_a_bad_flag(name, value, says):
    """A GRADSERVE_* variable that does not parse ends the command with exit code 2 and a message naming it."""
    # GRADSERVE_PORT=0 (unless it is the variable under test): a value wrongly accepted binds no fixed port.
    done = subprocess.run([*gradserve_command(), "serve"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "GRADSERVE_PORT": "0", name: value})
    assert done.returncode == 2, done.stderr
    assert f"(env var: '{name}')" in done.stderr and says in done.stderr and "Traceback" not in done.stderr
