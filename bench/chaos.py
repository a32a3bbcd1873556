"""Fault injection: kill and restart parts of a private stack under steady load.

    python bench/chaos.py [--ci] [--scenarios invoker_kill,kafka_restart,...] [--keep]

The harness never touches the shared infrastructure. It starts its own Kafka
broker and PostgreSQL cluster (``deploy/local/infra.sh`` under a temporary
``FNBUS_HOME``, on free ports; the broker jars are linked from the checkout's
``.fnbus/kafka/libs``) and the services as real processes against them, with
their own topic prefix and instance ids. Docker is shared: only containers
labelled with this run's invoker instances are removed at the end.

For every scenario it runs asynchronous calls at a fixed rate and a few
synchronous callers in a loop, injects the fault, and counts:

- ``accepted``   async calls answered 202 plus sync calls answered 200;
- ``completed``  accepted activations with a record in log-ingest's database;
- ``lost``       accepted async activations with no record after the drain window;
- ``duplicated`` activations whose code ran more than once for one attempt (read
  from the activations topic: each run publishes one record, with its own start
  time and invoker instance; a record re-sent by a producer is not a second run);
- ``recovery_s`` seconds from the dependency's return (a killed process
  relaunched, the broker answering, the database accepting connections) until a
  probe succeeds: a synchronous call answered 200 whose activation record can be
  read through the public API. For the scheduler: from the kill of the leader
  until the standby holds the lease (judged against the lease's own bound, 13 s).

Sync callers are judged by what a user sees: an answer (200, or an error with
the documented ``{"error": {"code"}}`` envelope) before the client's own timeout.

The last line printed is ``{"scenarios": [...]}``; the same JSON goes to
``bench/results/chaos.json`` (``--json PATH`` to change). Exit status: 0 when
every scenario met the targets, 1 when one missed them, 2 when the harness failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "libs") not in sys.path:
    sys.path.insert(0, str(REPO / "libs"))

from fnbus.topics import Topics  # noqa: E402

INFRA = REPO / "deploy" / "local" / "infra.sh"
RESULTS = REPO / "bench" / "results" / "chaos.json"
SCENARIOS = ("invoker_kill", "kafka_restart", "postgres_restart", "log_ingest_kill",
             "scheduler_leader_kill")
CI_SCENARIOS = ("invoker_kill", "kafka_restart", "postgres_restart", "log_ingest_kill")
RECOVERY_TARGET_S = 10.0
# A standby scheduler takes the lease when it expires: TTL 10 s after the last
# renewal, renewals every 3 s (docs/scheduler.md). That is the scheduler's bound.
LEASE_TAKEOVER_TARGET_S = 13.0

# The function under load: answers its nonce after a short pause, so that some
# calls are always in flight when a fault hits.
LAMBDA_CODE = """function lambda(input, callback) {
  const nonce = input && input.payload ? input.payload.nonce : null;
  console.log("chaos nonce " + nonce);
  setTimeout(() => callback(null, {nonce: nonce}), 50);
}
"""
SYNC_TIMEOUT_MS = 5_000  # ?timeout_ms= of sync calls; the gateway waits this + 15 s
SYNC_CLIENT_TIMEOUT_S = SYNC_TIMEOUT_MS / 1000 + 15 + 5  # the caller's own patience
SCHEDULER_SECONDS_PER_MINUTE = 15.0  # > lease takeover (~13 s): no due minute is skipped


@dataclass
class Plan:
    async_per_s: float
    sync_callers: int
    steady_s: float  # load before the fault
    down_s: float  # how long a stopped dependency stays away
    after_s: float  # load after recovery
    drain_s: float  # how long accepted work may take to show up as records
    scheduler_minutes: int  # scaled minutes the scheduler scenario observes


FULL = Plan(async_per_s=20, sync_callers=3, steady_s=10, down_s=5, after_s=10, drain_s=90,
            scheduler_minutes=8)
CI = Plan(async_per_s=8, sync_callers=2, steady_s=4, down_s=2, after_s=3, drain_s=45,
          scheduler_minutes=6)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the private stack -------------------------------------------------------------------


class Stack:
    """Private Kafka + PostgreSQL (infra.sh) and the services as OS processes.

    1. ``start()`` brings up infrastructure, then every service, and waits until
       each answers ``/healthz``; ``stop()`` tears down in reverse and is safe twice.
    2. Processes are keyed (``invoker``, ``scheduler-a``, …); ``kill(key)`` and
       ``start_service(key)`` act only on processes this object started.
    """

    SERVICES = {  # key -> (service, instance suffix)
        "registry": ("registry", "registry"),
        "log_ingest": ("log_ingest", "log-ingest"),
        "deployer": ("deployer", "deployer"),
        "invoker": ("invoker", "invoker"),
        "scheduler-a": ("scheduler", "scheduler-a"),
        "scheduler-b": ("scheduler", "scheduler-b"),
        "gateway": ("gateway", "gateway"),
    }

    def __init__(self, keep: bool = False) -> None:
        self.run_id = secrets.token_hex(3)
        self.keep = keep
        self.home = Path(tempfile.mkdtemp(prefix=f"fnbus-chaos-{self.run_id}-"))
        # PostgreSQL runs as the postgres user, which must reach $FNBUS_HOME/postgres.
        self.home.chmod(0o755)
        self.kafka_port, self.controller_port, self.pg_port = free_port(), free_port(), free_port()
        self.ports = {name: free_port() for name in
                      ("gateway", "registry", "deployer", "invoker", "scheduler", "log_ingest")}
        self.scheduler_ports = {"scheduler-a": self.ports["scheduler"],
                                "scheduler-b": free_port()}
        self.prefix = f"chaos{self.run_id}"
        self.topics = Topics(self.prefix)
        self.service_token = secrets.token_urlsafe(24)
        self.database_url = f"postgresql://fnbus:fnbus@127.0.0.1:{self.pg_port}/fnbus"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.infra_up = False

    # environment ----------------------------------------------------------------------

    def instance(self, key: str) -> str:
        return f"chaos-{self.run_id}-{self.SERVICES[key][1]}"

    def infra_env(self) -> dict[str, str]:
        return {**os.environ, "FNBUS_HOME": str(self.home),
                "FNBUS_KAFKA_PORT": str(self.kafka_port),
                "FNBUS_KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "FNBUS_PG_PORT": str(self.pg_port),
                "FNBUS_KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m"}

    def service_env(self, key: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FNBUS_")}
        env.update({
            "FNBUS_HOME": str(self.home),
            "FNBUS_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.kafka_port}",
            "FNBUS_DATABASE_URL": self.database_url,
            "FNBUS_TOPIC_PREFIX": self.prefix,
            "FNBUS_INSTANCE_ID": self.instance(key),
            "FNBUS_SERVICE_TOKEN": self.service_token,
            "FNBUS_JWT_SECRET": f"jwt-{self.service_token}",
            "FNBUS_SECRETS_KEY": f"key-{self.service_token}",
            "FNBUS_REGISTRY_URL": f"http://127.0.0.1:{self.ports['registry']}",
            "FNBUS_LOG_INGEST_URL": f"http://127.0.0.1:{self.ports['log_ingest']}",
            "FNBUS_SCHEDULER_URL": f"http://127.0.0.1:{self.ports['scheduler']}",
            "FNBUS_PUBLIC_URL": f"http://127.0.0.1:{self.ports['gateway']}",
            "FNBUS_PREWARM_PER_RUNTIME": "1",
            "FNBUS_LOG_JSON": "false",
            "FNBUS_SCHEDULER_SECONDS_PER_MINUTE": str(SCHEDULER_SECONDS_PER_MINUTE),
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "libs")]),
        })
        for name, port in self.ports.items():
            env[f"FNBUS_{name.upper()}_PORT"] = str(port)
        return env

    def url(self, key: str) -> str:
        service = self.SERVICES[key][0]
        port = self.scheduler_ports[key] if service == "scheduler" else self.ports[service]
        return f"http://127.0.0.1:{port}"

    # infrastructure -------------------------------------------------------------------

    def _link_kafka_jars(self) -> None:
        libs = self.home / "kafka" / "libs"
        source = Path(os.environ.get("FNBUS_CHAOS_KAFKA_LIBS", REPO / ".fnbus" / "kafka" / "libs"))
        libs.parent.mkdir(parents=True, exist_ok=True)
        if any(source.glob("kafka_2.13-*.jar")):
            libs.symlink_to(source.resolve())
            return
        # No jars in the checkout yet: install.sh resolves them (Maven) into our home.
        subprocess.run([str(REPO / "deploy" / "local" / "install.sh")], env=self.infra_env(),
                       check=True)

    def infra(self, action: str, *components: str) -> None:
        proc = subprocess.run(["bash", str(INFRA), action, *components], env=self.infra_env(),
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"infra.sh {action} {' '.join(components)} failed:\n"
                               f"{proc.stdout}\n{proc.stderr}")

    # services -------------------------------------------------------------------------

    def start_service(self, key: str) -> None:
        service = self.SERVICES[key][0]
        port = self.url(key).rsplit(":", 1)[1]
        logfile = open(self.home / "logs" / f"{key}.log", "ab")  # noqa: SIM115 - the child's
        self.procs[key] = subprocess.Popen(
            [sys.executable, "-m", "fnbus.cli", "serve", service, "--port", port],
            env=self.service_env(key), stdout=logfile, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(REPO))
        logfile.close()

    async def healthy(self, key: str, http: httpx.AsyncClient) -> bool:
        proc = self.procs.get(key)
        if proc is None or proc.poll() is not None:
            return False
        try:
            return (await http.get(f"{self.url(key)}/healthz", timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_healthy(self, keys: list[str], timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(keys)
        async with httpx.AsyncClient() as http:
            while pending:
                for key in sorted(pending):
                    proc = self.procs[key]
                    if proc.poll() is not None:
                        raise RuntimeError(f"{key} exited ({proc.returncode}); "
                                           f"see {self.home / 'logs' / (key + '.log')}")
                    if await self.healthy(key, http):
                        pending.discard(key)
                if pending and time.monotonic() > deadline:
                    raise RuntimeError(f"not healthy after {timeout_s:.0f} s: {sorted(pending)}")
                await asyncio.sleep(0.2)

    async def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[key]
        if proc.poll() is None:
            proc.send_signal(sig)
            await asyncio.to_thread(proc.wait, 30)

    async def start(self) -> None:
        log(f"private stack in {self.home} (kafka :{self.kafka_port}, postgres :{self.pg_port}, "
            f"topics {self.prefix}.*)")
        self._link_kafka_jars()
        self.infra_up = True
        await asyncio.to_thread(self.infra, "start", "kafka", "postgres")
        # The registry applies the migrations; the others wait for it.
        self.start_service("registry")
        await self.wait_healthy(["registry"])
        for key in self.SERVICES:
            if key != "registry":
                self.start_service(key)
        await self.wait_healthy(list(self.SERVICES))
        log("private stack healthy")

    def stop(self) -> None:
        for key in reversed(list(self.procs)):
            proc = self.procs[key]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()
        self._remove_containers()
        if self.infra_up:
            try:
                self.infra("stop", "kafka", "postgres")
            except RuntimeError as exc:
                log(str(exc))
            self.infra_up = False
        if not self.keep:
            shutil.rmtree(self.home, ignore_errors=True)

    def _remove_containers(self) -> None:
        """Containers of this run's invoker instances only (the engine is shared)."""
        label = f"fnbus.invoker={self.instance('invoker')}"
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


