"""Docker engine access shared by the deployer and the invoker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import docker
from docker.errors import DockerException


def client(docker_host: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=docker_host, timeout=60)


def health_check(cli: docker.DockerClient) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            return bool(await asyncio.to_thread(cli.ping))
        except DockerException:
            return False

    return check
