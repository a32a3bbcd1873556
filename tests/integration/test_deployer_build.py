"""The deployer's image builds on the real engine, alongside concurrent undeploys.

Undeploying a lambda removes its images (and their untagged parents). A build
that reused one of those parents from the build cache failed with "unable to
find image sha256:…" when the two overlapped; builds now share nothing with
other lambdas beyond the runtime image.
"""

from __future__ import annotations

import asyncio
import uuid

import docker
import pytest

from fnbus.config import Settings
from fnbus.schemas import DeployRequest, Runtime
from services.deployer.build import Builder, BuildFailed

pytestmark = pytest.mark.integration

CODE = "function lambda(input, callback) {\n  callback(null, 'v');\n}\n"


@pytest.fixture(scope="module")
def builder(settings: Settings) -> Builder:
    client = docker.DockerClient(base_url=settings.docker_host)
    return Builder(client, {"nodejs": settings.runtime_image_node, "python": settings.runtime_image_python})


def request(lambda_id: str, version: int = 1, code: str = CODE) -> DeployRequest:
    return DeployRequest(account_id="acct-build", lambda_id=lambda_id, version=version,
                         runtime=Runtime.NODEJS, code=code, dependencies={})


def chain(client: docker.DockerClient, image: str) -> set[str]:
    return {layer["Id"] for layer in client.api.history(image) if layer["Id"] != "<missing>"}


async def test_builds_of_two_lambdas_share_only_the_runtime_image(builder: Builder, settings: Settings) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        image_a = (await builder.build(request(a))).image
        image_b = (await builder.build(request(b))).image
        base = chain(builder.client, settings.runtime_image_node)
        shared = (chain(builder.client, image_a) & chain(builder.client, image_b)) - base
        assert not shared, f"lambda images share intermediate images: {shared}"
        # The same content for the same version is reused, not rebuilt.
        again = await builder.build(request(a))
        assert again.reused and again.image == image_a
    finally:
        await builder.remove_images(a, attempts=1)
        await builder.remove_images(b, attempts=1)


async def test_removing_one_lambdas_images_never_breaks_another_build(builder: Builder) -> None:
    victims = [str(uuid.uuid4()) for _ in range(4)]
    builders = [str(uuid.uuid4()) for _ in range(4)]
    try:
        for victim in victims:
            await builder.build(request(victim))
        for victim, other in zip(victims, builders, strict=True):
            # Undeploy of one lambda and deploy of another at the same moment.
            built, removed = await asyncio.gather(
                builder.build(request(other, code=CODE.replace("'v'", f"'{other}'"))),
                builder.remove_images(victim, attempts=1))
            assert removed == 1
            assert builder.client.images.get(built.image).labels["fnbus.lambda"] == other
    finally:
        for lambda_id in victims + builders:
            await builder.remove_images(lambda_id, attempts=1)


def node_request(lambda_id: str, deps: dict[str, str], version: int = 1) -> DeployRequest:
    return DeployRequest(account_id="acct-build", lambda_id=lambda_id, version=version,
                         runtime=Runtime.NODEJS, code=CODE, dependencies=deps)


async def test_dependencies_over_the_cap_fail_the_build_with_their_size(settings: Settings) -> None:
    client = docker.DockerClient(base_url=settings.docker_host)
    small = Builder(client, {"nodejs": settings.runtime_image_node}, max_dependencies_bytes=200_000)
    lambda_id = str(uuid.uuid4())
    try:
        # lodash unpacks to about 1.4 MB: over a 200 kB cap.
        with pytest.raises(BuildFailed, match=r"the installed dependencies take [\d.]+ MiB; "
                                              r"the limit is 0\.19\d* MiB"):
            await small.build(node_request(lambda_id, {"lodash": "4.17.21"}))
        assert not client.images.list(filters={"label": f"fnbus.lambda={lambda_id}"})
    finally:
        await small.remove_images(lambda_id, attempts=1)


async def test_dependencies_under_the_cap_are_in_the_image(builder: Builder) -> None:
    lambda_id = str(uuid.uuid4())
    try:
        artifact = await builder.build(node_request(lambda_id, {"left-pad": "1.3.0"}))
        # The exit code carries the answer (a short-lived container's logs can come back empty).
        container = await asyncio.to_thread(
            builder.client.containers.run, artifact.image, detach=True, network_mode="none",
            entrypoint=["node", "-e", "process.exit(require('left-pad')('7', 3, '0') === '007' ? 0 : 3)"],
            working_dir="/opt/fnbus/code")
        try:
            status = await asyncio.to_thread(container.wait, timeout=60)
        finally:
            await asyncio.to_thread(container.remove, force=True)
        assert status["StatusCode"] == 0, status
    finally:
        await builder.remove_images(lambda_id, attempts=1)


async def test_prune_keeps_the_newest_versions_the_current_one_and_images_in_use(
        builder: Builder) -> None:
    lambda_id = str(uuid.uuid4())
    container = None
    try:
        tags = [(await builder.build(request(lambda_id, version=v, code=CODE.replace("'v'", f"'{v}'"))
                                     )).image for v in range(1, 8)]
        # A warm container of version 1 still runs: its image must stay.
        container = await asyncio.to_thread(
            builder.client.containers.run, tags[0], detach=True, network_mode="none",
            entrypoint=["sleep", "60"])
        removed = await builder.prune(lambda_id, keep=5, current=tags[-1])
        assert removed == 1  # version 2: not among the newest five, not in use
        left = {i.labels["fnbus.version"] for i in
                builder.client.images.list(filters={"label": f"fnbus.lambda={lambda_id}"})}
        assert left == {"1", "3", "4", "5", "6", "7"}
        # With the container gone, the next prune takes version 1 too.
        await asyncio.to_thread(container.remove, force=True)
        container = None
        assert await builder.prune(lambda_id, keep=5, current=tags[-1]) == 1
    finally:
        if container is not None:
            await asyncio.to_thread(container.remove, force=True)
        await builder.remove_images(lambda_id, attempts=1)
