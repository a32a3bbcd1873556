"""The six services on their own home, ports, database and topic prefix, for ``bench/run.py --private-stack``.

``make bench`` starts the shared stack (``fnbus local start`` on the default
ports). Where that stack is in use by others, the harness can bring up its own
copy instead, started the same way (``python -m fnbus.cli local start``, the
demo account from ``python -m fnbus.demo``) but isolated:

1. ``start()`` makes a home under ``/tmp``, a fresh database on the shared
   PostgreSQL and a topic prefix of its own, picks free ports, starts the six
   services and waits for them (``fnbus local start`` does), then creates the
   demo account; ``FNBUS_HOME`` and the port variables of this process point at
   it so that the harness reads its credentials and pid files.
2. Kafka, PostgreSQL and the Docker engine are shared; the pid files of the
   shared Kafka and PostgreSQL are linked into the private home so that the CPU
   split can name them.
3. ``stop()`` stops the services (``fnbus local stop``: only the pids it
   recorded), removes containers labelled with this run's invoker instance,
   deletes the topics and drops the database, and removes the home. Safe twice.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from fnbus.config import SERVICE_NAMES, Settings
from fnbus.sandbox import LABEL_OWNER

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def remove_containers(owners: Iterable[str]) -> None:
    """Containers labelled as owned by one of ``owners`` (invoker instance ids; the engine is shared)."""
    for owner in owners:
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL_OWNER}={owner}"],
                             capture_output=True, text=True, check=False).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


async def delete_topics(bootstrap: str, prefix: str, warn: Callable[[str], None]) -> None:
    """Delete the ``<prefix>.*`` topics; a failure is only reported (leftovers are harmless)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        mine = [t for t in await admin.list_topics() if t.startswith(f"{prefix}.")]
        if mine:
            await admin.delete_topics(mine)
    except Exception as exc:  # noqa: BLE001 - leftovers are harmless, say so
        warn(f"could not delete the {prefix}.* topics: {exc}")
    finally:
        await admin.close()


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


class PrivateStack:
    def __init__(self, base: Settings, extra_env: Mapping[str, str] | None = None, code: Path | None = None) -> None:
        """``code``: run the services from another tree (``git archive`` of an older commit: a
        before/after comparison); default this checkout."""
        self.code = (code or REPO).resolve()
        self.run_id = secrets.token_hex(3)
        self.base = base
        self.extra_env = dict(extra_env or {})
        self.home = Path(tempfile.mkdtemp(prefix=f"fnbus-bench-{self.run_id}-"))
        self.ports = {name: free_port() for name in SERVICE_NAMES}
        self.prefix = f"bench{self.run_id}"
        self.db_name = f"fnbus_bench_{self.run_id}"
        self.database_url = _with_db(base.database_url, self.db_name)
        self.token = secrets.token_urlsafe(24)
        self.instance_id = f"bench-{self.run_id}"
        self._saved_env: dict[str, str | None] = {}
        self.started = False

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FNBUS_")}
        env.update({
            "FNBUS_HOME": str(self.home),
            "FNBUS_KAFKA_BOOTSTRAP": self.base.kafka_bootstrap,
            "FNBUS_DATABASE_URL": self.database_url,
            "FNBUS_TOPIC_PREFIX": self.prefix,
            # One id for all six (each service uses it in its own namespace: the
            # gateway's reply topic, the invoker's container label): never the
            # shared stack's defaults, so neither removes the other's containers.
            "FNBUS_INSTANCE_ID": self.instance_id,
            "FNBUS_SERVICE_TOKEN": self.token,
            "FNBUS_JWT_SECRET": f"jwt-{self.token}",
            "FNBUS_SECRETS_KEY": f"key-{self.token}",
            "FNBUS_REGISTRY_URL": f"http://127.0.0.1:{self.ports['registry']}",
            "FNBUS_LOG_INGEST_URL": f"http://127.0.0.1:{self.ports['log_ingest']}",
            "FNBUS_SCHEDULER_URL": f"http://127.0.0.1:{self.ports['scheduler']}",
            "FNBUS_PUBLIC_URL": f"http://127.0.0.1:{self.ports['gateway']}",
            "FNBUS_LOG_JSON": "false",
            # As deploy/stack.sh bench: one demo account driven far beyond its quotas.
            "FNBUS_ACCOUNT_INVOCATIONS_PER_S": "1000000",
            "FNBUS_ACCOUNT_INVOCATIONS_BURST": "1000000",
            "FNBUS_ACCOUNT_ASYNC_BACKLOG_MAX": "1000000",
            "FNBUS_EGRESS_EXEMPT_CIDRS": '["127.0.0.0/8"]',
            "PYTHONPATH": os.pathsep.join([str(self.code / "libs"), str(self.code)]),
        })
        for name, port in self.ports.items():
            env[f"FNBUS_{name.upper()}_PORT"] = str(port)
        env.update(self.extra_env)
        return env

    def _cli(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", *args], env=self.env(), cwd=str(self.code), capture_output=True,
                              text=True, timeout=timeout, check=False)

    async def start(self) -> None:
        admin = await asyncpg.connect(self.base.database_url, timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{self.db_name}"')
        finally:
            await admin.close()
        self.started = True
        run = self.home / "run"
        run.mkdir(parents=True, exist_ok=True)
        shared_run = Path(os.environ.get("FNBUS_HOME") or REPO / ".fnbus") / "run"
        for name in ("kafka", "postgres"):
            if (shared_run / f"{name}.pid").exists():
                (run / f"{name}.pid").symlink_to(shared_run / f"{name}.pid")
        proc = await asyncio.to_thread(self._cli, "fnbus.cli", "local", "start")
        if proc.returncode != 0:
            raise RuntimeError(f"private stack did not start:\n{proc.stdout}\n{proc.stderr}\n"
                               f"logs: {self.home / 'logs'}")
        demo = await asyncio.to_thread(self._cli, "fnbus.demo", timeout=60)
        if demo.returncode != 0:
            raise RuntimeError(f"demo account: {demo.stdout}\n{demo.stderr}")
        for key, value in self.env().items():
            if key.startswith("FNBUS_"):
                self._saved_env.setdefault(key, os.environ.get(key))
                os.environ[key] = value

    async def stop(self, keep_home: bool = False) -> None:
        if not self.started:
            return
        self.started = False
        await asyncio.to_thread(self._cli, "fnbus.cli", "local", "stop", timeout=90)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        await asyncio.to_thread(self._remove_containers)
        await self._delete_topics()
        try:
            admin = await asyncpg.connect(self.base.database_url, timeout=10)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            finally:
                await admin.close()
        except (OSError, asyncpg.PostgresError) as exc:
            print(f"bench: could not drop {self.db_name}: {exc}", file=sys.stderr)
        if not keep_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def _remove_containers(self) -> None:
        """Only containers labelled with this run's invoker instance (the engine is shared)."""
        remove_containers([self.instance_id])

    async def _delete_topics(self) -> None:
        await delete_topics(self.base.kafka_bootstrap, self.prefix,
                            lambda message: print(f"bench: {message}", file=sys.stderr))
