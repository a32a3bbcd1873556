"""Who used the CPU during a measurement: per service, Kafka, PostgreSQL, lambda containers, load generator.

``other`` is the rest of the machine's busy time: other live processes (the
busiest are named separately) and processes that exited during the window.

Reads ``/proc`` before and after a window (Linux only). A component is a root
pid (from ``$FNBUS_HOME/run/<name>.pid``) with all its descendants; lambda
containers are the ``node``/``python`` processes under a ``containerd-shim``;
the load generator is every ``wrk`` process (counted first, so the harness's
own entry, when given as a root, does not swallow it); kernel threads (e.g.
writeback of Kafka's and PostgreSQL's files) are a component of their own. Figures are percent of one core,
so on 2 cores the total can reach 200 %.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    ticks: int  # utime + stime


@dataclass(frozen=True)
class CpuSnapshot:
    procs: dict[int, Proc]
    busy_ticks: int  # whole machine, all cores
    total_ticks: int
    wall_s: float
    irq_ticks: int = 0  # interrupts and softirqs (loopback TCP), charged to no process


def parse_stat_line(line: str) -> Proc | None:
    """One ``/proc/<pid>/stat`` line (the command may contain spaces and parentheses)."""
    try:
        left = line.index("(")
        right = line.rindex(")")
        pid = int(line[:left].strip())
        comm = line[left + 1:right]
        fields = line[right + 2:].split()
        # fields[0] is state (field 3); ppid is field 4, utime 14, stime 15.
        return Proc(pid=pid, ppid=int(fields[1]), comm=comm, ticks=int(fields[11]) + int(fields[12]))
    except (ValueError, IndexError):
        return None


def parse_proc_stat(text: str) -> tuple[int, int, int]:
    """(busy, total, irq + softirq) ticks from the aggregate ``cpu`` line of ``/proc/stat``."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]] + [0] * 8
            idle = values[3] + values[4]  # idle + iowait
            total = sum(values[:8])  # guest time is already in user
            return total - idle, total, values[5] + values[6]
    raise ValueError("no aggregate cpu line in /proc/stat")


def take(wall_s: float) -> CpuSnapshot:
    procs: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            proc = parse_stat_line((entry / "stat").read_text())
        except OSError:
            continue
        if proc is not None:
            procs[proc.pid] = proc
    busy, total, irq = parse_proc_stat(Path("/proc/stat").read_text())
    return CpuSnapshot(procs, busy, total, wall_s, irq)


def read_roots(run_dir: Path, names: list[str], replicas: bool = True) -> dict[str, tuple[int, ...]]:
    """Root pids per name from ``<name>.pid``; with ``replicas``, a scaled service's
    other processes (``<name>-2.pid`` … ``<name>-9.pid``: fnbus.local) count under its name."""
    roots: dict[str, tuple[int, ...]] = {}
    for name in names:
        files = [run_dir / f"{name}.pid"]
        if replicas:
            files += [run_dir / f"{name}-{n}.pid" for n in range(2, 10)]
        pids = []
        for file in files:
            try:
                pids.append(int(file.read_text().strip()))
            except (OSError, ValueError):
                continue
        if pids:
            roots[name] = tuple(pids)
    return roots


