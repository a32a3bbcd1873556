"""Lambda containers on the Docker engine, behind a small interface.

:class:`ContainerRuntime` is what the pool and proxies need; :class:`DockerRuntime`
is the real implementation (docker SDK calls run in threads so the event loop
never blocks). Every container gets the sandbox of ARCHITECTURE.md and docs/containers.md:

1. ``network_mode=none`` — egress only through the invoker (toolbelt calls);
2. read-only root filesystem; ``/tmp`` a size-capped ``noexec,nosuid,nodev`` tmpfs;
3. uid 1000, all capabilities dropped, ``no-new-privileges``;
4. memory (no swap), pids and CPU limits; ulimits ``nofile`` and ``nproc``;
5. no Docker log driver (the runner's logs travel over its socket), so nothing a
   lambda prints lands on the host's disk;
6. one host directory per container, bind-mounted at ``/run/fnbus``, holding the
   runner's socket and nothing else: the only mount (never the Docker socket).

The socket directory's life (so that no lambda can write to the host's disk):

1. ``start()`` creates it for the container's user alone (uid 1000, or the uid
   that user maps to under the engine's ``userns-remap``), mode 0700;
2. the runner creates its socket there before any lambda code is loaded;
3. once the host has connected, ``seal()`` gives the directory back to this
   process (mode 0700): the container keeps its listening socket but can no
   longer create a file there, and cannot take the directory back;
4. ``remove()`` deletes it with the container.
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
from docker.types import LogConfig, Ulimit

log = logging.getLogger(__name__)

LABEL_ROLE = "fnbus.role"
LABEL_OWNER = "fnbus.invoker"
LABEL_ACCOUNT = "fnbus.account"
LABEL_LAMBDA = "fnbus.lambda"
SOCKET_IN_CONTAINER = "/run/fnbus"
#: The user every lambda runs as, inside the container.
CONTAINER_UID = 1000
CONTAINER_GID = 1000


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
    #: Open files per process.
    nofile: int = 1024
    #: RLIMIT_NPROC counts every process and thread of the *user*, host-wide, and all
    #: lambda containers share uid 1000: a per-container value would let one
    #: container's threads stop another from starting. The per-container bound is
    #: ``pids_limit`` (a cgroup); this one only caps what all lambdas together may hold.
    nproc: int = 8192


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

    async def seal(self, handle: ContainerHandle) -> None: ...

    async def process_count(self, handle: ContainerHandle) -> int | None: ...


def userns_base(info: dict[str, object]) -> tuple[int, int] | None:
    """(uid, gid) that uid/gid 0 in a container map to on the host, or None without remapping.

    Under ``userns-remap`` the engine keeps its state in ``<root>/<uid>.<gid>``
    (``/var/lib/docker/100000.100000``) and lists ``name=userns`` in its
    security options.
    """
    options = info.get("SecurityOptions")
    if not isinstance(options, list) or not any("name=userns" in str(o) for o in options):
        return None
    suffix = Path(str(info.get("DockerRootDir", ""))).name
    uid, _, gid = suffix.partition(".")
    if not (uid.isdigit() and gid.isdigit()):
        raise ContainerStartError(f"the engine remaps users but its root dir {suffix!r} "
                                  "does not name the mapping (expected <uid>.<gid>)")
    return int(uid), int(gid)


class DockerRuntime:
    """Starts sandboxed lambda containers; owns their socket directories."""

    def __init__(self, client: docker.DockerClient, sockets_dir: Path, limits: SandboxLimits,
                 owner: str) -> None:
        self.client = client
        self.sockets_dir = sockets_dir
        self.limits = limits
        self.owner = owner
        self._userns: tuple[int, int] | None = None
        self._userns_known = False
        sockets_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(sockets_dir, 0o700)  # only this process (and the engine, as root) looks inside
        except PermissionError:
            log.warning("socket directory is not ours; its mode stays as it is",
                        extra={"path": str(sockets_dir)})

    def _container_ids(self) -> tuple[int, int]:
        """Host uid and gid of the container's user (differs under ``userns-remap``)."""
        if not self._userns_known:
            self._userns = userns_base(self.client.info())
            self._userns_known = True
        if self._userns is None:
            return CONTAINER_UID, CONTAINER_GID
        return self._userns[0] + CONTAINER_UID, self._userns[1] + CONTAINER_GID

    def _make_socket_dir(self, socket_dir: Path) -> list[str]:
        """Create the directory for the container's user alone; the groups the container needs."""
        socket_dir.mkdir(mode=0o700)
        uid, gid = self._container_ids()
        if os.geteuid() == 0:
            os.chown(socket_dir, uid, gid)
            os.chmod(socket_dir, 0o700)
            return []
        if (uid, gid) != (CONTAINER_UID, CONTAINER_GID):
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise ContainerStartError(
                "the engine remaps users (userns-remap): the invoker and deployer must run as "
                "root to hand the socket directory to the container's user")
        # Not root, so no chown: the directory stays ours, shared with the container
        # through our group (added to the container's user), and nobody else's.
        os.chmod(socket_dir, 0o770)
        return [str(os.getegid())]

    def _start_sync(self, image: str, labels: dict[str, str]) -> ContainerHandle:
        name = f"fnbus-{uuid.uuid4().hex[:16]}"
        socket_dir = self.sockets_dir / name
        groups = self._make_socket_dir(socket_dir)
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
                tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={self.limits.tmpfs_mb}m,mode=1777"},
                user=f"{CONTAINER_UID}:{CONTAINER_GID}",
                group_add=groups,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                mem_limit=f"{mb}m",
                memswap_limit=f"{mb}m",
                pids_limit=self.limits.pids_limit,
                nano_cpus=int(self.limits.cpus * 1e9),
                ulimits=[Ulimit(name="nofile", soft=self.limits.nofile, hard=self.limits.nofile),
                         Ulimit(name="nproc", soft=self.limits.nproc, hard=self.limits.nproc)],
                log_config=LogConfig(type=LogConfig.types.NONE),
                # The only mount. Never the engine's socket: it is root on the host.
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

    def _seal_sync(self, handle: ContainerHandle) -> None:
        os.chown(handle.socket_dir, os.geteuid(), os.getegid())
        os.chmod(handle.socket_dir, 0o700)

    async def seal(self, handle: ContainerHandle) -> None:
        """Take the socket directory from the container, once the host has connected.

        The runner keeps its listening socket (and the host its connection); the
        container can no longer create files in the host directory. Call it only
        after the runner's ``ready`` frame: the runner is then done with the path.
        """
        await asyncio.to_thread(self._seal_sync, handle)

    def _process_count_sync(self, handle: ContainerHandle) -> int | None:
        try:
            top = self.client.api.top(handle.id)
        except DockerException:
            return None  # gone or stopping: the pool's other checks handle that
        return len(top.get("Processes") or [])

    async def process_count(self, handle: ContainerHandle) -> int | None:
        """How many processes run in the container (its runner, and what the lambda left)."""
        return await asyncio.to_thread(self._process_count_sync, handle)

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