# --- load ------------------------------------------------------------------------------------


@dataclass
class SyncCall:
    started: float
    elapsed_s: float
    status: int | None  # None: no answer before the client's timeout
    code: str | None  # the error envelope's code, when there was one
    activation_id: str | None


@dataclass
class LoadRecord:
    async_accepted: dict[str, str] = field(default_factory=dict)  # activation id -> nonce
    async_refused: Counter[str] = field(default_factory=Counter)  # status/code -> count
    sync_calls: list[SyncCall] = field(default_factory=list)


class Client:
    """The public API of the private stack, as the demo tenant's admin."""

    def __init__(self, gateway: str, account_id: str, api_key: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=f"{gateway}/api/v1/accounts/{account_id}",
            headers={"Authorization": f"Bearer {api_key}"},
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            timeout=SYNC_CLIENT_TIMEOUT_S)
        self.lambda_id = ""

    async def close(self) -> None:
        await self.http.aclose()

    async def invoke(self, nonce: str, *, sync: bool, timeout_s: float) -> httpx.Response:
        params: dict[str, Any] = {"timeout_ms": SYNC_TIMEOUT_MS} if sync else {"async": "true"}
        return await self.http.post(f"/lambdas/{self.lambda_id}/invoke", params=params,
                                    json={"headers": [], "payload": {"nonce": nonce}},
                                    timeout=timeout_s)

    async def activation(self, activation_id: str) -> dict[str, Any] | None:
        try:
            r = await self.http.get(f"/activations/{activation_id}", timeout=3)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None


