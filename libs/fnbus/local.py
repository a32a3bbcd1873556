"""The six services as local background processes (``make up`` / ``make down``).

Each service runs as ``fnbus serve <name>`` in its own session, logging to
``$FNBUS_HOME/logs/<name>.log`` with its pid in ``$FNBUS_HOME/run/<name>.pid``.
``stop`` signals only the pids recorded there, and only if they still are our
``fnbus serve`` processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fnbus.config import SERVICE_NAMES, Settings

HEALTH_TIMEOUT_S = 90.0
STOP_GRACE_S = 25.0


def _pidfile(settings: Settings, name: str) -> Path:
    return settings.home / "run" / f"{name}.pid"


def _logfile(settings: Settings, name: str) -> Path:
    return settings.home / "logs" / f"{name}.log"


def _our_pid(settings: Settings, name: str) -> int | None:
    """The recorded pid if that process is alive and is our ``fnbus serve <name>``."""
    try:
        pid = int(_pidfile(settings, name).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if b"serve" in cmdline and name.encode() in cmdline:
        return pid
    return None


def _healthy(settings: Settings, name: str) -> tuple[bool, str]:
    try:
        r = httpx.get(f"{settings.url_of(name)}/healthz", timeout=2)
        return r.status_code == 200, r.text
    except httpx.HTTPError as exc:
        return False, str(exc)


def start(settings: Settings, names: list[str]) -> int:
    (settings.home / "run").mkdir(parents=True, exist_ok=True)
    (settings.home / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for name in names:
        if _our_pid(settings, name):
            continue
        log = open(_logfile(settings, name), "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "fnbus.cli", "serve", name],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=os.environ.copy(),
        )
        _pidfile(settings, name).write_text(str(proc.pid))
    pending = set(names)
    last: dict[str, str] = {}
    while pending and time.monotonic() - started < HEALTH_TIMEOUT_S:
        for name in sorted(pending):
            if not _our_pid(settings, name):
                print(f"  {name}: exited during start; see {_logfile(settings, name)}")
                return 1
            ok, detail = _healthy(settings, name)
            last[name] = detail
            if ok:
                pending.discard(name)
                print(f"  {name:<10} healthy  {settings.url_of(name)}  "
                      f"({time.monotonic() - started:.1f} s)")
        if pending:
            time.sleep(0.3)
    if pending:
        for name in sorted(pending):
            print(f"  {name}: not healthy after {HEALTH_TIMEOUT_S:.0f} s: {last.get(name, '')[:300]}")
            print(f"    log: {_logfile(settings, name)}")
        return 1
    return 0


def stop(settings: Settings, names: list[str]) -> int:
    pids = {name: pid for name in names if (pid := _our_pid(settings, name))}
    for pid in pids.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.1)
    for name, pid in pids.items():
        if _alive(pid):
            print(f"  {name}: did not stop within {STOP_GRACE_S:.0f} s; killing")
            os.kill(pid, signal.SIGKILL)
        print(f"  {name:<10} stopped")
    for name in names:
        _pidfile(settings, name).unlink(missing_ok=True)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def status(settings: Settings, names: list[str]) -> int:
    code = 0
    for name in names:
        pid = _our_pid(settings, name)
        ok, _ = _healthy(settings, name) if pid else (False, "")
        state = "healthy" if ok else ("running, unhealthy" if pid else "stopped")
        if not ok:
            code = 1
        print(f"  {name:<10} {state:<20} {settings.url_of(name)}  pid={pid or '-'}")
    return code


def main(action: str, settings: Settings, services: list[str] | None = None) -> int:
    names = list(services) if services else list(SERVICE_NAMES)
    unknown = [n for n in names if n not in SERVICE_NAMES]
    if unknown:
        print(f"unknown service(s): {', '.join(unknown)}; choose from {', '.join(SERVICE_NAMES)}")
        return 2
    if action == "start":
        return start(settings, names)
    if action == "stop":
        return stop(settings, list(reversed(names)))
    return status(settings, names)
