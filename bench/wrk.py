"""Throughput with ``wrk`` (Debian package ``wrk``): locate or install it, script it, parse it.

The Lua script sends the invocation body and the Authorization header (read
from the environment, so the key is never written to disk) and prints one
``BENCH_JSON {…}`` line from wrk's ``done`` hook with exact counts and latency
percentiles in microseconds. :func:`parse_output` turns that line into a
:class:`WrkResult`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AUTH_ENV = "FNBUS_BENCH_AUTHORIZATION"
MARKER = "BENCH_JSON "

LUA_SCRIPT = r"""
-- fnbus bench: POST an invocation body with the account's key (from the environment).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("%(auth_env)s")
wrk.body = [==[%(body)s]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(marker)s{"requests":%%d,"duration_us":%%d,"bytes":%%d,' ..
    '"connect_errors":%%d,"read_errors":%%d,"write_errors":%%d,"status_errors":%%d,"timeouts":%%d,' ..
    '"lat_mean_us":%%.1f,"lat_p50_us":%%d,"lat_p95_us":%%d,"lat_p99_us":%%d,"lat_max_us":%%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class WrkResult:
    connections: int
    requests: int
    duration_s: float
    connect_errors: int
    read_errors: int
    write_errors: int
    status_errors: int  # non-2xx/3xx answers
    timeouts: int
    lat_mean_ms: float
    lat_p50_ms: float
    lat_p95_ms: float
    lat_p99_ms: float
    lat_max_ms: float

    @property
    def ok_requests(self) -> int:
        """Requests answered with 2xx/3xx (wrk counts a non-2xx answer as a request too)."""
        return max(0, self.requests - self.status_errors)

    @property
    def ok_per_s(self) -> float:
        return self.ok_requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.status_errors + self.timeouts

    def to_dict(self) -> dict[str, Any]:
        return {"connections": self.connections, "requests": self.requests,
                "ok_requests": self.ok_requests, "duration_s": round(self.duration_s, 3),
                "ok_per_s": round(self.ok_per_s, 1), "connect_errors": self.connect_errors,
                "read_errors": self.read_errors, "write_errors": self.write_errors,
                "status_errors": self.status_errors, "timeouts": self.timeouts,
                "latency_ms": {"mean": round(self.lat_mean_ms, 2), "p50": round(self.lat_p50_ms, 2),
                               "p95": round(self.lat_p95_ms, 2), "p99": round(self.lat_p99_ms, 2),
                               "max": round(self.lat_max_ms, 2)}}


class WrkOutputError(ValueError):
    pass


def lua_script(body: str) -> str:
    if "]==]" in body:
        raise ValueError("body must not contain the Lua long-bracket terminator ]==]")
    return LUA_SCRIPT % {"auth_env": AUTH_ENV, "body": body, "marker": MARKER}


def parse_output(stdout: str, connections: int) -> WrkResult:
    """Read the ``BENCH_JSON`` line the script's ``done`` hook printed."""
    for raw in reversed(stdout.splitlines()):
        line = raw.strip()
        if line.startswith(MARKER):
            try:
                data = json.loads(line[len(MARKER):])
            except ValueError as exc:
                raise WrkOutputError(f"malformed wrk summary: {line!r}") from exc
            try:
                return WrkResult(
                    connections=connections, requests=int(data["requests"]),
                    duration_s=int(data["duration_us"]) / 1e6,
                    connect_errors=int(data["connect_errors"]), read_errors=int(data["read_errors"]),
                    write_errors=int(data["write_errors"]), status_errors=int(data["status_errors"]),
                    timeouts=int(data["timeouts"]), lat_mean_ms=float(data["lat_mean_us"]) / 1000,
                    lat_p50_ms=int(data["lat_p50_us"]) / 1000, lat_p95_ms=int(data["lat_p95_us"]) / 1000,
                    lat_p99_ms=int(data["lat_p99_us"]) / 1000, lat_max_ms=int(data["lat_max_us"]) / 1000)
            except (KeyError, TypeError, ValueError) as exc:
                raise WrkOutputError(f"incomplete wrk summary: {line!r}") from exc
    raise WrkOutputError("wrk printed no BENCH_JSON summary line")


def find_or_install(allow_install: bool, log: list[str]) -> str | None:
    """Path of ``wrk``; installs the Debian package when missing and allowed. None: use httpx."""
    found = shutil.which("wrk")
    if found or not allow_install:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log.append("wrk is missing and apt-get is not usable here (not root or no apt)")
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in (["apt-get", "install", "-y", "-q", "wrk"],
                    ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "wrk"]):
        try:
            proc = subprocess.run(attempt, env=env, capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.append(f"{' '.join(attempt)}: {exc}")
            return None
        if attempt[1] == "install" and proc.returncode == 0:
            break
        if attempt[1] == "update" and proc.returncode != 0:
            log.append(f"apt-get update failed: {proc.stderr.strip()[-300:]}")
            return None
    found = shutil.which("wrk")
    if not found:
        log.append("apt-get could not install wrk")
    return found


def run(wrk: str, url: str, authorization: str, body: str, *, connections: int, duration_s: int,
        threads: int = 2, timeout_s: int = 30) -> WrkResult:
    """One wrk run (blocking). Raises :class:`WrkOutputError` when wrk fails."""
    threads = max(1, min(threads, connections))
    with tempfile.TemporaryDirectory(prefix="fnbus-bench-wrk-") as tmp:
        script = Path(tmp) / "invoke.lua"
        script.write_text(lua_script(body))
        env = {**os.environ, AUTH_ENV: authorization}
        argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", f"--timeout={timeout_s}s",
                "-s", str(script), url]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration_s + timeout_s + 30,
                              check=False)
    if proc.returncode != 0:
        raise WrkOutputError(f"wrk exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return parse_output(proc.stdout, connections)
