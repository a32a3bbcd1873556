"""CPU priority of the services that work through queues (docs/scaling.md, "CPU priority").

On one machine every service competes for the same cores. The gateway answers callers
(a 202 for an asynchronous call, a 429 when an account is over its quota); the invoker,
log-ingest and the deployer work through what was queued. When both want the CPU, the
caller should not wait behind the queue: :data:`BACKGROUND_SERVICES` run at
``background_nice`` (``FNBUS_BACKGROUND_NICE``, 10 by default, 0 turns it off). A
priority only decides who runs first when the cores are full; with idle CPU, nothing
changes, and queued work is never dropped for it.

Contract of :func:`lower`:
1. The process's nice value becomes ``nice`` unless it is already higher (never raised:
   that needs privileges and would override an operator's own ``nice``).
2. Linux groups the processes of one session ("autogroup") and shares the CPU between
   groups before nice values count inside a group; ``fnbus local start`` gives every
   service a session of its own. A process that leads its session also sets the
   group's nice, so that the priority holds against the other services. A process
   started in someone's shell session (not its leader) leaves that session alone.
3. Where the kernel offers neither (no autogroup, a container runtime), it is a
   no-op apart from 1; containers get their share from the runtime (cpu shares).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

BACKGROUND_SERVICES = frozenset({"invoker", "log_ingest", "deployer"})
AUTOGROUP = Path("/proc/self/autogroup")


def lower(nice: int, autogroup: Path = AUTOGROUP) -> int:
    """Lower this process's CPU priority to ``nice`` (1 to 19); returns the nice in effect."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        current = nice
    if os.getsid(0) == os.getpid() and autogroup.exists():
        try:
            autogroup.write_text(f"{current}\n")
        except OSError as exc:
            log.info("could not set the session's CPU priority: %r", exc)
    return current


def apply(service: str, background_nice: int) -> None:
    """At a service's start: the background services run at ``background_nice``."""
    if service in BACKGROUND_SERVICES and background_nice > 0:
        nice = lower(background_nice)
        log.info("running at lower CPU priority than the gateway", extra={"nice": nice})
