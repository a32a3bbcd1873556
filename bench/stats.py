"""Pure helpers of the harness: percentiles, figures with targets, the table and the JSON.

Nothing here does I/O, so ``tests/unit/test_bench_stats.py`` covers all of it.

A :class:`Figure` is one reported number: its value and unit, the tool that
produced it, and optionally a :class:`Target` that decides pass or fail.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

REPORT_SCHEMA = 1


# --------------------------------------------------------------------------- statistics


def percentile(samples: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation between closest ranks.

    This is the "inclusive" definition (numpy's default): p0 is the minimum,
    p100 the maximum, and p50 of an even-sized sample is the mean of the two
    middle values.
    """
    values = sorted(float(v) for v in samples)
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0 <= q <= 100 or math.isnan(q):
        raise ValueError(f"percentile must be within 0..100, got {q}")
    rank = (len(values) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return values[low]
    return values[low] + (values[high] - values[low]) * (rank - low)


def median(samples: Iterable[float]) -> float:
    return percentile(samples, 50)


@dataclass(frozen=True)
class Summary:
    """Order statistics of one sample (same unit as the samples); ``min`` None when a tool omits it."""

    n: int
    min: float | None
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

    def to_dict(self, digits: int = 3) -> dict[str, float | int | None]:
        return {"n": self.n, "min": None if self.min is None else round(self.min, digits),
                "mean": round(self.mean, digits), "p50": round(self.p50, digits), "p95": round(self.p95, digits),
                "p99": round(self.p99, digits), "max": round(self.max, digits)}


def summarize(samples: Sequence[float]) -> Summary:
    if not samples:
        raise ValueError("summary of an empty sample")
    values = sorted(float(v) for v in samples)
    return Summary(n=len(values), min=values[0], mean=sum(values) / len(values),
                   p50=percentile(values, 50), p95=percentile(values, 95),
                   p99=percentile(values, 99), max=values[-1])


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Target:
    """``value <op> limit`` must hold for the figure to pass; op is ``<=`` or ``>=``."""

    op: str
    limit: float

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">="):
            raise ValueError(f"target operator must be <= or >=, got {self.op!r}")

    def met_by(self, value: float) -> bool:
        return value <= self.limit if self.op == "<=" else value >= self.limit


def at_most(limit: float) -> Target:
    return Target("<=", limit)


def at_least(limit: float) -> Target:
    return Target(">=", limit)


PASS = "pass"
FAIL = "FAIL"
NO_TARGET = "-"
ERROR = "error"


@dataclass
class Figure:
    """One reported number. ``value`` is None when the measurement failed (``note`` says why)."""

    key: str
    section: str
    label: str
    value: float | None
    unit: str
    tool: str
    target: Target | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.value is None:
            return ERROR
        if self.target is None:
            return NO_TARGET
        return PASS if self.target.met_by(self.value) else FAIL

    def to_dict(self) -> dict[str, Any]:
        status = self.status
        return {
            "key": self.key,
            "section": self.section,
            "label": self.label,
            "value": None if self.value is None else round(self.value, 3),
            "unit": self.unit,
            "target": None if self.target is None else {"op": self.target.op, "value": self.target.limit},
            "pass": {PASS: True, FAIL: False}.get(status),
            "status": {PASS: "pass", FAIL: "fail", NO_TARGET: "no-target", ERROR: "error"}[status],
            "tool": self.tool,
            "note": self.note,
            "details": self.details,
        }


def summary_figures(key: str, section: str, label: str, summary: Summary | None, unit: str, tool: str,
                    *, targets: dict[str, Target] | None = None, note: str = "",
                    which: Sequence[str] = ("p50", "p95", "p99"),
                    details: dict[str, Any] | None = None) -> list[Figure]:
    """One figure per percentile of ``summary`` (``key_p50`` …); the first carries the summary."""
    targets = targets or {}
    out: list[Figure] = []
    for i, name in enumerate(which):
        value = None if summary is None else float(getattr(summary, name))
        extra: dict[str, Any] = {}
        if i == 0:
            extra = dict(details or {})
            if summary is not None:
                extra["summary"] = summary.to_dict()
        out.append(Figure(key=f"{key}_{name}", section=section, label=f"{label} {name}", value=value,
                          unit=unit, tool=tool, target=targets.get(name), note=note if i == 0 else "",
                          details=extra))
    return out


# --------------------------------------------------------------------------- formatting


def format_number(value: float | None, unit: str) -> str:
    """A value with its unit, rounded for reading (the JSON keeps the precision)."""
    if value is None:
        return "—"
    if unit == "ms":
        digits = 2 if abs(value) < 10 else 1 if abs(value) < 1000 else 0
        return f"{value:.{digits}f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "req/s":
        return f"{value:.0f} req/s"
    if unit == "bool":
        return "yes" if value else "no"
    if float(value).is_integer():
        return f"{value:.0f} {unit}".strip()
    return f"{value:.2f} {unit}".strip()


def format_target(target: Target | None, unit: str) -> str:
    if target is None:
        return ""
    return f"{'≤' if target.op == '<=' else '≥'} {format_number(target.limit, unit)}"


def format_table(figures: Sequence[Figure], *, max_note: int = 400) -> str:
    """A fixed-width table grouped by section, in the figures' order."""
    headers = ("figure", "value", "target", "result", "tool")
    rows: list[tuple[str, ...] | str] = []
    section: str | None = None
    for fig in figures:
        if fig.section != section:
            section = fig.section
            rows.append(section)
        rows.append((fig.label, format_number(fig.value, fig.unit), format_target(fig.target, fig.unit),
                     fig.status, fig.tool))
    cells = [r for r in rows if isinstance(r, tuple)]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [values[0].ljust(widths[0]), values[1].rjust(widths[1]), values[2].ljust(widths[2]),
                 values[3].ljust(widths[3]), values[4]]
        return "  ".join(parts).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    for row in rows:
        if isinstance(row, str):
            out.append(f"[{row}]")
        else:
            out.append(line(row))
    notes = [(f.label, f.note) for f in figures if f.note]
    if notes:
        out.append("")
        out.append("notes:")
        for label, note in notes:
            text = note if len(note) <= max_note else note[: max_note - 1] + "…"
            out.append(f"  {label}: {text}")
    return "\n".join(out)


def verdict(figures: Sequence[Figure]) -> dict[str, int]:
    counts = {"pass": 0, "fail": 0, "no_target": 0, "error": 0}
    for fig in figures:
        counts[{PASS: "pass", FAIL: "fail", NO_TARGET: "no_target", ERROR: "error"}[fig.status]] += 1
    return counts


def build_report(figures: Sequence[Figure], *, machine: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: machine, run options and timing, every figure, and the tally."""
    return {
        "schema": REPORT_SCHEMA,
        "machine": machine,
        "run": run,
        "figures": [f.to_dict() for f in figures],
        "summary": verdict(figures),
    }
