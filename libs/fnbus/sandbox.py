"""Lambda containers on the Docker engine, behind a small interface.

:class:`ContainerRuntime` is what the pool and proxies need; :class:`DockerRuntime`
is the real implementation (docker SDK calls run in threads so the event loop
never blocks). Every container gets the sandbox of ARCHITECTURE.md:

1. ``network_mode=none`` — egress only through the invoker (toolbelt calls);
2. read-only root filesystem, tmpfs ``/tmp``;
3. uid 1000, all capabilities dropped, ``no-new-privileges``;
4. memory (no swap), pids and CPU limits;
5. a host directory bind-mounted at ``/run/fnbus`` holding the runner's socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

log = logging.getLogger(__name__)

LABEL_ROLE = "fnbus.role"
LABEL_OWNER = "fnbus.invoker"
LABEL_ACCOUNT = "fnbus.account"
LABEL_LAMBDA = "fnbus.lambda"
SOCKET_IN_CONTAINER = "/run/fnbus"


class ContainerError(Exception):
    """Root of container errors.

    ContainerError
     ├── ContainerStartError   (image missing, engine refused)
     └── ContainerGone         (the container died or was removed)
    """


class ContainerStartError(ContainerError):
    pass


class ContainerGone(ContainerError):
    pass


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int = 256
    cpus: float = 0.5
    pids_limit: int = 64
    tmpfs_mb: int = 64


@dataclass
class ContainerHandle:
    id: str
    name: str
    image: str
    socket_dir: Path
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def socket_path(self) -> str:
        return str(self.socket_dir / "runner.sock")


class ContainerRuntime(Protocol):
    async def start(self, image: str, labels: dict[str, str]) -> ContainerHandle: ...

    async def kill(self, handle: ContainerHandle) -> None: ...

    async def remove(self, handle: ContainerHandle) -> None: ...

    async def exit_reason(self, handle: ContainerHandle) -> str | None: ...


class DockerRuntime:
    """Starts sandboxed lambda containers; owns their socket directories."""

    def __init__(self, client: docker.DockerClient, sockets_dir: Path, limits: SandboxLimits,
                 owner: str) -> None:
        self.client = client
        self.sockets_dir = sockets_dir
        self.limits = limits
        self.owner = owner
        sockets_dir.mkdir(parents=True, exist_ok=True)

    def _start_sync(self, image: str, labels: dict[str, str]) -> ContainerHandle:
        name = f"fnbus-{uuid.uuid4().hex[:16]}"
        socket_dir = self.sockets_dir / name
        socket_dir.mkdir(mode=0o777)
        os.chmod(socket_dir, 0o777)  # the runner (uid 1000) creates its socket here
        all_labels = {LABEL_ROLE: "lambda", LABEL_OWNER: self.owner, **labels}
        mb = self.limits.memory_mb
        try:
            container = self.client.containers.run(
                image,
                name=name,
                detach=True,
                labels=all_labels,
                network_mode="none",
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={self.limits.tmpfs_mb}m"},
                user="1000:1000",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                mem_limit=f"{mb}m",
                memswap_limit=f"{mb}m",
                pids_limit=self.limits.pids_limit,
                nano_cpus=int(self.limits.cpus * 1e9),
                volumes={str(socket_dir): {"bind": SOCKET_IN_CONTAINER, "mode": "rw"}},
                environment={"FNBUS_RUNNER_SOCKET": f"{SOCKET_IN_CONTAINER}/runner.sock"},
                init=False,
            )
        except ImageNotFound as exc:
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise ContainerStartError(f"image {image} not found") from exc
        except (APIError, DockerException) as exc:
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise ContainerStartError(f"docker refused to start {image}: {exc}") from exc
        return ContainerHandle(container.id, name, image, socket_dir, all_labels)

    async def start(self, image: str, labels: dict[str, str]) -> ContainerHandle:
        return await asyncio.to_thread(self._start_sync, image, labels)

    def _kill_sync(self, handle: ContainerHandle) -> None:
        try:
            self.client.api.kill(handle.id, signal="SIGKILL")
        except NotFound:
            pass
        except APIError as exc:
            if "is not running" not in str(exc):
                raise

    async def kill(self, handle: ContainerHandle) -> None:
        """SIGKILL, whatever the code inside does; returns once the engine confirmed."""
        await asyncio.to_thread(self._kill_sync, handle)

    def _remove_sync(self, handle: ContainerHandle) -> None:
        try:
            self.client.api.remove_container(handle.id, force=True)
        except NotFound:
            pass
        except APIError as exc:
            log.warning("container removal failed", extra={"container": handle.name,
                                                           "error": str(exc)})
        shutil.rmtree(handle.socket_dir, ignore_errors=True)

    async def remove(self, handle: ContainerHandle) -> None:
        await asyncio.to_thread(self._remove_sync, handle)

    def _exit_reason_sync(self, handle: ContainerHandle) -> str | None:
        # The runner's connection closes a moment before the engine records the
        # exit (and the OOM kill): give it up to two seconds to catch up.
        for _ in range(20):
            try:
                state = self.client.api.inspect_container(handle.id)["State"]
            except NotFound:
                return "the container is gone"
            if not state.get("Running"):
                break
            time.sleep(0.1)
        if state.get("OOMKilled"):
            return f"the function exceeded its memory limit ({self.limits.memory_mb} MB) and was killed"
        if not state.get("Running"):
            return f"the function's container exited (code {state.get('ExitCode')})"
        return None

    async def exit_reason(self, handle: ContainerHandle) -> str | None:
        return await asyncio.to_thread(self._exit_reason_sync, handle)

    def _cleanup_sync(self) -> int:
        """Remove containers a previous run of this invoker left behind."""
        stale = self.client.containers.list(
            all=True, filters={"label": [f"{LABEL_OWNER}={self.owner}"]})
        for container in stale:
            try:
                container.remove(force=True)
            except DockerException:
                pass
        return len(stale)

    async def cleanup(self) -> int:
        return await asyncio.to_thread(self._cleanup_sync)
