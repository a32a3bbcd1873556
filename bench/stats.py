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


# --------------------------------------------------------------------------- repeated runs


@dataclass(frozen=True)
class Spread:
    """A headline figure measured in several runs: the median and the range."""

    n: int
    median: float
    min: float
    max: float

    def to_dict(self, digits: int = 3) -> dict[str, float | int]:
        return {"n": self.n, "median": round(self.median, digits), "min": round(self.min, digits),
                "max": round(self.max, digits)}

    def describe(self, fmt: str = "{:.2f}") -> str:
        """``median (min–max, n runs)``, the form every headline figure is quoted in."""
        return f"{fmt.format(self.median)} ({fmt.format(self.min)}–{fmt.format(self.max)}, {self.n} runs)"


def spread(values: Iterable[float]) -> Spread:
    data = [float(v) for v in values]
    if not data:
        raise ValueError("spread of no runs")
    return Spread(n=len(data), median=median(data), min=min(data), max=max(data))


def spread_figure(key: str, section: str, label: str, values: Sequence[float], unit: str, tool: str,
                  target: Target | None = None, note: str = "", details: dict[str, Any] | None = None) -> Figure:
    """A figure whose value is the median of ``values`` (one per run), min and max in ``details``."""
    extra = dict(details or {})
    if not values:
        return Figure(key, section, label, None, unit, tool, target, note, extra)
    sp = spread(values)
    extra["spread"] = sp.to_dict()
    extra["runs_values"] = [round(v, 3) for v in values]
    lead = f"median of {sp.n} runs (min {format_number(sp.min, unit)}, max {format_number(sp.max, unit)})"
    return Figure(key, section, label, sp.median, unit, tool, target, f"{lead}; {note}" if note else lead, extra)


def chunk_percentiles(samples: Sequence[float], runs: int, q: float) -> list[float]:
    """The ``q``-th percentile of each of ``runs`` consecutive, equal parts of one sequence of samples
    (one long sequential measurement read as ``runs`` runs; a remainder joins the last part)."""
    if runs < 1 or len(samples) < runs:
        raise ValueError(f"cannot split {len(samples)} samples into {runs} runs")
    size = len(samples) // runs
    parts = [samples[i * size:(i + 1) * size] for i in range(runs - 1)] + [samples[(runs - 1) * size:]]
    return [percentile(part, q) for part in parts]


# --------------------------------------------------------------------------- per-hop breakdown

# The gateway's ``Server-Timing`` on sync invoke answers, in path order (ms).
HOPS = ("produce", "queue", "dispatch", "runner", "reply")
TIMING_TOTAL = "total"
REMAINDER = "client"  # client-observed minus ``total``: the HTTP client and loopback


def parse_server_timing(header: str | None) -> dict[str, float]:
    """``name;dur=1.2, other;desc="x";dur=0.3`` → ``{"name": 1.2, "other": 0.3}``.

    Metrics without a parsable ``dur`` are left out; so are repeated names after
    the first (RFC: the first wins). Never raises: a malformed header yields what
    could be read.
    """
    out: dict[str, float] = {}
    if not header:
        return out
    for metric in header.split(","):
        parts = [p.strip() for p in metric.split(";")]
        name = parts[0]
        if not name or name in out:
            continue
        for param in parts[1:]:
            key, sep, raw = param.partition("=")
            if sep and key.strip().lower() == "dur":
                try:
                    value = float(raw.strip().strip('"'))
                except ValueError:
                    break
                if math.isfinite(value):
                    out[name] = value
                break
    return out


def hop_breakdown(samples: Sequence[tuple[float, dict[str, float]]]) -> dict[str, Any]:
    """Medians per hop from (client-observed ms, parsed Server-Timing) pairs.

    A hop appears only when some answer carried it (its ``n`` says how many);
    ``client`` (the remainder) only where ``total`` was present. ``sum_of_hops``
    is the sum of the hop medians, to be read against the ``total`` median.
    """
    names = [n for n in (TIMING_TOTAL, *HOPS) if any(n in t for _, t in samples)]
    names += sorted({n for _, t in samples for n in t} - set(names) - {REMAINDER})
    hops: dict[str, dict[str, float | int]] = {}
    for name in names:
        values = [t[name] for _, t in samples if name in t]
        hops[name] = {"p50": round(median(values), 3), "p99": round(percentile(values, 99), 3), "n": len(values)}
    rest = [client - t[TIMING_TOTAL] for client, t in samples if TIMING_TOTAL in t]
    if rest:
        hops[REMAINDER] = {"p50": round(median(rest), 3), "p99": round(percentile(rest, 99), 3), "n": len(rest)}
    client_all = [client for client, _ in samples]
    return {
        "samples": len(samples),
        "with_header": sum(1 for _, t in samples if t),
        "client_p50": round(median(client_all), 3) if client_all else None,
        "hops": hops,
        "sum_of_hops_p50": round(sum(float(hops[h]["p50"]) for h in HOPS if h in hops), 3),
    }


# --------------------------------------------------------------------------- machine CPU


CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def proc_stat_ticks(text: str) -> dict[str, int]:
    """The aggregate ``cpu`` line of ``/proc/stat`` as named tick counters."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]] + [0] * len(CPU_FIELDS)
            return dict(zip(CPU_FIELDS, values[: len(CPU_FIELDS)], strict=True))
    raise ValueError("no aggregate cpu line in /proc/stat")


def cpu_split(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Percent of the machine's time (all cores) between two ``proc_stat_ticks`` readings.

    ``user`` includes nice; ``system`` includes irq and softirq (loopback TCP);
    ``idle`` includes iowait.
    """
    delta = {k: max(0, after.get(k, 0) - before.get(k, 0)) for k in CPU_FIELDS}
    total = sum(delta.values())
    if total == 0:
        return {"user": 0.0, "system": 0.0, "idle": 100.0, "steal": 0.0}

    def pct(*keys: str) -> float:
        return round(100 * sum(delta[k] for k in keys) / total, 1)

    return {"user": pct("user", "nice"), "system": pct("system", "irq", "softirq"),
            "idle": pct("idle", "iowait"), "steal": pct("steal")}


def result_file_name(date: str, commit: str | None, *, dirty: bool = False, mode: str = "full") -> str:
    """``2026-12-04T1912Z-4edfc45.json`` (``-dirty`` when the tree had changes, ``-quick`` for --quick)."""
    stem = f"{date}-{commit or 'nocommit'}"
    if dirty:
        stem += "-dirty"
    if mode != "full":
        stem += f"-{mode}"
    return f"{stem}.json"


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
