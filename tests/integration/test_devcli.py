"""The developer CLI's whole flow against the real platform, as a developer runs it.

Every step runs ``python -m fnbus.cli …`` as a subprocess in a temporary project directory
with a temporary config directory (``XDG_CONFIG_HOME``): login, init, push, deploy until
Productive, invoke, logs, metrics as CSV, get functions --json, create schedule, add domain,
and pull after a change made on the platform, which shows the diff before overwriting.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fnbus.config import Settings
from tests.integration.mgmt_support import Account, create_account

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform", "scheduler_url"),
              pytest.mark.timeout(400)]

CODE = """\
function lambda(input, callback) {
  console.info('greeting ' + input.payload.name);
  callback(null, { hello: input.payload.name });
}
"""
REMOTE_CODE = """\
function lambda(input, callback) {
  callback(null, { hello: 'changed on the platform' });
}
"""


async def _lambda_id(cli: Cli, name: str) -> str:
    run = await cli("get", "functions", "--json")
    return next(str(f["id"]) for f in json.loads(run.out) if f["name"] == name)


@dataclass
class Run:
    code: int
    out: str
    err: str


class Cli:
    def __init__(self, project: Path, config: Path) -> None:
        self.project = project
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(config), "COLUMNS": "200"}

    async def __call__(self, *args: str, stdin: str = "") -> Run:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fnbus.cli", *args, cwd=self.project, env=self.env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 300)
        assert proc.returncode is not None
        return Run(proc.returncode, out.decode(), err.decode())

    async def until(self, check: str, *args: str, timeout_s: float = 30) -> Run:
        """Repeat a command until ``check`` is in its output (data that arrives later)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while True:
            run = await self(*args)
            if run.code == 0 and check in run.out:
                return run
            if loop.time() > end:
                raise AssertionError(f"{args}: {check!r} not seen: {run}")
            await asyncio.sleep(1)


_accounts = itertools.count()


@pytest.fixture
async def account(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"cli{run_id}n{next(_accounts)}")


