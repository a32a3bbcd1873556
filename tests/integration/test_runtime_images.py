"""Each runtime image on the real engine: sandboxed, no network, answering over a unix socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import docker
import pytest

from fnbus.config import Settings
from fnbus.runner_protocol import RunnerConnection
from fnbus.sandbox import DockerRuntime, SandboxLimits

pytestmark = pytest.mark.integration

CODE = {
    "nodejs": ("node", "function lambda(input, callback) {\n"
                       "  callback(null, { got: input, uid: process.getuid(), brand: process.env.BRAND_ID });\n}\n"),
    "python": ("python", "def handler(input):\n    import os\n"
                         "    return {'got': input, 'uid': os.getuid(), 'brand': os.environ['BRAND_ID']}\n"),
}


@pytest.fixture(scope="module")
def engine(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> DockerRuntime:
    client = docker.DockerClient(base_url=settings.docker_host)
    sockets = Path(tmp_path_factory.mktemp("sock"))
    return DockerRuntime(client, sockets, SandboxLimits(), owner=f"{settings.instance_id}-images")


@pytest.mark.parametrize("runtime", ["nodejs", "python"])
async def test_runtime_image_runs_sandboxed_over_a_socket(
    runtime: str, settings: Settings, engine: DockerRuntime
) -> None:
    image = settings.runtime_image_node if runtime == "nodejs" else settings.runtime_image_python
    handle = await engine.start(image, {"fnbus.test": "runtime-images"})
    try:
        attrs = await asyncio.to_thread(engine.client.api.inspect_container, handle.id)
        host = attrs["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["Memory"] == 256 * 1024 * 1024 and host["NanoCpus"] == 500_000_000
        assert host["PidsLimit"] == 64
        assert attrs["Config"]["User"] == "1000:1000"
        networks = attrs["NetworkSettings"]["Networks"]
        assert list(networks) == ["none"] and not networks["none"].get("IPAddress")

        wire, code = CODE[runtime]
        async with RunnerConnection() as conn:
            info = await conn.connect(handle.socket_path, timeout_s=20)
            assert info.runtime == wire
            await conn.init(code=code, runtime=wire, account_id="acct-1", lambda_id="l-1", env={})
            result = await conn.run("act-1", {"n": 1})
        assert result.ok, result.error
        assert result.value == {"got": {"n": 1}, "uid": 1000, "brand": "acct-1"}
    finally:
        await engine.kill(handle)
        await engine.remove(handle)
    assert not await asyncio.to_thread(handle.socket_dir.exists)
