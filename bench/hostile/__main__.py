"""Run every attack module in bench/hostile and print one line per figure (exit 1 if the server gave way)."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import bench.hostile as package  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the short versions the test suite runs")
    parser.add_argument("only", nargs="*", help="module names to run (default: all)")
    args = parser.parse_args(argv)
    held = True
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or (args.only and info.name not in args.only):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for figure in module.figures(quick=args.quick):
            held &= figure.held
            print(f"{'held' if figure.held else 'GAVE WAY':8}  {info.name:10}  {figure.attack}: {figure.outcome}",
                  flush=True)
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