def _error_code(r: httpx.Response) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("code")) if isinstance(error, dict) and error.get("code") else None


class Load:
    """Async calls at a fixed rate plus sync callers in a loop, until ``stop()``."""

    def __init__(self, client: Client, plan: Plan, tag: str) -> None:
        self.client = client
        self.plan = plan
        self.tag = tag
        self.record = LoadRecord()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._n = 0

    def _nonce(self) -> str:
        self._n += 1
        return f"{self.tag}-{self._n}"

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._async_ticker()))
        for _ in range(self.plan.sync_callers):
            self._tasks.append(asyncio.create_task(self._sync_caller()))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        if self._inflight:
            await asyncio.gather(*self._inflight)

    async def _async_ticker(self) -> None:
        period = 1 / self.plan.async_per_s
        next_at = time.monotonic()
        while not self._stop.is_set():
            task = asyncio.create_task(self._async_call(self._nonce()))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _async_call(self, nonce: str) -> None:
        try:
            r = await self.client.invoke(nonce, sync=False, timeout_s=SYNC_CLIENT_TIMEOUT_S)
        except httpx.HTTPError as exc:
            self.record.async_refused[type(exc).__name__] += 1
            return
        if r.status_code == 202:
            self.record.async_accepted[r.json()["activation_id"]] = nonce
        else:
            self.record.async_refused[f"{r.status_code} {_error_code(r)}"] += 1

    async def _sync_caller(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                r = await self.client.invoke(self._nonce(), sync=True,
                                             timeout_s=SYNC_CLIENT_TIMEOUT_S)
            except httpx.HTTPError:
                self.record.sync_calls.append(SyncCall(t0, time.monotonic() - t0, None, None, None))
                await asyncio.sleep(0.2)
                continue
            activation_id = None
            try:
                body = r.json()
                activation_id = body.get("activation_id") if isinstance(body, dict) else None
            except ValueError:
                pass
            self.record.sync_calls.append(SyncCall(t0, time.monotonic() - t0, r.status_code,
                                                   _error_code(r), activation_id))
            if r.status_code != 200:
                await asyncio.sleep(0.2)


async def probe_until_ok(client: Client, since: float, deadline_s: float = 120) -> float | None:
    """Seconds from ``since`` until a sync call succeeds and its record is readable."""
    stop_at = time.monotonic() + deadline_s
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        sent = time.monotonic()
        try:
            r = await client.invoke(f"probe-{uuid.uuid4().hex[:8]}", sync=True, timeout_s=8)
        except httpx.HTTPError as exc:
            log(f"  probe {n}: sent at +{sent - since:.1f} s, {type(exc).__name__} "
                f"after {time.monotonic() - sent:.1f} s")
            await asyncio.sleep(0.25)
            continue
        log(f"  probe {n}: sent at +{sent - since:.1f} s, {r.status_code} {_error_code(r) or ''} "
            f"after {time.monotonic() - sent:.1f} s")
        if r.status_code == 200:
            activation_id = r.json()["activation_id"]
            seen_by = time.monotonic() + 10
            while time.monotonic() < seen_by:
                if await client.activation(activation_id):
                    return time.monotonic() - since
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.25)
    return None


