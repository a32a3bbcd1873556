"""The six services as local background processes (``make up`` / ``make down``).

Each process runs ``fnbus serve <service>`` in its own session, logging to
``$FNBUS_HOME/logs/<name>.log`` with its pid in ``$FNBUS_HOME/run/<name>.pid``.
``stop`` signals only the pids recorded there, and only if they still are our
``fnbus serve`` processes.

Scale-out (docs/scaling.md): ``FNBUS_INVOKERS`` and ``FNBUS_GATEWAYS`` (``make up
INVOKERS=3 GATEWAYS=2``) run several replicas of those two services. :func:`plan`
says what runs; its contract:

1. Replica 1 keeps the service's plain name (``invoker``, ``gateway``: the pid
   file and log the single-process stack always had); replica n ≥ 2 is
   ``invoker-n``. The other four services run once.
2. Invoker and gateway replicas carry a stable instance id on their command line,
   ``invoker-1`` … (prefixed with ``FNBUS_INSTANCE_ID`` and a dash when that is
   set, so private stacks on the same engine never share a container label): the
   same replica gets the same id after every restart, which the invoker's
   container reclaim and its Kafka group membership rely on. Every gateway has its
   own id and therefore its own reply topic.
3. Invoker replica n serves its HTTP (health, ``/internal/pool``, ``/metrics``) on
   ``invoker_port + (n-1) * replica_port_step``; all replicas join one consumer
   group, which spreads the invocation topic's partitions over them.
4. One gateway binds ``gateway_port`` as always. Several gateways all bind it
   with SO_REUSEPORT (the kernel spreads connections over them) and each also
   listens on ``gateway_port + n * replica_port_step``, where its ``/healthz``
   and ``/metrics`` answer for that replica alone.
5. ``start`` keeps a replica that already runs with the same command line,
   restarts one whose command line changed (a new layout) and stops replicas
   beyond the wanted count; ``stop`` and ``status`` find every replica from the
   pid files, whatever the counts say now.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from fnbus.config import SERVICE_NAMES, Settings

#: Children started by this process, by pid: kept so that a long-lived caller (a test, the
#: bench) reaps them on stop instead of leaving zombies (the CLI exits right after start).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

HEALTH_TIMEOUT_S = 90.0
STOP_GRACE_S = 25.0
#: Services that run as several replicas (the others hold leases or own a single job).
SCALED_SERVICES = ("invoker", "gateway")


@dataclass(frozen=True)
class Replica:
    """One process of ``fnbus local``."""

    name: str  # pid file and log name: "invoker", "invoker-2"
    service: str
    port: int  # its own port: /healthz here answers for this process alone
    instance_id: str | None = None  # on the command line; None: the service's default
    shared_port: int | None = None  # bound with SO_REUSEPORT, shared with the other replicas

    def args(self) -> list[str]:
        """The command line after the interpreter (compared with the running one)."""
        argv = ["-m", "fnbus.cli", "serve", self.service]
        if self.instance_id is None:
            return argv  # unchanged from the single-process stack: running ones are kept
        argv += ["--port", str(self.port), "--instance-id", self.instance_id]
        if self.shared_port is not None:
            argv += ["--shared-port", str(self.shared_port)]
        return argv


def replica_name(service: str, n: int) -> str:
    return service if n == 1 else f"{service}-{n}"


def _instance_id(settings: Settings, service: str, n: int) -> str:
    prefix = f"{settings.instance_id}-" if settings.instance_id else ""
    return f"{prefix}{service}-{n}"


def plan(settings: Settings, names: Iterable[str]) -> list[Replica]:
    """Every process that ``names`` stand for, in start order (see the module docstring)."""
    step = settings.replica_port_step
    out: list[Replica] = []
    for service in names:
        if service == "invoker":
            out += [Replica(replica_name(service, n), service,
                            settings.invoker_port + (n - 1) * step,
                            _instance_id(settings, service, n))
                    for n in range(1, settings.invokers + 1)]
        elif service == "gateway" and settings.gateways == 1:
            out.append(Replica(service, service, settings.gateway_port,
                               _instance_id(settings, service, 1)))
        elif service == "gateway":
            out += [Replica(replica_name(service, n), service,
                            settings.gateway_port + n * step,
                            _instance_id(settings, service, n), shared_port=settings.gateway_port)
                    for n in range(1, settings.gateways + 1)]
        else:
            out.append(Replica(service, service, settings.port_of(service)))
    return out


def port_clashes(replicas: Iterable[Replica]) -> list[str]:
    """Ports that two processes would both bind without sharing (should be empty)."""
    owners: dict[int, list[str]] = {}
    shared: dict[int, set[str]] = {}
    for r in replicas:
        owners.setdefault(r.port, []).append(r.name)
        if r.shared_port is not None:
            shared.setdefault(r.shared_port, set()).add(r.service)
    clashes = [f"port {port}: {', '.join(names)}" for port, names in sorted(owners.items())
               if len(names) > 1]
    for port, services in sorted(shared.items()):
        if port in owners or len(services) > 1:
            clashes.append(f"port {port}: shared by {', '.join(sorted(services))} "
                           f"and owned by {', '.join(owners.get(port, []))}")
    return clashes


#: Longest path a unix socket can be bound or connected at (sun_path, 108 bytes with NUL).
UNIX_PATH_MAX = 107
#: What fnbus.sandbox adds under an invoker's socket directory: "/fnbus-<16 hex>/runner.sock".
RUNNER_SOCKET_SUFFIX_LEN = len("/fnbus-0123456789abcdef/runner.sock")


def socket_paths_too_long(settings: Settings) -> list[str]:
    """Invoker ids whose runner sockets would not fit a unix socket path (should be empty).

    The runner binds ``<sockets>/<instance id>/<container>/runner.sock``; past 107 bytes
    the invoker cannot connect, and every container "does not come up".
    """
    return [r.instance_id for r in plan(settings, ["invoker"]) if r.instance_id and len(
        str(settings.sockets_path() / r.instance_id)) + RUNNER_SOCKET_SUFFIX_LEN > UNIX_PATH_MAX]


def replica_ports(settings: Settings) -> set[int]:
    """Every port the local stack listens on (for policies that refuse the platform's ports)."""
    replicas = plan(settings, SERVICE_NAMES)
    return {r.port for r in replicas} | {r.shared_port for r in replicas if r.shared_port}


# -- pid files and processes ----------------------------------------------------------------
def _pidfile(settings: Settings, name: str) -> Path:
    return settings.home / "run" / f"{name}.pid"


def _logfile(settings: Settings, name: str) -> Path:
    return settings.home / "logs" / f"{name}.log"


def recorded(settings: Settings, service: str) -> list[str]:
    """Names of ``service``'s replicas that have a pid file, replica 1 first."""
    pattern = re.compile(rf"{re.escape(service)}(?:-(\d+))?\.pid")
    found: list[tuple[int, str]] = []
    run = settings.home / "run"
    for path in run.iterdir() if run.is_dir() else ():
        if m := pattern.fullmatch(path.name):
            found.append((int(m.group(1) or 1), path.name[:-4]))
    return [name for _, name in sorted(found)]


def _service_of(name: str) -> str:
    return re.sub(r"-\d+$", "", name)


def _running(settings: Settings, name: str) -> tuple[int, list[str]] | None:
    """(pid, command line) if the recorded process is alive and is our ``fnbus serve``."""
    try:
        pid = int(_pidfile(settings, name).read_text().strip())
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    cmdline = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    if "serve" in cmdline and _service_of(name) in cmdline and _alive(pid):
        return pid, cmdline
    return None


def _our_pid(settings: Settings, name: str) -> int | None:
    found = _running(settings, name)
    return found[0] if found else None


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


def _url(settings: Settings, port: int) -> str:
    return f"http://{settings.bind_host}:{port}"


def _healthy(settings: Settings, port: int) -> tuple[bool, str]:
    try:
        r = httpx.get(f"{_url(settings, port)}/healthz", timeout=2)
        return r.status_code == 200, r.text
    except httpx.HTTPError as exc:
        return False, str(exc)


# -- actions ----------------------------------------------------------------------------------
def start(settings: Settings, names: list[str], env: Mapping[str, str] | None = None) -> int:
    """Start what is not running yet and wait until each process answers /healthz."""
    (settings.home / "run").mkdir(parents=True, exist_ok=True)
    (settings.home / "logs").mkdir(parents=True, exist_ok=True)
    wanted = plan(settings, names)
    wanted_names = {r.name for r in wanted}
    # A new layout first frees what it needs: surplus replicas and changed command lines
    # (a single gateway holds the port without SO_REUSEPORT).
    outdated = [n for service in names if service in SCALED_SERVICES
                for n in recorded(settings, service) if n not in wanted_names]
    for r in wanted:
        found = _running(settings, r.name)
        if found and found[1][1:] != r.args():
            outdated.append(r.name)
    if outdated:
        print(f"  restarting for the new layout: {', '.join(outdated)}")
        _stop_processes(settings, outdated)
    started = time.monotonic()
    child_env = dict(os.environ if env is None else env)
    for r in wanted:
        if _our_pid(settings, r.name):
            continue
        log = open(_logfile(settings, r.name), "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [sys.executable, *r.args()],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=child_env,
        )
        log.close()
        _CHILDREN[proc.pid] = proc
        _pidfile(settings, r.name).write_text(str(proc.pid))
    pending = {r.name: r for r in wanted}
    last: dict[str, str] = {}
    while pending and time.monotonic() - started < HEALTH_TIMEOUT_S:
        for name in sorted(pending):
            r = pending[name]
            if not _our_pid(settings, name):
                print(f"  {name}: exited during start; see {_logfile(settings, name)}")
                return 1
            ok, detail = _healthy(settings, r.port)
            last[name] = detail
            if ok:
                del pending[name]
                print(f"  {name:<11} healthy  {_describe(settings, r)}  "
                      f"({time.monotonic() - started:.1f} s)")
        if pending:
            time.sleep(0.3)
    if pending:
        for name in sorted(pending):
            print(f"  {name}: not healthy after {HEALTH_TIMEOUT_S:.0f} s: {last.get(name, '')[:300]}")
            print(f"    log: {_logfile(settings, name)}")
        return 1
    return 0


def _describe(settings: Settings, r: Replica) -> str:
    text = _url(settings, r.port)
    if r.shared_port is not None:
        text = f"{_url(settings, r.shared_port)} (shared; own {text})"
    if r.instance_id:
        text += f"  id={r.instance_id}"
    return text


def stop(settings: Settings, names: list[str]) -> int:
    """Stop the named processes; a service name stands for all its recorded replicas."""
    targets: list[str] = []
    for name in names:
        for found in (recorded(settings, name) if name in SCALED_SERVICES else [name]):
            if found not in targets:
                targets.append(found)
    return _stop_processes(settings, targets)


def _stop_processes(settings: Settings, targets: list[str]) -> int:
    """SIGTERM (they drain), SIGKILL after the grace; exactly these names."""
    pids = {name: pid for name in targets if (pid := _our_pid(settings, name))}
    for pid in pids.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.1)
    for name, pid in pids.items():
        if _alive(pid):
            print(f"  {name}: did not stop within {STOP_GRACE_S:.0f} s; killing")
            os.kill(pid, signal.SIGKILL)
        print(f"  {name:<11} stopped")
        if (child := _CHILDREN.pop(pid, None)) is not None:
            child.wait()
    for name in targets:
        _pidfile(settings, name).unlink(missing_ok=True)
    return 0


