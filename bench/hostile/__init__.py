"""`python -m bench.hostile`: the adversarial suite's longer versions, printing what the server withstood.

Each module here covers one kind of attack and exposes ``figures(quick: bool) -> list[Figure]``; __main__
runs every module it finds, each against servers it starts itself on 127.0.0.1 and stops again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured outcome of an attack: what was sent, what the server did, and whether that is the goal."""

    attack: str
    outcome: str
    held: bool