# --- counting ---------------------------------------------------------------------------------


async def recorded(database_url: str, ids: list[str], deadline: float) -> set[str]:
    """Activation ids (of ``ids``) with a record in log-ingest's table, waiting up to ``deadline``."""
    found: set[str] = set()
    while True:
        try:
            conn = await asyncpg.connect(database_url, timeout=5)
            try:
                rows = await conn.fetch(
                    "SELECT DISTINCT activation_id FROM activations WHERE activation_id = ANY($1)",
                    [i for i in ids if i not in found])
            finally:
                await conn.close()
            found.update(r["activation_id"] for r in rows)
        except (OSError, asyncpg.PostgresError):
            pass
        if len(found) == len(set(ids)) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(1)


def partitions_of(topic: str) -> int:
    prefix = topic.rsplit(".", 1)[0]
    return next(spec.partitions for spec in Topics(prefix).specs() if spec.name == topic)


async def executions(bootstrap: str, topic: str, ids: set[str]) -> dict[str, int]:
    """Runs per activation id, from the activations topic (every record, duplicates too).

    A run is a distinct (attempt, start time, invoker): a record a producer sent
    twice is one run; the same attempt run again after a redelivery is two.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    runs: dict[str, set[tuple[int, int, str]]] = {}
    try:
        partitions = [TopicPartition(topic, p) for p in range(partitions_of(topic))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        async def behind() -> bool:
            for tp in partitions:
                if await consumer.position(tp) < end[tp]:
                    return True
            return False

        while await behind():
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for rec in records:
                    body = json.loads(rec.value)
                    aid = body.get("activation_id")
                    if aid in ids:
                        runs.setdefault(aid, set()).add(
                            (body.get("attempt", 1), body.get("started_ms", 0), body.get("invoker", "")))
    finally:
        await consumer.stop()
    # More runs than distinct attempts: some attempt ran twice.
    return {aid: len(r) - len({a for a, _, _ in r}) + 1 for aid, r in runs.items()}


@dataclass
class Outcome:
    name: str
    accepted: int
    completed: int
    lost: int
    duplicated: int
    recovery_s: float | None
    async_accepted: int = 0
    async_refused: dict[str, int] = field(default_factory=dict)
    sync_ok: int = 0
    sync_errors: dict[str, int] = field(default_factory=dict)
    sync_unanswered: int = 0
    sync_max_s: float = 0.0
    lost_in_ingest: int = 0  # on the activations topic, never written to the database
    notes: str = ""

    def passed(self) -> bool:
        target = LEASE_TAKEOVER_TARGET_S if self.name == "scheduler_leader_kill" else RECOVERY_TARGET_S
        unclear = any(key.endswith(" None") for key in self.sync_errors)  # no error envelope
        return (self.lost == 0 and self.sync_unanswered == 0 and not unclear
                and self.recovery_s is not None
                and self.recovery_s <= target)


async def count(stack: Stack, name: str, load: LoadRecord, drain_s: float,
                recovery_s: float | None, notes: str = "") -> Outcome:
    sync_ok_ids = [c.activation_id for c in load.sync_calls if c.status == 200 and c.activation_id]
    async_ids = list(load.async_accepted)
    all_ids = async_ids + sync_ok_ids
    found = await recorded(stack.database_url, all_ids, time.monotonic() + drain_s)
    runs = await executions(f"127.0.0.1:{stack.kafka_port}", stack.topics.activations,
                            set(all_ids))
    lost_ids = [a for a in async_ids if a not in found]
    errors = Counter(f"{c.status} {c.code}" for c in load.sync_calls
                     if c.status is not None and c.status != 200)
    out = Outcome(
        name=name, accepted=len(all_ids), completed=len(found & set(all_ids)),
        lost=len(lost_ids), duplicated=sum(1 for n in runs.values() if n > 1),
        recovery_s=None if recovery_s is None else round(recovery_s, 2),
        async_accepted=len(async_ids), async_refused=dict(load.async_refused),
        sync_ok=len(sync_ok_ids), sync_errors=dict(errors),
        sync_unanswered=sum(1 for c in load.sync_calls if c.status is None),
        sync_max_s=round(max((c.elapsed_s for c in load.sync_calls), default=0.0), 2),
        lost_in_ingest=sum(1 for a in lost_ids if a in runs), notes=notes)
    if lost_ids:
        log(f"{name}: lost {lost_ids[:5]}{' …' if len(lost_ids) > 5 else ''}")
    return out


# --- scenarios --------------------------------------------------------------------------------


# A fault: injects itself, waits until the part is back, returns (that moment, a note).
Fault = Callable[[], Awaitable[tuple[float, str]]]


async def with_load(stack: Stack, client: Client, plan: Plan, name: str,
                    fault: Fault) -> Outcome:
    """Steady load, ``fault()`` (returns the moment the dependency is back), probe, more load."""
    load = Load(client, plan, f"{name}-{stack.run_id}")
    load.start()
    await asyncio.sleep(plan.steady_s)
    log(f"{name}: injecting")
    returned_at, notes = await fault()
    log(f"{name}: {notes}; probing")
    recovery_s = await probe_until_ok(client, returned_at)
    log(f"{name}: recovered in {recovery_s if recovery_s is None else round(recovery_s, 2)} s")
    await asyncio.sleep(plan.after_s)
    await load.stop()
    log(f"{name}: load stopped; waiting for records (up to {plan.drain_s:.0f} s)")
    return await count(stack, name, load.record, plan.drain_s, recovery_s, notes)


def kill_and_restart(stack: Stack, key: str, plan: Plan) -> Fault:
    """kill -9, down for a moment, relaunched: back from the relaunch (not from healthy)."""
    async def fault() -> tuple[float, str]:
        await stack.kill(key, signal.SIGKILL)
        await asyncio.sleep(plan.down_s)
        stack.start_service(key)
        relaunched = time.monotonic()
        await stack.wait_healthy([key])
        return relaunched, f"{key} healthy {time.monotonic() - relaunched:.1f} s after its relaunch"
    return fault


def restart_infra(stack: Stack, component: str, plan: Plan) -> Fault:
    """A clean stop (infra.sh), down for a moment, started: back once it answers again."""
    async def fault() -> tuple[float, str]:
        await asyncio.to_thread(stack.infra, "stop", component)
        await asyncio.sleep(plan.down_s)
        t0 = time.monotonic()
        await asyncio.to_thread(stack.infra, "start", component)
        return time.monotonic(), f"{component} answering {time.monotonic() - t0:.1f} s after its start"
    return fault


async def lease_holder(database_url: str) -> str | None:
    try:
        conn = await asyncpg.connect(database_url, timeout=5)
        try:
            row = await conn.fetchrow("SELECT holder FROM scheduler_lease")
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError):
        return None
    return None if row is None else str(row["holder"])


async def scheduler_leader_kill(stack: Stack, client: Client, plan: Plan) -> Outcome:
    """Every-minute schedules (15 s minutes) while the leading scheduler is killed.

    Each due minute must fire once: lost = due minutes between the first and
    the last fire observed with no fire; duplicated = fires that ran twice.
    """
    name = "scheduler_leader_kill"
    schedules = []
    for _ in range(3):
        r = await client.http.post("/schedules", json={"lambda_id": client.lambda_id,
                                                       "cron": "* * * * *",
                                                       "payload": {"nonce": name}})
        r.raise_for_status()
        schedules.append(r.json()["id"])
    minute_s = SCHEDULER_SECONDS_PER_MINUTE
    started = time.monotonic()
    await asyncio.sleep(2 * minute_s)
    holder = await lease_holder(stack.database_url)
    key = next((k for k in ("scheduler-a", "scheduler-b") if stack.instance(k) == holder), None)
    if key is None:
        raise RuntimeError(f"no scheduler holds the lease (holder {holder!r})")
    standby = stack.instance("scheduler-b" if key == "scheduler-a" else "scheduler-a")
    log(f"{name}: killing the leader {key}")
    await stack.kill(key, signal.SIGKILL)
    killed_at = time.monotonic()
    while await lease_holder(stack.database_url) != standby:
        if time.monotonic() - killed_at > 60:
            raise RuntimeError("the standby never took the lease")
        await asyncio.sleep(0.2)
    took_at = time.monotonic()
    log(f"{name}: standby leads {took_at - killed_at:.1f} s after the kill")
    stack.start_service(key)  # back as the new standby
    await stack.wait_healthy([key])
    remaining = plan.scheduler_minutes * minute_s - (time.monotonic() - started)
    await asyncio.sleep(max(minute_s, remaining))
    for sid in schedules:
        await client.http.delete(f"/schedules/{sid}")
    await asyncio.sleep(3)
    # Fires and their activations, per schedule and due minute.
    conn = await asyncpg.connect(stack.database_url)
    try:
        fires = await conn.fetch(
            "SELECT schedule_id::text AS schedule_id, due_ms, activation_id FROM schedule_fires "
            "WHERE schedule_id::text = ANY($1) ORDER BY due_ms", schedules)
    finally:
        await conn.close()
    ids = [f["activation_id"] for f in fires]
    found = await recorded(stack.database_url, ids, time.monotonic() + plan.drain_s)
    runs = await executions(f"127.0.0.1:{stack.kafka_port}", stack.topics.activations, set(ids))
    minute_ms = 60_000
    lost = 0
    for sid in schedules:
        due = sorted(f["due_ms"] for f in fires if f["schedule_id"] == sid)
        if due:
            lost += (due[-1] - due[0]) // minute_ms + 1 - len(set(due))
    lost += sum(1 for a in ids if a not in found)
    # The standby's takeover is what returns; no other part went away.
    recovery_s = took_at - killed_at
    notes = (f"{len(fires)} fires of {len(schedules)} schedules; lease taken "
             f"{took_at - killed_at:.1f} s after the kill (TTL 10 s)")
    return Outcome(name=name, accepted=len(ids), completed=len(found), lost=lost,
                   duplicated=sum(1 for n in runs.values() if n > 1),
                   recovery_s=round(recovery_s, 2), notes=notes)


async def setup_tenant(stack: Stack) -> Client:
    headers = {"Authorization": f"Bearer {stack.service_token}"}
    account_id = f"chaos{stack.run_id}"
    async with httpx.AsyncClient(base_url=stack.url("registry"), headers=headers,
                                 timeout=30) as reg:
        r = await reg.post("/internal/accounts", json={"id": account_id, "name": account_id,
                                                       "admin_name": "admin"})
        r.raise_for_status()
        api_key = r.json()["api_key"]
    client = Client(stack.url("gateway"), account_id, api_key)
    (await client.http.post("/terms-of-use", json={"accept": True})).raise_for_status()
    r = await client.http.post("/lambdas", json={"name": "chaos", "code": LAMBDA_CODE,
                                                 "runtime": "nodejs"})
    r.raise_for_status()
    client.lambda_id = r.json()["id"]
    (await client.http.post(f"/lambdas/{client.lambda_id}/deployments")).raise_for_status()
    deadline = time.monotonic() + 120
    while True:
        body = (await client.http.get(f"/lambdas/{client.lambda_id}")).json()
        if body.get("deployment_state") == "Failed":
            raise RuntimeError(f"deployment failed: {body.get('deployment_cause')}")
        if body.get("state") == "Productive" and body.get("deployment_state") == "Deployed":
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the chaos lambda was not deployed within 120 s")
        await asyncio.sleep(0.3)
    # Warm: the first calls pay the cold start.
    if await probe_until_ok(client, time.monotonic(), 60) is None:
        raise RuntimeError("the chaos lambda does not answer before any fault")
    return client


async def run(names: list[str], plan: Plan, keep: bool) -> list[Outcome]:
    stack = Stack(keep=keep)
    outcomes: list[Outcome] = []
    try:
        await stack.start()
        client = await setup_tenant(stack)
        try:
            for name in names:
                log(f"--- {name}")
                if name == "invoker_kill":
                    out = await with_load(stack, client, plan, name,
                                          kill_and_restart(stack, "invoker", plan))
                elif name == "log_ingest_kill":
                    out = await with_load(stack, client, plan, name,
                                          kill_and_restart(stack, "log_ingest", plan))
                elif name == "kafka_restart":
                    out = await with_load(stack, client, plan, name,
                                          restart_infra(stack, "kafka", plan))
                elif name == "postgres_restart":
                    out = await with_load(stack, client, plan, name,
                                          restart_infra(stack, "postgres", plan))
                elif name == "scheduler_leader_kill":
                    out = await scheduler_leader_kill(stack, client, plan)
                else:
                    raise ValueError(name)
                log(f"{name}: {json.dumps(asdict(out))}")
                outcomes.append(out)
        finally:
            await client.close()
    finally:
        if keep:
            log(f"keeping {stack.home}; logs in {stack.home / 'logs'}")
        await asyncio.to_thread(stack.stop)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ci", action="store_true", help="small load, four scenarios (~2.5 min)")
    parser.add_argument("--scenarios", default="", help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--json", default=str(RESULTS), help="where to write the result")
    parser.add_argument("--keep", action="store_true", help="keep the private home and its logs")
    args = parser.parse_args(argv)
    names = [n for n in args.scenarios.split(",") if n] or list(CI_SCENARIOS if args.ci else SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    plan = CI if args.ci else FULL
    try:
        outcomes = asyncio.run(run(names, plan, args.keep))
    except (RuntimeError, httpx.HTTPError, OSError) as exc:
        log(f"harness failed: {exc}")
        return 2
    result = {"scenarios": [asdict(o) for o in outcomes]}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    for o in outcomes:
        log(f"{o.name:<22} accepted {o.accepted:>5}  completed {o.completed:>5}  lost {o.lost:>3}  "
            f"duplicated {o.duplicated:>3}  recovery {o.recovery_s} s  "
            f"sync unanswered {o.sync_unanswered}  {'ok' if o.passed() else 'MISSED'}")
    print(json.dumps(result), flush=True)
    return 0 if all(o.passed() for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
