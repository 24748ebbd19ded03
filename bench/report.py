"""A benchmark row (measured, baseline, ratio against a goal) and the table that prints them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    """One case: ``measured`` and ``baseline`` in ``unit``; the goal bounds measured / baseline."""

    case: str
    unit: str
    measured: float
    baseline: float
    goal: str = ""  # "<= 1.3", ">= 0.75", or "" for a row that only informs
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.measured / self.baseline if self.baseline else float("inf")

    @property
    def met(self) -> bool | None:
        if not self.goal:
            return None
        op, bound = self.goal.split()
        return self.ratio <= float(bound) if op == "<=" else self.ratio >= float(bound)


@dataclass
class Skipped:
    case: str
    reason: str


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def table(rows: list) -> str:
    header = ("case", "measured", "baseline", "ratio", "goal", "met")
    lines = [header]
    for row in rows:
        if isinstance(row, Skipped):
            lines.append((row.case, "skipped", row.reason, "", "", ""))
            continue
        met = {True: "yes", False: "NO", None: ""}[row.met]
        lines.append((row.case, f"{_num(row.measured)} {row.unit}", f"{_num(row.baseline)} {row.unit}",
                      f"{row.ratio:.2f}", row.goal, met))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {row.case}: {row.note}" for row in rows if getattr(row, "note", "")]
    return "\n".join(text + (["", "notes:"] + notes if notes else []))