def _from_cmdline(name: str, cmdline: list[str]) -> Replica | None:
    """The replica a running ``fnbus serve`` command line describes (for ``status``)."""
    def value(flag: str) -> str | None:
        return cmdline[cmdline.index(flag) + 1] if flag in cmdline[:-1] else None

    port = value("--port")
    shared = value("--shared-port")
    if port is None:
        return None
    return Replica(name, _service_of(name), int(port), value("--instance-id"),
                   int(shared) if shared else None)


def status(settings: Settings, names: list[str]) -> int:
    """One line per process: the wanted replicas, then others that still run.

    Others: replicas beyond today's FNBUS_INVOKERS/FNBUS_GATEWAYS (a stack started
    with more); they are shown from their command line and count as part of the stack.
    """
    code = 0
    rows = plan(settings, names)
    known = {r.name for r in rows}
    for service in names:
        for name in recorded(settings, service) if service in SCALED_SERVICES else []:
            found = _running(settings, name)
            extra = _from_cmdline(name, found[1]) if found and name not in known else None
            if extra is not None:
                rows.append(extra)
    for r in rows:
        pid = _our_pid(settings, r.name)
        ok, _ = _healthy(settings, r.port) if pid else (False, "")
        state = "healthy" if ok else ("running, unhealthy" if pid else "stopped")
        if not ok:
            code = 1
        print(f"  {r.name:<11} {state:<20} {_describe(settings, r)}  pid={pid or '-'}")
    return code


def main(action: str, settings: Settings, services: list[str] | None = None,
         env: Mapping[str, str] | None = None) -> int:
    names = list(services) if services else list(SERVICE_NAMES)
    unknown = [n for n in names if n not in SERVICE_NAMES]
    if unknown:
        print(f"unknown service(s): {', '.join(unknown)}; choose from {', '.join(SERVICE_NAMES)}")
        return 2
    if action == "start":
        clashes = port_clashes(plan(settings, SERVICE_NAMES))
        if clashes:
            print("  replica ports collide (change FNBUS_REPLICA_PORT_STEP or the service ports): "
                  + "; ".join(clashes))
            return 2
        too_long = socket_paths_too_long(settings) if "invoker" in names else []
        if too_long:
            print(f"  runner socket paths would pass {UNIX_PATH_MAX} bytes under "
                  f"{settings.sockets_path()} for {', '.join(too_long)}: use a shorter "
                  "FNBUS_HOME, FNBUS_SOCKET_DIR or FNBUS_INSTANCE_ID")
            return 2
        return start(settings, names, env)
    if action == "stop":
        return stop(settings, list(reversed(names)))
    return status(settings, names)
