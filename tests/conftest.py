"""Session fixtures. Integration tests need the real broker, database and engine.

`make test` starts Kafka, PostgreSQL and dockerd (deploy/local/infra.sh) before
pytest. Each session works in its own database and under its own topic prefix,
so runs never see each other's data.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from fnbus.config import Settings
from tests.support import free_port, serve_in_loop

BASE = Settings()


def _reachable(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Integration tests must not silently pass without their infrastructure.
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(pytest.mark.timeout(300))


@pytest.fixture(scope="session")
def run_id() -> str:
    return secrets.token_hex(4)


@pytest.fixture(scope="session")
async def kafka_bootstrap(run_id: str) -> AsyncIterator[str]:
    bootstrap = BASE.kafka_bootstrap
    if not _reachable(bootstrap):
        pytest.fail(f"Kafka is not reachable at {bootstrap}: run `deploy/local/infra.sh start`")
    yield bootstrap
    # Topics of this session go with it: a broker full of test partitions restarts slowly.
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(f"t{run_id}")]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
async def database_url(run_id: str) -> AsyncIterator[str]:
    """A fresh database for this session, dropped at the end."""
    name = f"fnbus_test_{run_id}"
    try:
        admin = await asyncpg.connect(BASE.database_url, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is not reachable at {BASE.database_url}: {exc}")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_db(BASE.database_url, name)
    admin = await asyncpg.connect(BASE.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def settings(
    run_id: str, kafka_bootstrap: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings for in-process services of this session: own ports, topics and database."""
    ports = {name: free_port() for name in ("gateway", "registry", "deployer", "invoker",
                                              "scheduler", "log_ingest")}
    return Settings(
        home=tmp_path_factory.mktemp("fnbus-home"),
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topic_prefix=f"t{run_id}",
        service_token="test-service-token-" + run_id,
        jwt_secret="test-jwt-secret-for-this-session-only-" + run_id,
        secrets_key="test-secrets-key-" + run_id,
        registry_url=f"http://127.0.0.1:{ports['registry']}",
        log_ingest_url=f"http://127.0.0.1:{ports['log_ingest']}",
        scheduler_url=f"http://127.0.0.1:{ports['scheduler']}",
        public_url=f"http://127.0.0.1:{ports['gateway']}",
        instance_id=f"t{run_id}",  # own reply topic and container label for this session
        prewarm_per_runtime=1,
        max_containers=24,
        # Quotas are tested on their own gateway (tests/integration/test_quotas.py); the
        # session's floods (backpressure, chaos-sized loads) must not meet them.
        account_invocations_per_s=100_000.0,
        account_invocations_burst=100_000,
        # Lambdas may call test servers on loopback; the platform's own ports stay refused.
        egress_exempt_cidrs=["127.0.0.0/8"],
        **{f"{name}_port": port for name, port in ports.items()},
    )


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("FNBUS_LOG_JSON", "false")


@pytest.fixture(scope="session")
async def registry_url(settings: Settings) -> AsyncIterator[str]:
    """The registry service, in this process, for the whole session."""
    from services.registry.app import create_app

    async with serve_in_loop(create_app(settings), settings.registry_port) as url:
        yield url


@pytest.fixture(scope="session")
async def gateway_url(settings: Settings, registry_url: str) -> AsyncIterator[str]:
    """The gateway (with the registry behind it), in this process, for the whole session."""
    from services.gateway.app import create_app

    async with serve_in_loop(create_app(settings), settings.gateway_port) as url:
        yield url


@pytest.fixture(scope="session")
async def platform(settings: Settings, gateway_url: str, registry_url: str
                   ) -> AsyncIterator[dict[str, str]]:
    """Registry, gateway, deployer, invoker and log-ingest in this process, on real parts."""
    from services.deployer.app import create_app as deployer_app
    from services.invoker.app import create_app as invoker_app
    from services.log_ingest.app import create_app as log_ingest_app

    async with (
        serve_in_loop(log_ingest_app(settings), settings.log_ingest_port) as log_ingest,
        serve_in_loop(deployer_app(settings), settings.deployer_port) as deployer,
        serve_in_loop(invoker_app(settings), settings.invoker_port) as invoker,
    ):
        yield {"gateway": gateway_url, "registry": registry_url, "deployer": deployer,
               "invoker": invoker, "log_ingest": log_ingest}


@pytest.fixture(scope="session")
async def scheduler_url(settings: Settings) -> AsyncIterator[str]:
    """The scheduler service (real-time clock), in this process, for the whole session."""
    from services.scheduler.app import create_app

    async with serve_in_loop(create_app(settings), settings.scheduler_port) as url:
        yield url