async def test_the_whole_developer_flow(account: Account, tmp_path: Path) -> None:
    project, config = tmp_path / "project", tmp_path / "config"
    project.mkdir()
    cli = Cli(project, config)

    # login: a wrong key is an auth failure (4), the right one is kept with mode 0600
    run = await cli("login", "--url", account.gateway, "--account", account.id,
                    "--api-key", "fnb_wrong")
    assert run.code == 4, run
    run = await cli("login", "--url", account.gateway, "--account", account.id,
                    "--api-key", account.admin_key)
    assert run.code == 0, run
    config_file = config / "fnbus" / "config.json"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert json.loads(config_file.read_text())["profiles"]["default"]["account"] == account.id

    run = await cli("init", "greeter")
    assert run.code == 0, run
    (project / "functions" / "greeter" / "index.js").write_text(CODE)

    run = await cli("push", "greeter")
    assert run.code == 0 and "greeter: created (Draft" in run.out, run

    run = await cli("deploy", "greeter")
    assert run.code == 0, run
    assert "greeter: Productive (version 1 deployed)" in run.out

    run = await cli("invoke", "greeter", "--payload", '{"name": "cli"}')
    assert run.code == 0, run
    assert json.loads(run.out) == {"hello": "cli"}
    assert "greeting cli" in run.err  # the call's log lines go to stderr

    run = await cli("invoke", "nobody")
    assert run.code == 3 and "no function named 'nobody'" in run.err, run

    run = await cli.until("greeting cli", "logs", "greeter", "--levels", "info")
    assert "INFO" in run.out
    run = await cli("logs", "greeter", "--json")
    assert any(i["message"] == "greeting cli" for i in json.loads(run.out)["items"])

    # --follow: the live tail prints the next call's line as it happens
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fnbus.cli", "logs", "greeter", "--follow", "--json",
        "--levels", "info", cwd=project, env=cli.env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert tail.stdout is not None
        first = json.loads(await asyncio.wait_for(tail.stdout.readline(), 30))
        assert first["message"] == "greeting cli"  # the search page comes first
        await asyncio.sleep(1.5)  # the tail has taken its starting point
        run = await cli("invoke", "greeter", "--payload", '{"name": "follower"}')
        assert run.code == 0, run

        async def followed() -> dict:
            while True:
                item = json.loads(await tail.stdout.readline())  # type: ignore[union-attr]
                if item["message"] == "greeting follower":
                    return dict(item)

        item = await asyncio.wait_for(followed(), 30)
        assert item["lambda_id"] == (await _lambda_id(cli, "greeter"))
    finally:
        tail.terminate()
        await tail.wait()

    run = await cli.until(",1,", "metrics", "--last", "1h", "--output", "csv")
    lines = run.out.strip().splitlines()
    assert lines[0].startswith("bucket_start,lambda_id,SUCCEEDED,")
    assert any(int(row.split(",")[2] or 0) >= 1 for row in lines[1:]), run.out

    run = await cli("get", "functions", "--json")
    assert run.code == 0, run
    [fn] = json.loads(run.out)
    assert fn["name"] == "greeter" and fn["state"] == "Productive"
    run = await cli("get", "functions")
    assert "greeter" in run.out and "Productive" in run.out
    run = await cli("get", "deployments", "greeter", "--json")
    assert [(d["version"], d["state"]) for d in json.loads(run.out)] == [(1, "Deployed")]
    run = await cli("get", "account", "--json")
    assert json.loads(run.out)["id"] == account.id
    run = await cli("get", "events", "--json")
    assert run.code == 0 and len(json.loads(run.out)) > 0, run
    run = await cli("metrics", "greeter", "--last", "1h")
    assert run.code == 0 and "invocations" in run.out, run

    # the scheduler learns of the deployment from Kafka: allow it a moment
    run = await cli.until("*/5 * * * *", "create", "schedule", "greeter", "--cron", "*/5 * * * *",
                          "--payload", '{"name": "cron"}', "--json")
    assert json.loads(run.out)["lambda_id"] == fn["id"]
    run = await cli("get", "schedules", "--json")
    assert [s["cron"] for s in json.loads(run.out)] == ["*/5 * * * *"]

    run = await cli("add", "domain", "api.example.com", "--json")
    assert run.code == 0 and json.loads(run.out)["domain"] == "api.example.com", run
    run = await cli("add", "domain", "not a host")
    assert run.code == 2 and "422" in run.err, run

    # someone changes the code on the platform: pull shows the diff and asks first
    async with account.client() as c:
        r = await c.patch(f"/lambdas/{fn['id']}", json={"code": REMOTE_CODE})
        assert r.status_code == 200, r.text
    local_file = project / "functions" / "greeter" / "index.js"
    run = await cli("pull", "greeter", stdin="n\n")
    assert run.code == 0, run
    assert "-  console.info('greeting ' + input.payload.name);" in run.out
    assert "+  callback(null, { hello: 'changed on the platform' });" in run.out
    assert "greeter: skipped" in run.out and local_file.read_text() == CODE
    run = await cli("pull", "greeter", "--yes")
    assert run.code == 0 and "greeter: pulled version 2 (Modified)" in run.out, run
    assert local_file.read_text() == REMOTE_CODE
    run = await cli("pull", "greeter")
    assert "greeter: up to date" in run.out

    # and a local change pushed back shows the diff the other way
    local_file.write_text(CODE)
    run = await cli("push", "greeter", "--yes")
    assert run.code == 0, run
    assert "+  console.info('greeting ' + input.payload.name);" in run.out
    assert "greeter: pushed version 3 (Modified)" in run.out

    # a deployment that fails: exit 6 with the cause
    broken = project / "functions" / "broken"
    assert (await cli("init", "broken")).code == 0
    (broken / "index.js").write_text(
        "function lambda(input, callback) {\n  callback(null, );\n  }}\n")
    assert (await cli("push", "broken")).code == 0
    run = await cli("deploy", "broken")
    assert run.code == 6, run
    assert "broken: deployment failed" in run.err

    # create function from a template, then pull it into the project
    run = await cli("create", "function", "templated", "--template", "hello-world", "--json")
    assert run.code == 0 and json.loads(run.out)["state"] == "Draft", run
    run = await cli("create", "function", "templated")
    assert run.code == 2 and "name_taken" in run.err, run
    run = await cli("pull", "templated")
    assert run.code == 0 and "templated: pulled version 1 (Draft)" in run.out, run
    assert "function lambda" in (project / "functions" / "templated" / "index.js").read_text()

    run = await cli("undeploy", "greeter")
    assert run.code == 0, run
    run = await cli("get", "functions", "--json")
    assert {f["name"]: f["state"] for f in json.loads(run.out)}["greeter"] == "Draft"

    run = await cli("logout")
    assert run.code == 0 and "default" not in json.loads(config_file.read_text())["profiles"]
    run = await cli("get", "functions")
    assert run.code == 4 and "fnbus login" in run.err, run


async def test_an_oauth_client_profile_reads_and_invokes(account: Account, tmp_path: Path) -> None:
    async with account.client() as c:
        r = await c.post("/users", json={"name": "ci", "roles": ["FaaS-Invocation"]})
        assert r.status_code == 201, r.text
        r = await c.post(f"/users/{r.json()['id']}/oauth-clients")
        assert r.status_code == 201, r.text
        client = r.json()
        r = await c.post("/lambdas", json={"name": "listed", "code": CODE})
        assert r.status_code == 201, r.text
    cli = Cli(tmp_path, tmp_path / "config")
    run = await cli("--profile", "ci", "login", "--url", account.gateway, "--account", account.id,
                    "--client-id", client["prefix"], "--client-secret", "wrong")
    assert run.code == 4, run
    run = await cli("login", "--profile", "ci", "--url", account.gateway, "--account", account.id,
                    "--client-id", client["prefix"], "--client-secret", client["secret"])
    assert run.code == 0, run
    saved = json.loads((tmp_path / "config" / "fnbus" / "config.json").read_text())["profiles"]
    assert set(saved) == {"ci"} and saved["ci"]["token"]
    run = await cli("--profile", "ci", "get", "functions", "--json")
    assert run.code == 0, run
    assert [f["name"] for f in json.loads(run.out)] == ["listed"]
    # the token's scope does not cover the allowlist: a permission failure, exit 4
    run = await cli("--profile", "ci", "add", "domain", "api.example.com")
    assert run.code == 4, run
    run = await cli("get", "functions")  # the default profile was never logged in
    assert run.code == 4 and "fnbus login --profile default" in run.err, run
