"""Scale-out benchmark: sync throughput by invoker and gateway count, and cold starts by invoker count.

    python bench/scale.py [--quick] [--json FILE] [--lambdas N] [--max-containers N]
                          [--only throughput|cold] [--keep]

What it measures (docs/scaling.md has the figures and what they mean):

1. **Throughput**, synchronous invocations per second answered 200, with wrk at
   a fixed number of connections, for the layouts (invokers, gateways) = (1,1),
   (1,2), (2,2), (2,1), (3,1), (3,2). The load is spread over 8 lambdas whose ids
   hash to the 8 partitions of the invocations topic, one each, so every
   invoker owns some of it whatever the assignment. Each figure is the median of
   3 runs with min and max, the load average at each start and the CPU split
   (percent of one core per process, by replica) of the median run.
2. **Cold-start rate under a mixed workload**: N lambdas (100; 30 with
   ``--quick``) called with Zipf-distributed popularity (s = 1) by 4 closed-loop
   callers, with 1 and with 3 invokers. Each invoker keeps at most
   ``--max-containers`` containers (32, the default setting; 20 with ``--quick``),
   4 of them pre-warmed runners, so one invoker cannot keep every lambda warm and
   three (nearly) can. The rate is the share of answers with ``cold_start: true``
   after every lambda has been called once.

It runs on a stack of its own, started the way ``make up INVOKERS=n GATEWAYS=m``
starts one (:mod:`fnbus.local`): a temporary ``FNBUS_HOME``, a fresh database on the
shared PostgreSQL, a topic prefix and ports of its own; Kafka, PostgreSQL and the
Docker engine are shared. Between throughput measurements only the layout changes
(``fnbus local start`` with other counts keeps what stays), and invokers are only
added: a static group member that leaves keeps its partitions until its session
times out. Each throughput figure follows warm-up rounds until no invoker is still
starting containers. The cold-start phases come last, on invokers restarted with the
smaller pool (after waiting out the group session). Only registry, deployer,
invokers and gateways run (the scheduler and log-ingest are not on the sync path).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka.partitioner import murmur2

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "libs"), str(REPO)]

from bench import cpu, wrk  # noqa: E402
from bench.gateway import Credentials, Gateway, node_code  # noqa: E402
from bench.private_stack import delete_topics, remove_containers  # noqa: E402
from bench.stats import median  # noqa: E402
from fnbus import local  # noqa: E402
from fnbus.config import Settings  # noqa: E402
from fnbus.topics import Topics  # noqa: E402

SERVICES = ["registry", "deployer", "invoker", "gateway"]
INVOCATION_PARTITIONS = 8  # fnbus.topics: the invocations topic
MAX_INVOKERS = 3
LAYOUTS = [(1, 1), (1, 2), (2, 2), (2, 1), (3, 1), (3, 2)]  # invokers never shrink
COLD_CALLERS = 4
GROUP_SESSION_S = 10  # services/invoker/dispatch.py SESSION_TIMEOUT_MS
WARMUP_ROUNDS_MAX = 8
ZIPF_S = 1.0


@dataclass(frozen=True)
class Plan:
    runs: int
    run_s: int
    warmup_s: int
    connections: int
    lambdas: int
    max_containers: int
    cold_calls: int

    # 16 connections over the 8 spread lambdas: at most 16 busy containers, which one
    # invoker holds even with --quick's smaller pool (a pool smaller than the callers
    # thrashes: every call waits for a container start).
    @staticmethod
    def full() -> Plan:
        return Plan(runs=3, run_s=10, warmup_s=6, connections=16, lambdas=100, max_containers=32,
                    cold_calls=800)

    @staticmethod
    def quick() -> Plan:
        return Plan(runs=3, run_s=5, warmup_s=5, connections=16, lambdas=30, max_containers=20,
                    cold_calls=300)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load1() -> float:
    return os.getloadavg()[0]


def partition_of(lambda_id: str) -> int:
    """Where the gateway's producer puts this lambda's requests (Kafka's default partitioner)."""
    return (murmur2(lambda_id.encode()) & 0x7FFFFFFF) % INVOCATION_PARTITIONS


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_block(size: int) -> int:
    """A port whose next ``size - 1`` ports are free too (the replicas' ports step by 1).

    Below the ephemeral range: replicas bind their ports long after the start (a new
    layout), and by then an outgoing connection (wrk's, a Kafka client's) may hold
    any port of that range.
    """
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, max(20_001, _ephemeral_low() - size))
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + size):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no block of free ports")


