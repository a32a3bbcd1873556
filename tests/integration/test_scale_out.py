"""Scale-out: two gateways on one port and two invokers in one consumer group.

The processes are started the way ``make up INVOKERS=2 GATEWAYS=2`` starts them
(:mod:`fnbus.local`, pid files in a home of their own), on their own ports, database
and topic prefix, so the session's in-process services never see their traffic.
What a user would notice is asserted: every synchronous call through the one port
gets its own answer; and what the operator was promised: both gateways answered,
both invokers ran invocations, and each lambda stayed with one invoker.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import docker
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2

from bench.scale import free_block
from fnbus import local
from fnbus.config import Settings
from fnbus.sandbox import LABEL_OWNER
from fnbus.schemas import ActivationRecord
from fnbus.topics import Topics
from tests.integration.invoke_support import wait_deployed
from tests.integration.mgmt_support import Account, create_account
from tests.support import free_port

pytestmark = pytest.mark.integration

SERVICES = ["registry", "deployer", "invoker", "gateway"]
INVOCATION_PARTITIONS = 8  # fnbus.topics: the invocations topic
CALLS_PER_LAMBDA = 20
# Callers per lambda: each keeps at most that many containers of it busy, so a loaded
# 2-core machine is not asked to start dozens of containers at once.
LANES_PER_LAMBDA = 2


def _code(tag: str) -> str:
    return ("function lambda(input, callback) {\n"
            f"  callback(null, {{ lambda: '{tag}', nonce: input.payload.nonce }});\n}}\n")


@dataclass
class Scaled:
    settings: Settings
    env: dict[str, str]
    account: Account

    def replicas(self, service: str) -> list[local.Replica]:
        return local.plan(self.settings, [service])


@pytest.fixture(scope="module")
async def scaled(settings: Settings, run_id: str) -> AsyncIterator[Scaled]:
    tag = f"{run_id}sc{secrets.token_hex(2)}"
    db_name = f"fnbus_test_{tag}"
    base = free_block(5)  # gateway, gateway own ports ×2, invoker ×2
    # A short home and id: runner sockets live at <home>/sockets/<id>/<container>/runner.sock,
    # and a unix socket path longer than 107 bytes cannot be connected to.
    home = Path(tempfile.mkdtemp(prefix="fnsc-"))
    fields: dict[str, Any] = {
        "home": str(home),
        "kafka_bootstrap": settings.kafka_bootstrap,
        "database_url": settings.database_url.rsplit("/", 1)[0] + f"/{db_name}",
        "topic_prefix": f"t{run_id}sc",  # removed with the session's topics
        "instance_id": f"sc{secrets.token_hex(3)}",
        "service_token": settings.service_token, "jwt_secret": settings.jwt_secret,
        "secrets_key": settings.secrets_key,
        "gateway_port": base, "invoker_port": base + 3, "replica_port_step": 1,
        "registry_port": free_port(), "deployer_port": free_port(),
        "scheduler_port": free_port(), "log_ingest_port": free_port(),
        "invokers": 2, "gateways": 2, "prewarm_per_runtime": 1,
        "account_invocations_per_s": 100_000, "account_invocations_burst": 100_000,
        "log_json": "false",
    }
    fields["registry_url"] = f"http://127.0.0.1:{fields['registry_port']}"
    fields["scheduler_url"] = f"http://127.0.0.1:{fields['scheduler_port']}"
    fields["log_ingest_url"] = f"http://127.0.0.1:{fields['log_ingest_port']}"
    fields["public_url"] = f"http://127.0.0.1:{base}"
    mine = Settings(**fields)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FNBUS_")}
    env.update({f"FNBUS_{key.upper()}": str(value) for key, value in fields.items()})

    admin = await asyncpg.connect(settings.database_url.rsplit("/", 1)[0] + "/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{db_name}"')
    finally:
        await admin.close()
    try:
        code = await asyncio.to_thread(local.main, "start", mine, SERVICES, env)
        assert code == 0, f"the scaled stack did not start; logs in {mine.home}/logs"
        gateway = f"http://127.0.0.1:{base}"
        account = await create_account(mine, gateway, f"scale{run_id}")
        yield Scaled(mine, env, account)
    finally:
        await asyncio.to_thread(local.main, "stop", mine, SERVICES)
        client = docker.DockerClient(base_url=settings.docker_host)
        try:
            for r in local.plan(mine, ["invoker"]):
                for c in await asyncio.to_thread(client.containers.list, all=True,
                                                 filters={"label": f"{LABEL_OWNER}={r.instance_id}"}):
                    await asyncio.to_thread(c.remove, force=True)
        finally:
            client.close()
        admin = await asyncpg.connect(settings.database_url.rsplit("/", 1)[0] + "/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        finally:
            await admin.close()
        shutil.rmtree(home, ignore_errors=True)


def _partition(lambda_id: str) -> int:
    return (murmur2(lambda_id.encode()) & 0x7FFFFFFF) % INVOCATION_PARTITIONS


async def _lambdas_on_both_halves(account: Account) -> list[str]:
    """Three lambdas, two of them on partitions that no assignment gives one member.

    Partitions {0, 2} and {5, 7} differ in half (range assignment) and in parity
    (round robin), so with two invokers those two lambdas run on different ones.
    """
    picked: dict[str, str] = {}
    async with account.client() as c:
        for n in range(60):
            r = await c.post("/lambdas", json={"name": f"s{n}", "code": _code(f"s{n}"),
                                               "runtime": "nodejs"})
            assert r.status_code == 201, r.text
            lambda_id = r.json()["id"]
            p = _partition(lambda_id)
            group = "low" if p in (0, 2) else "high" if p in (5, 7) else "any"
            if group not in picked:
                picked[group] = lambda_id
            if len(picked) == 3:
                break
        assert len(picked) == 3, "no lambda ids on the partitions wanted after 60 tries"
        ids = list(picked.values())
        for lambda_id in ids:
            r = await c.post(f"/lambdas/{lambda_id}/deployments")
            assert r.status_code == 202, r.text
        for lambda_id in ids:
            await wait_deployed(c, lambda_id, timeout_s=120)
    return ids


async def _names(account: Account, ids: list[str]) -> dict[str, str]:
    async with account.client() as c:
        return {i: (await c.get(f"/lambdas/{i}")).json()["name"] for i in ids}


async def _gateway_posts(url: str) -> float:
    """Invocations this replica answered, from its own /metrics."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics", timeout=5)).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("fnbus_http_requests_total{") and 'method="POST"' in line \
                and 'status="200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _activations(settings: Settings, nonces: set[str], timeout_s: float = 60
                       ) -> dict[str, ActivationRecord]:
    """Activation records whose result carries one of ``nonces``."""
    consumer = AIOKafkaConsumer(Topics(settings.topic_prefix).activations,
                                bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: dict[str, ActivationRecord] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while set(found) != nonces and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    activation = ActivationRecord.from_bytes(record.value)
                    nonce = (activation.result or {}).get("nonce") \
                        if isinstance(activation.result, dict) else None
                    if nonce in nonces:
                        found[nonce] = activation
    finally:
        await consumer.stop()
    return found


async def test_two_gateways_on_one_port_and_two_invokers(scaled: Scaled) -> None:
    account = scaled.account
    gateways = scaled.replicas("gateway")
    invokers = scaled.replicas("invoker")
    assert {r.shared_port for r in gateways} == {scaled.settings.gateway_port}
    ids = await _lambdas_on_both_halves(account)
    names = await _names(account, ids)

    # Every call on a new connection: the kernel picks a gateway per connection. Lanes of
    # sequential calls, LANES_PER_LAMBDA per lambda, all lanes at once.
    calls = [(lambda_id, f"{n}-{secrets.token_hex(4)}") for n in range(CALLS_PER_LAMBDA)
             for lambda_id in ids]
    answers: dict[str, tuple[int, Any]] = {}
    async with httpx.AsyncClient(
            base_url=f"{account.gateway}/api/v1/accounts/{account.id}",
            headers={"Authorization": f"Bearer {account.admin_key}"}, timeout=60,
            limits=httpx.Limits(max_keepalive_connections=0)) as http:
        async def call(lambda_id: str, nonce: str) -> None:
            r = await http.post(f"/lambdas/{lambda_id}/invoke",
                                json={"headers": [], "payload": {"nonce": nonce}})
            answers[nonce] = (r.status_code, r.json() if r.headers.get(
                "content-type", "").startswith("application/json") else r.text)

        async def lane(mine: list[tuple[str, str]]) -> None:
            for lambda_id, nonce in mine:
                await call(lambda_id, nonce)

        lanes = len(ids) * LANES_PER_LAMBDA
        await asyncio.gather(*(lane(calls[i::lanes]) for i in range(lanes)))

    # Each caller got its own answer: the reply found the gateway that waited for it.
    for lambda_id, nonce in calls:
        status, body = answers[nonce]
        assert status == 200, body
        assert body["result"] == {"lambda": names[lambda_id], "nonce": nonce}, body

    # Both gateways answered invocations (each counts its own on its own port).
    served = {r.name: await _gateway_posts(f"http://127.0.0.1:{r.port}") for r in gateways}
    assert all(count > 0 for count in served.values()), served
    assert sum(served.values()) >= len(calls)

    # Both invokers ran invocations, and each lambda ran on one invoker only.
    records = await _activations(scaled.settings, {nonce for _, nonce in calls})
    assert len(records) == len(calls)
    by_lambda: dict[str, set[str]] = {}
    for record in records.values():
        by_lambda.setdefault(record.lambda_id, set()).add(record.invoker)
    assert all(len(owners) == 1 for owners in by_lambda.values()), by_lambda
    used = set().union(*by_lambda.values())
    assert used == {r.instance_id for r in invokers}, by_lambda


async def test_status_reports_every_replica_and_the_shared_port_answers(
        scaled: Scaled, capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(local.main, "status", scaled.settings, SERVICES) == 0
    out = capsys.readouterr().out
    for name in ("gateway", "gateway-2", "invoker", "invoker-2", "registry", "deployer"):
        assert re.search(rf"^\s+{re.escape(name)}\s+healthy", out, re.M), out
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{scaled.settings.gateway_port}/healthz")
    assert r.status_code == 200 and json.loads(r.text)["service"] == "gateway"
    # Pid files and logs are named per replica.
    run = Path(scaled.settings.home) / "run"
    assert {"gateway.pid", "gateway-2.pid", "invoker.pid", "invoker-2.pid"} <= {
        p.name for p in run.iterdir()}
    # CPU priority (fnbus.priority): the queue workers yield to the gateways, each
    # process and its own session's group.
    nice = {name: _nice(int((run / f"{name}.pid").read_text())) for name in
            ("gateway", "gateway-2", "registry", "invoker", "invoker-2", "deployer")}
    assert nice == {"gateway": (0, 0), "gateway-2": (0, 0), "registry": (0, 0),
                    "invoker": (10, 10), "invoker-2": (10, 10), "deployer": (10, 10)}, nice


def _nice(pid: int) -> tuple[int, int | None]:
    """(the process's nice, its session group's nice or None without autogroup)."""
    process = os.getpriority(os.PRIO_PROCESS, pid)
    group = Path(f"/proc/{pid}/autogroup")
    if not group.exists():
        return process, process  # no autogroup: nothing else to compare
    match = re.search(r"nice (-?\d+)", group.read_text())
    return process, int(match.group(1)) if match else None
