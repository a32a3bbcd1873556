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
from services.deployer.build import Builder

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
