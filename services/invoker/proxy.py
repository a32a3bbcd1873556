"""One container and its runner, as an explicit state machine.

::

    STARTING ──connected──▶ READY ──initialize──▶ WARM ──run──▶ RUNNING ──result──▶ WARM
        │                     │                    │               │
        └────── failure ──────┴────── remove ──────┴── timeout / ───┴──▶ REMOVING ──▶ REMOVED
                                                       broken runner

Contract:
1. ``start()`` starts the container and connects to its runner (STARTING → READY).
   The socket directory is sealed (``ContainerRuntime.seal``) before any code is
   loaded, so the lambda cannot write to the host through it.
2. ``initialize()`` loads one lambda version's code (READY → WARM), once, within
   ``timeout_s``: code that does not finish loading in time (a top-level endless
   loop) gets its container killed and fails like code that does not load.
3. ``run()`` runs one invocation (WARM → RUNNING → WARM). On timeout the container
   is SIGKILLed *before* ``run()`` returns, so no side effect outlives the error;
   a killed or broken container ends in REMOVING and is never reused.
4. ``remove()`` kills and removes the container (any state → REMOVED); safe twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from fnbus.runner_protocol import (
    LogCallback,
    LogLimit,
    RunnerConnection,
    RunnerError,
    RunnerInitError,
    RunResult,
    ToolbeltHandler,
)
from fnbus.sandbox import ContainerHandle, ContainerRuntime
from services.invoker.pool import Slot, VersionKey

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 20.0
#: Longest a cold container may take to load a version's code (Settings.deploy_init_timeout_ms).
INIT_TIMEOUT_S = 10.0


class ProxyState(str, Enum):
    STARTING = "starting"
    READY = "ready"  # pre-warmed: runner up, no code
    WARM = "warm"  # code loaded, free
    RUNNING = "running"
    REMOVING = "removing"
    REMOVED = "removed"


class ProxyError(Exception):
    """The container or runner failed (not the lambda's own error)."""


class InitFailed(ProxyError):
    def __init__(self, error: RunnerInitError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class RunOutcome:
    result: RunResult | None  # None when killed or broken
    timed_out: bool = False
    broken: str | None = None  # why the runner/container failed, when it did


_RUNTIME_WIRE = {"nodejs": "node", "python": "python"}


class ContainerProxy:
    def __init__(self, engine: ContainerRuntime, runtime: str, image: str,
                 labels: dict[str, str]) -> None:
        self.engine = engine
        self.runtime = runtime
        self.image = image
        self.labels = labels
        self.state = ProxyState.STARTING
        self.key: VersionKey | None = None
        self.handle: ContainerHandle | None = None
        self.conn: RunnerConnection | None = None
        self.last_used = time.monotonic()
        self.id = f"pending-{id(self)}"
        self.invocations = 0
        self.reserved = False  # taken by an acquire() whose invocation has not finished
        # Processes in the container once its runner is up: more than that while it
        # idles means a lambda left something running after its invocation.
        self.baseline_processes: int | None = None

    def slot(self) -> Slot:
        busy = self.state in (ProxyState.STARTING, ProxyState.RUNNING, ProxyState.REMOVING)
        return Slot(self.id, self.runtime, self.key, busy or self.reserved, self.last_used)

    def dead(self) -> bool:
        """An idle container (pre-warmed or warm) whose runner has gone away."""
        return (self.state in (ProxyState.READY, ProxyState.WARM) and not self.reserved
                and (self.conn is None or not self.conn.is_open()))

    async def start(self) -> None:
        self.handle = await self.engine.start(self.image, self.labels)
        self.id = self.handle.name
        conn = RunnerConnection()
        try:
            await conn.connect(self.handle.socket_path, timeout_s=CONNECT_TIMEOUT_S)
        except (RunnerError, OSError) as exc:
            reason = await self.engine.exit_reason(self.handle)
            await self.remove()
            raise ProxyError(f"runner did not come up: {reason or exc}") from exc
        self.conn = conn
        try:
            await self.engine.seal(self.handle)
        except OSError as exc:
            await self.remove()
            raise ProxyError(f"cannot seal the container's socket directory: {exc}") from exc
        self.baseline_processes = await self.engine.process_count(self.handle)
        self.state = ProxyState.READY

    async def initialize(self, key: VersionKey, code: str, env: dict[str, str],
                         log_limit: LogLimit, timeout_s: float = INIT_TIMEOUT_S) -> None:
        assert self.conn is not None and self.state is ProxyState.READY, self.state
        try:
            await asyncio.wait_for(
                self.conn.init(code=code, runtime=_RUNTIME_WIRE.get(self.runtime, self.runtime),
                               account_id=key.account_id, lambda_id=key.lambda_id, env=env,
                               log_limit=log_limit),
                timeout=timeout_s)
        except TimeoutError:
            # The code is still loading (an endless loop at top level): the lambda's
            # fault, not the container's, so it is not placed again elsewhere.
            await self.remove()
            raise InitFailed(RunnerInitError(
                "InitTimeout", f"the code did not finish loading within {timeout_s:g} s")) from None
        except RunnerInitError as exc:
            await self.remove()
            raise InitFailed(exc) from exc
        except RunnerError as exc:
            await self.remove()
            raise ProxyError(f"runner failed during init: {exc}") from exc
        self.key = key
        self.state = ProxyState.WARM

    async def run(self, activation_id: str, payload: Any, timeout_s: float,
                  on_log: LogCallback | None = None,
                  toolbelt: ToolbeltHandler | None = None) -> RunOutcome:
        assert self.conn is not None and self.state is ProxyState.WARM, self.state
        self.state = ProxyState.RUNNING
        self.invocations += 1
        try:
            result = await asyncio.wait_for(
                self.conn.run(activation_id, payload, on_log=on_log, toolbelt=toolbelt,
                              deadline_ms=int(timeout_s * 1000)),
                timeout=timeout_s)
        except TimeoutError:
            # Kill first, answer after: nothing the code started survives the error.
            await self.remove()
            return RunOutcome(None, timed_out=True)
        except (RunnerError, OSError) as exc:
            reason = await self.engine.exit_reason(self.handle) if self.handle else None
            await self.remove()
            return RunOutcome(None, broken=reason or f"the runner failed: {exc}")
        self.state = ProxyState.WARM
        self.last_used = time.monotonic()
        return RunOutcome(result)

    async def remove(self) -> None:
        if self.state in (ProxyState.REMOVING, ProxyState.REMOVED) and self.handle is None:
            return
        self.state = ProxyState.REMOVING
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.close()
        handle, self.handle = self.handle, None
        if handle is not None:
            await self.engine.kill(handle)
            await self.engine.remove(handle)
        self.state = ProxyState.REMOVED