def free_port() -> int:
    return free_block(1)


# --- the private stack -----------------------------------------------------------------------


class ScaleStack:
    """Registry, deployer, invokers and gateways of this run, driven by :mod:`fnbus.local`.

    1. ``start()`` creates the database and the home; ``layout(n, m)`` (re)starts the
       processes for n invokers and m gateways and waits until each is healthy.
    2. ``stop()`` stops every replica, removes the containers of this run's invoker
       ids, deletes the topics and the database and removes the home. Safe twice.
    """

    def __init__(self, base: Settings) -> None:
        self.run_id = secrets.token_hex(3)
        self.base = base
        # Short: runner sockets are <home>/sockets/<instance id>/<container>/runner.sock,
        # and a unix socket path is at most 107 bytes.
        self.home = Path(tempfile.mkdtemp(prefix="fnsc-"))
        port = free_block(2 * MAX_INVOKERS + 1)
        self.db_name = f"fnbus_scale_{self.run_id}"
        token = secrets.token_urlsafe(24)
        self.fields: dict[str, Any] = {
            "home": str(self.home),
            "kafka_bootstrap": base.kafka_bootstrap,
            "database_url": base.database_url.rsplit("/", 1)[0] + f"/{self.db_name}",
            "topic_prefix": f"scale{self.run_id}",
            "instance_id": f"sc{self.run_id}",
            "service_token": token, "jwt_secret": f"jwt-{token}", "secrets_key": f"key-{token}",
            # gateway: port, own ports port+1..+3; invokers: port+4..+6
            "gateway_port": port, "invoker_port": port + MAX_INVOKERS + 1, "replica_port_step": 1,
            "registry_port": free_port(), "deployer_port": free_port(),
            "scheduler_port": free_port(), "log_ingest_port": free_port(),
            "max_containers": Settings().max_containers,
            "account_invocations_per_s": 1_000_000, "account_invocations_burst": 1_000_000,
            "account_async_backlog_max": 1_000_000, "log_json": "false", "log_level": "WARNING",
        }
        for name in ("registry", "scheduler", "log_ingest"):
            self.fields[f"{name}_url"] = f"http://127.0.0.1:{self.fields[f'{name}_port']}"
        self.fields["public_url"] = f"http://127.0.0.1:{port}"
        self.started = False
        self.layout_now: tuple[int, int] | None = None

    @property
    def gateway_url(self) -> str:
        return str(self.fields["public_url"])

    def settings(self, invokers: int, gateways: int) -> Settings:
        return Settings(**self.fields, invokers=invokers, gateways=gateways)

    def env(self, invokers: int, gateways: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FNBUS_")}
        env.update({f"FNBUS_{k.upper()}": str(v) for k, v in self.fields.items()})
        env.update({"FNBUS_INVOKERS": str(invokers), "FNBUS_GATEWAYS": str(gateways),
                    "PYTHONPATH": os.pathsep.join([str(REPO / "libs"), str(REPO)])})
        return env

    async def start(self) -> None:
        admin = await asyncpg.connect(self.base.database_url.rsplit("/", 1)[0] + "/postgres", timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{self.db_name}"')
        finally:
            await admin.close()
        self.started = True

    async def layout(self, invokers: int, gateways: int) -> float:
        """Run that many replicas; returns the seconds it took until all were healthy."""
        t0 = time.monotonic()
        code = await asyncio.to_thread(local.main, "start", self.settings(invokers, gateways), SERVICES,
                                       self.env(invokers, gateways))
        if code != 0:
            raise RuntimeError(f"layout {invokers}x{gateways} did not start; logs in {self.home / 'logs'}")
        self.layout_now = (invokers, gateways)
        return time.monotonic() - t0

    async def fresh_invokers(self, max_containers: int) -> None:
        """Stop every invoker, let the group forget them, start one with another pool size."""
        invokers, gateways = self.layout_now or (1, 1)
        await asyncio.to_thread(local.main, "stop", self.settings(invokers, gateways), ["invoker"])
        # Static members keep their partitions until their session expires.
        await asyncio.sleep(GROUP_SESSION_S + 2)
        self.fields["max_containers"] = max_containers
        await self.layout(1, gateways)

    async def account(self) -> Credentials:
        token = self.fields["service_token"]
        async with httpx.AsyncClient(base_url=self.fields["registry_url"], timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as c:
            r = await c.post("/internal/accounts", json={"id": f"scale{self.run_id}",
                                                         "name": "scale bench", "admin_name": "admin"})
            r.raise_for_status()
            created = r.json()
        creds = Credentials(self.gateway_url, f"scale{self.run_id}", created["api_key"])
        async with httpx.AsyncClient(base_url=f"{self.gateway_url}/api/v1/accounts/{creds.account_id}",
                                     headers={"Authorization": creds.authorization}, timeout=30) as c:
            (await c.post("/terms-of-use", json={"accept": True})).raise_for_status()
        return creds

    def roots(self) -> dict[str, tuple[int, ...]]:
        """Root pids for the CPU split: every replica, and the shared Kafka and PostgreSQL."""
        names = [n for s in SERVICES for n in local.recorded(self.settings(1, 1), s)]
        roots = cpu.read_roots(self.home / "run", names, replicas=False)
        shared = Path(os.environ.get("FNBUS_HOME") or REPO / ".fnbus") / "run"
        roots.update(cpu.read_roots(shared, ["kafka", "postgres"]))
        return roots

    async def stop(self, keep_home: bool = False) -> None:
        if not self.started:
            return
        self.started = False
        settings = self.settings(MAX_INVOKERS, 2)
        await asyncio.to_thread(local.main, "stop", settings, SERVICES)
        await asyncio.to_thread(self._remove_containers, settings)
        await self._delete_topics()
        try:
            admin = await asyncpg.connect(self.base.database_url.rsplit("/", 1)[0] + "/postgres", timeout=10)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            finally:
                await admin.close()
        except (OSError, asyncpg.PostgresError) as exc:
            say(f"could not drop {self.db_name}: {exc}")
        if not keep_home:
            shutil.rmtree(self.home, ignore_errors=True)

    @staticmethod
    def _remove_containers(settings: Settings) -> None:
        """Containers labelled with one of this run's invoker ids (the engine is shared)."""
        remove_containers(r.instance_id for r in local.plan(settings, ["invoker"]) if r.instance_id)

    async def _delete_topics(self) -> None:
        await delete_topics(self.base.kafka_bootstrap, Topics(self.fields["topic_prefix"]).prefix, say)


# --- lambdas -------------------------------------------------------------------------------


async def deploy_many(gw: Gateway, names: list[str], parallel: int = 4) -> list[str]:
    """Create and deploy lambdas; returns their ids once all are Productive."""
    limit = asyncio.Semaphore(parallel)

    async def one(name: str) -> str:
        async with limit:
            body, save_s = await gw.create_lambda(name, node_code(name))
            await gw.deploy_and_wait(body["id"], 1, time.perf_counter(), save_s, timeout_s=300)
            return str(body["id"])

    return list(await asyncio.gather(*(one(n) for n in names)))


async def one_per_partition(gw: Gateway, tag: str) -> list[str]:
    """Deployed lambdas whose ids hash to partitions 0..7, one each (ids are random)."""
    picked: dict[int, str] = {}
    for n in range(400):
        body, _ = await gw.create_lambda(f"{tag}-p{n}", node_code(f"{tag}-p{n}"))
        picked.setdefault(partition_of(body["id"]), body["id"])
        if len(picked) == INVOCATION_PARTITIONS:
            break
    if len(picked) < INVOCATION_PARTITIONS:
        raise RuntimeError("could not find a lambda id for every partition")
    ids = [picked[p] for p in sorted(picked)]

    async def deploy(lambda_id: str) -> None:
        await gw.deploy_and_wait(lambda_id, 1, time.perf_counter(), 0.0, timeout_s=300)

    await asyncio.gather(*(deploy(i) for i in ids))
    return ids


# --- throughput ----------------------------------------------------------------------------

ROTATE_PATHS = r"""
paths = { %(paths)s }
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, paths[(counter %% #paths) + 1])
end
"""


def wrk_rotating(path_to_wrk: str, base_url: str, paths: list[str], authorization: str, body: str, *,
                 connections: int, duration_s: int) -> wrk.WrkResult:
    """bench/wrk.py's script and parser, with requests rotating over ``paths``."""
    script_text = wrk.lua_script(body) + ROTATE_PATHS % {"paths": ", ".join(json.dumps(p) for p in paths)}
    with tempfile.TemporaryDirectory(prefix="fnbus-scale-wrk-") as tmp:
        script = Path(tmp) / "rotate.lua"
        script.write_text(script_text)
        env = {**os.environ, wrk.AUTH_ENV: authorization}
        argv = [path_to_wrk, "-t2", f"-c{connections}", f"-d{duration_s}s", "--timeout=30s",
                "-s", str(script), base_url]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration_s + 90,
                              check=False)
    if proc.returncode != 0:
        raise wrk.WrkOutputError(f"wrk exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return wrk.parse_output(proc.stdout, connections)


async def throughput(stack: ScaleStack, creds: Credentials, ids: list[str], plan: Plan,
                     wrk_path: str) -> dict[str, Any]:
    paths = [f"/api/v1/accounts/{creds.account_id}/lambdas/{i}/invoke" for i in ids]
    body = json.dumps({"headers": [], "payload": {"bench": "scale"}})

    def run(duration_s: int) -> wrk.WrkResult:
        return wrk_rotating(wrk_path, stack.gateway_url, paths, creds.authorization, body,
                            connections=plan.connections, duration_s=duration_s)

    # New owners start their containers (seconds each on a busy machine): warm up until
    # no invoker is starting any.
    warmups = 0
    while warmups < WARMUP_ROUNDS_MAX:
        warmups += 1
        await asyncio.to_thread(run, plan.warmup_s)
        pools = await pool_sizes(stack)
        if not any(isinstance(p, dict) and p.get("starting") for p in pools.values()):
            break
    runs: list[dict[str, Any]] = []
    for _ in range(plan.runs):
        load = load1()
        before = await asyncio.to_thread(cpu.take, time.monotonic())
        result = await asyncio.to_thread(run, plan.run_s)
        after = await asyncio.to_thread(cpu.take, time.monotonic())
        shares, others = cpu.split(before, after, stack.roots())
        runs.append({"ok_per_s": round(result.ok_per_s, 1), "errors": result.errors, "load1": round(load, 2),
                     "latency_ms": result.to_dict()["latency_ms"], "cpu_percent_of_one_core": shares,
                     "other_processes": others})
    rates = [r["ok_per_s"] for r in runs]
    mid = sorted(runs, key=lambda r: r["ok_per_s"])[len(runs) // 2]
    return {"ok_per_s": {"median": median(rates), "min": min(rates), "max": max(rates)},
            "errors": sum(r["errors"] for r in runs), "load1_at_starts": [r["load1"] for r in runs],
            "warmup_rounds": warmups, "pools_after": await pool_sizes(stack),
            "p50_ms_of_median_run": mid["latency_ms"]["p50"], "cpu_of_median_run": cpu.describe(
                mid["cpu_percent_of_one_core"], top=9), "runs": runs}


# --- cold starts under a mixed workload ----------------------------------------------------------


def zipf_weights(n: int, s: float = ZIPF_S) -> list[float]:
    return [1.0 / (rank ** s) for rank in range(1, n + 1)]


async def cold_start_rate(gw: Gateway, ids: list[str], calls: int, seed: int) -> dict[str, Any]:
    """Touch every lambda once, then ``calls`` Zipf-chosen calls; the rate is over the latter."""
    limit = asyncio.Semaphore(COLD_CALLERS)

    async def touch(lambda_id: str) -> None:
        async with limit:
            await gw.invoke(lambda_id, {"bench": "touch"})

    await asyncio.gather(*(touch(i) for i in ids))
    rng = random.Random(seed)
    order = rng.sample(ids, len(ids))  # popularity rank → lambda: the same for every layout
    chosen = rng.choices(order, weights=zipf_weights(len(order)), k=calls)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for lambda_id in chosen:
        queue.put_nowait(lambda_id)
    cold = ok = failed = 0
    latencies: list[float] = []
    t0 = time.perf_counter()

    async def caller() -> None:
        nonlocal cold, ok, failed
        while not queue.empty():
            lambda_id = queue.get_nowait()
            inv = await gw.invoke(lambda_id, {"bench": "mixed"})
            if inv.ok:
                ok += 1
                cold += bool(inv.cold_start)
                latencies.append(inv.latency_ms)
            else:
                failed += 1

    await asyncio.gather(*(caller() for _ in range(COLD_CALLERS)))
    wall = time.perf_counter() - t0
    return {"calls": calls, "ok": ok, "failed": failed, "cold": cold,
            "cold_rate": round(cold / ok, 4) if ok else None, "wall_s": round(wall, 1),
            "distinct_lambdas_called": len(set(chosen)),
            "latency_p50_ms": round(median(latencies), 1) if latencies else None}


async def pool_sizes(stack: ScaleStack) -> dict[str, Any]:
    """Each invoker's /internal/pool answer."""
    out: dict[str, Any] = {}
    token = stack.fields["service_token"]
    invokers, gateways = stack.layout_now or (1, 1)
    async with httpx.AsyncClient(timeout=5, headers={"Authorization": f"Bearer {token}"}) as c:
        for r in local.plan(stack.settings(invokers, gateways), ["invoker"]):
            try:
                out[r.name] = (await c.get(f"http://127.0.0.1:{r.port}/internal/pool")).json()
            except httpx.HTTPError as exc:
                out[r.name] = str(exc)
    return out


# --- the run ---------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    plan = Plan.quick() if args.quick else Plan.full()
    if args.lambdas:
        plan = Plan(**{**plan.__dict__, "lambdas": args.lambdas})
    if args.max_containers:
        plan = Plan(**{**plan.__dict__, "max_containers": args.max_containers})
    wrk_log: list[str] = []
    wrk_path = wrk.find_or_install(True, wrk_log)  # the Debian package, as bench/run.py
    if wrk_path is None:
        raise SystemExit(f"wrk is needed: {'; '.join(wrk_log)}")
    stack = ScaleStack(Settings())
    report: dict[str, Any] = {
        "bench": "scale", "mode": "quick" if args.quick else "full", "plan": plan.__dict__,
        "machine": {"cpus": os.cpu_count(), "load1_at_start": round(load1(), 2)},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "invocation_partitions": INVOCATION_PARTITIONS, "throughput": {}, "cold_starts": {},
        "layout_start_s": {}}
    try:
        await stack.start()
        say(f"private stack in {stack.home}, topics {stack.fields['topic_prefix']}.*")
        report["layout_start_s"]["1x1"] = round(await stack.layout(1, 1), 1)
        creds = await stack.account()
        gw = Gateway(creds, max_connections=16)
        try:
            say("deploying 8 lambdas, one per partition of the invocations topic")
            spread = await one_per_partition(gw, f"tp{stack.run_id}")
            mixed: list[str] = []
            if args.only != "throughput":
                say(f"deploying {plan.lambdas} lambdas for the mixed workload")
                t0 = time.monotonic()
                mixed = await deploy_many(gw, [f"mx{stack.run_id}-{n}" for n in range(plan.lambdas)])
                report["deploy_s_for_mixed_lambdas"] = round(time.monotonic() - t0, 1)
                say(f"  deployed in {report['deploy_s_for_mixed_lambdas']} s")

            async def cold(invokers: int) -> None:
                say(f"cold starts, {plan.lambdas} lambdas, {invokers} invoker(s), "
                    f"pools of {plan.max_containers}")
                result = await cold_start_rate(gw, mixed, plan.cold_calls, seed=7)
                result["pools"] = await pool_sizes(stack)
                result["max_containers_per_invoker"] = plan.max_containers
                report["cold_starts"][f"{invokers}_invokers"] = result
                say(f"  cold-start rate {result['cold_rate']} ({result['cold']} of {result['ok']})")

            for invokers, gateways in LAYOUTS if args.only != "cold" else []:
                key = f"{invokers}x{gateways}"
                if stack.layout_now != (invokers, gateways):
                    report["layout_start_s"][key] = round(await stack.layout(invokers, gateways), 1)
                say(f"throughput, {invokers} invoker(s), {gateways} gateway(s)")
                result = await throughput(stack, creds, spread, plan, wrk_path)
                report["throughput"][key] = result
                rate = result["ok_per_s"]
                say(f"  {rate['median']:.0f}/s (min {rate['min']:.0f}, max {rate['max']:.0f}), "
                    f"{result['errors']} errors, load {result['load1_at_starts']}, "
                    f"{result['warmup_rounds']} warm-up round(s); CPU: {result['cpu_of_median_run']}")
            if args.only == "throughput":
                report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                return report
            # Cold starts last, on fresh invokers with the smaller pools.
            say(f"restarting the invokers with pools of {plan.max_containers}")
            await stack.fresh_invokers(plan.max_containers)
            await cold(1)
            await stack.layout(MAX_INVOKERS, stack.layout_now[1] if stack.layout_now else 1)
            await cold(MAX_INVOKERS)
        finally:
            await gw.aclose()
    finally:
        await stack.stop(keep_home=args.keep)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return report


def summary_lines(report: dict[str, Any]) -> Iterator[str]:
    for key, result in report["throughput"].items():
        invokers, gateways = key.split("x")
        rate = result["ok_per_s"]
        yield (f"{invokers} invoker(s), {gateways} gateway(s): {rate['median']:.0f}/s "
               f"(min {rate['min']:.0f}, max {rate['max']:.0f}), p50 {result['p50_ms_of_median_run']} ms; "
               f"CPU {result['cpu_of_median_run']}")
    for key, result in report["cold_starts"].items():
        yield f"cold-start rate, {key.replace('_', ' ')}: {result['cold_rate']} ({result['cold']}/{result['ok']})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, 30 lambdas, pools of 20")
    parser.add_argument("--json", metavar="FILE", help="write the full report here")
    parser.add_argument("--lambdas", type=int, default=0, help="lambdas in the mixed workload")
    parser.add_argument("--max-containers", type=int, default=0, help="per invoker")
    parser.add_argument("--keep", action="store_true", help="keep the private home (logs)")
    parser.add_argument("--only", choices=("throughput", "cold"), help="one of the two measurements")
    args = parser.parse_args(argv)
    report = asyncio.run(main_async(args))
    for line in summary_lines(report):
        print(line)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