def _descendants(procs: Mapping[int, Proc], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    out = {root}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in out:
                out.add(child)
                stack.append(child)
    return out


def _under_shim(procs: Mapping[int, Proc], pid: int) -> bool:
    seen = 0
    while pid in procs and seen < 64:
        if procs[pid].comm.startswith("containerd-shim"):
            return True
        pid = procs[pid].ppid
        seen += 1
    return False


def usage(before: CpuSnapshot, after: CpuSnapshot, roots: Mapping[str, int | tuple[int, ...]],
          lambda_comms: tuple[str, ...] = ("node", "python", "python3")) -> dict[str, float]:
    """Percent of one core per component over the window, plus ``other`` and ``idle``."""
    return split(before, after, roots, lambda_comms)[0]


def split(before: CpuSnapshot, after: CpuSnapshot, roots: Mapping[str, int | tuple[int, ...]],
          lambda_comms: tuple[str, ...] = ("node", "python", "python3"), top_other: int = 5
          ) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """:func:`usage` and the busiest processes counted as ``other`` (by command name)."""
    wall = after.wall_s - before.wall_s
    if wall <= 0:
        return {}, []

    def delta(pids: set[int]) -> int:
        """Ticks used in the window; a process that started meanwhile counts from zero."""
        total = 0
        for p in pids:
            now = after.procs.get(p)
            if now is None:
                continue
            then = before.procs.get(p)
            start = then.ticks if then is not None and then.comm == now.comm and then.ticks <= now.ticks else 0
            total += now.ticks - start
        return total

    pct = 100.0 / (wall * CLK_TCK)
    out: dict[str, float] = {}
    loadgen = {p.pid for p in after.procs.values() if p.comm == "wrk"}
    out["wrk"] = round(delta(loadgen) * pct, 1)
    claimed: set[int] = set(loadgen)
    for name, root in roots.items():
        pids = set().union(*(_descendants(after.procs, r)
                             for r in ((root,) if isinstance(root, int) else root))) - claimed
        claimed |= pids
        out[name] = round(delta(pids) * pct, 1)
    containers = {p.pid for p in after.procs.values()
                  if p.comm in lambda_comms and p.pid not in claimed and _under_shim(after.procs, p.pid)}
    claimed |= containers
    out["lambda containers"] = round(delta(containers) * pct, 1)
    # Kernel threads (children of kthreadd, pid 2): writeback of Kafka's and PostgreSQL's files, RCU, …
    kernel = {p.pid for p in after.procs.values() if (p.pid == 2 or p.ppid == 2) and p.pid not in claimed}
    claimed |= kernel
    out["kernel threads"] = round(delta(kernel) * pct, 1)
    busy = (after.busy_ticks - before.busy_ticks) * pct
    total = (after.total_ticks - before.total_ticks) * pct
    out["irq/softirq"] = round(max(0, after.irq_ticks - before.irq_ticks) * pct, 1)
    known = sum(out.values())
    # Everything else: other live processes (named in the second result) and processes
    # that exited during the window (not visible at the end).
    out["other"] = round(max(0.0, busy - known), 1)
    out["idle"] = round(max(0.0, total - busy), 1)
    by_comm: dict[str, float] = {}
    for pid in after.procs.keys() - claimed:
        ticks = delta({pid})
        if ticks:
            comm = after.procs[pid].comm
            by_comm[comm] = by_comm.get(comm, 0.0) + ticks * pct
    others = sorted(((c, round(v, 1)) for c, v in by_comm.items()), key=lambda cv: -cv[1])[:top_other]
    return out, others


def describe(shares: Mapping[str, object], top: int = 6) -> str:
    """``gateway 97%, invoker 41%, …, idle 3%`` (largest first, idle last; non-numbers ignored)."""
    numbers = {k: float(v) for k, v in shares.items()
               if isinstance(v, int | float) and not k.startswith("other_processes")}
    items = sorted(((k, v) for k, v in numbers.items() if k != "idle" and v >= 1), key=lambda kv: -kv[1])[:top]
    text = ", ".join(f"{k} {v:.0f}%" for k, v in items)
    if "idle" in numbers:
        text += f", idle {numbers['idle']:.0f}%"
    return text


def per_call_ms(shares: Mapping[str, object], calls_per_s: float) -> dict[str, float]:
    """Core-milliseconds per call of each component, from its percent of one core at a rate.

    ``idle`` is left out; ``total`` is the sum of the rest (the whole machine's busy time
    per call, load generator included).
    """
    if calls_per_s <= 0:
        return {}
    out = {k: round(float(v) * 10.0 / calls_per_s, 3) for k, v in shares.items()
           if isinstance(v, int | float) and k != "idle" and not k.startswith("other_processes")}
    out["total"] = round(sum(out.values()), 3)
    return out


def ceiling_per_s(per_call: Mapping[str, float], cores: int, without: tuple[str, ...] = ("wrk",)) -> float | None:
    """Calls per second the machine could carry at that CPU cost per call, all cores busy.

    The load generator (``without``) is not part of the platform: it is taken out.
    """
    cost = per_call.get("total", 0.0) - sum(per_call.get(k, 0.0) for k in without)
    return cores * 1000.0 / cost if cost > 0 else None
