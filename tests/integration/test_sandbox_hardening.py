"""The lambda sandbox on the real engine: what a container gets, and what a lambda can reach.

Issue 11, defect 5: no Docker log driver, a size-capped ``noexec`` ``/tmp``,
ulimits, a socket directory for the container's user alone that the lambda cannot
write to once the host has connected, and no mount but that directory.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import docker
import pytest

from fnbus.config import Settings
from fnbus.runner_protocol import RunnerConnection
from fnbus.sandbox import SOCKET_IN_CONTAINER, DockerRuntime, SandboxLimits, userns_base
from tests.integration.invoke_support import deploy, invoke
from tests.integration.mgmt_support import Account, create_account

pytestmark = pytest.mark.integration

# Tries what a hostile lambda would: fill /tmp, run a file from /tmp, write next to
# the runner's socket (the host's disk), and reports what happened.
PROBE = r"""function lambda(input, callback) {
  const fs = require('fs');
  const cp = require('child_process');
  const out = {};
  const chunk = Buffer.alloc(1024 * 1024, 120);
  let written = 0;
  try {
    const fd = fs.openSync('/tmp/fill', 'w');
    try {
      for (let i = 0; i < 200; i++) { fs.writeSync(fd, chunk); written += chunk.length; }
    } finally { fs.closeSync(fd); }
    out.fill = 'no error';
  } catch (err) { out.fill = err.code; }
  out.writtenMb = Math.round(written / 1048576);
  fs.unlinkSync('/tmp/fill');
  try {
    fs.writeFileSync('/tmp/run.sh', '#!/bin/sh\necho ran\n', { mode: 0o755 });
    out.exec = cp.execFileSync('/tmp/run.sh').toString().trim();
  } catch (err) { out.exec = err.code; }
  try { fs.writeFileSync('/run/fnbus/junk', 'x'); out.socketDir = 'written'; }
  catch (err) { out.socketDir = err.code; }
  try { fs.readdirSync('/run/fnbus'); out.listSocketDir = 'listed'; }
  catch (err) { out.listSocketDir = err.code; }
  out.dockerSock = fs.existsSync('/var/run/docker.sock') || fs.existsSync('/run/docker.sock');
  callback(null, out);
}
"""

PY_LIMITS = """def handler(input):
    import resource
    return {"nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
            "nproc": resource.getrlimit(resource.RLIMIT_NPROC)}
"""


@pytest.fixture(scope="module")
def engine(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> DockerRuntime:
    client = docker.DockerClient(base_url=settings.docker_host)
    sockets = Path(tmp_path_factory.mktemp("hardening"))
    return DockerRuntime(client, sockets / "sockets", SandboxLimits(),
                         owner=f"{settings.instance_id}-hardening")


async def test_container_config_is_hardened(settings: Settings, engine: DockerRuntime) -> None:
    handle = await engine.start(settings.runtime_image_python, {"fnbus.test": "hardening"})
    try:
        # Before the host connects: the container's user alone may enter the directory.
        st = await asyncio.to_thread(os.stat, handle.socket_dir)
        assert (st.st_uid, st.st_gid) == (1000, 1000)
        assert stat.S_IMODE(st.st_mode) == 0o700
        parent = await asyncio.to_thread(os.stat, engine.sockets_dir)
        assert stat.S_IMODE(parent.st_mode) == 0o700

        attrs: dict[str, Any] = await asyncio.to_thread(engine.client.api.inspect_container, handle.id)
        host = attrs["HostConfig"]
        assert host["LogConfig"]["Type"] == "none"
        tmp_options = host["Tmpfs"]["/tmp"].split(",")
        assert {"noexec", "nosuid", "nodev", "size=64m"} <= set(tmp_options)
        ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
        assert ulimits == {"nofile": (1024, 1024), "nproc": (8192, 8192)}
        mounts = attrs["Mounts"]
        assert [(m["Source"], m["Destination"], m["RW"]) for m in mounts] == [
            (str(handle.socket_dir), SOCKET_IN_CONTAINER, True)]
        assert not any("docker.sock" in str(m) for m in mounts + host.get("Binds", []))
        assert not host.get("Privileged") and host["CapDrop"] == ["ALL"]

        async with RunnerConnection() as conn:
            await conn.connect(handle.socket_path, timeout_s=20)
            await engine.seal(handle)
            sealed = await asyncio.to_thread(os.stat, handle.socket_dir)
            assert (sealed.st_uid, stat.S_IMODE(sealed.st_mode)) == (os.geteuid(), 0o700)
            await conn.init(code=PY_LIMITS, runtime="python", account_id="acct-h", lambda_id="l-h")
            result = await conn.run("act-h", None)
        assert result.ok, result.error
        assert result.value == {"nofile": [1024, 1024], "nproc": [8192, 8192]}
        # Nothing the runner printed went to a log file on the host.
        with pytest.raises(docker.errors.APIError, match="logging driver"):
            await asyncio.to_thread(engine.client.api.logs, handle.id)
    finally:
        await engine.kill(handle)
        await engine.remove(handle)
    assert not await asyncio.to_thread(handle.socket_dir.exists)


def test_userns_mapping_is_read_from_the_engine() -> None:
    assert userns_base({"SecurityOptions": ["name=seccomp,profile=default"],
                        "DockerRootDir": "/var/lib/docker"}) is None
    assert userns_base({"SecurityOptions": ["name=seccomp,profile=default", "name=userns"],
                        "DockerRootDir": "/var/lib/docker/231072.231072"}) == (231072, 231072)


@pytest.fixture(scope="module")
async def tenant(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"hard{run_id}")


@pytest.mark.usefixtures("platform")
async def test_a_lambda_cannot_fill_the_host_disk_or_run_from_tmp(tenant: Account) -> None:
    lambda_id = await deploy(tenant, "probe", PROBE)
    r = await invoke(tenant, lambda_id, {})
    assert r.status_code == 200, r.text
    out = r.json()["result"]
    # /tmp is a 64 MiB tmpfs: the write stops there with ENOSPC, on no disk of the host.
    assert out["fill"] == "ENOSPC" and 60 <= out["writtenMb"] <= 64, out
    assert out["exec"] == "EACCES", out  # noexec
    # The socket directory was taken back once the invoker connected.
    assert out["socketDir"] == "EACCES" and out["listSocketDir"] == "EACCES", out
    assert out["dockerSock"] is False
    # The container is fine afterwards and still answers.
    again = await invoke(tenant, lambda_id, {})
    assert again.status_code == 200 and again.json()["result"]["fill"] == "ENOSPC", again.text
