"""fnbus benchmark harness: ``make bench`` (deploy/stack.sh bench) runs this after starting the stack.

Measures, through the public API of a running stack (credentials from
``$FNBUS_HOME/credentials.json``), or of a private copy it starts itself
(``--private-stack``):

- warm synchronous latency p50/p95/p99 at concurrency 1 (wrk, then httpx reading
  the gateway's ``Server-Timing``: the per-hop breakdown) and 16;
- throughput at saturation (wrk with a Lua script; httpx when wrk is unavailable);
- async: 202s per second, and the end-to-end completion rate (accepted →
  activation record) with the platform's CPU per completed call;
- cold start: the first invocation of a new version on a pre-warmed container,
  and a burst that outruns the pre-warmed containers (its slowest call had none);
- deploy time: the save (create or PATCH) → lambda Productive and Deployed;

and in the same run the floors: a warm runner over its socket, a cold container
started directly (DockerRuntime + RunnerConnection), one Kafka produce→consume
hop with the project's producer, ``docker run`` of the runtime image, and the
Kafka producer/consumer sweeps of ``bench/kafka_bench.py``.

Every headline figure is the median of ``--runs`` (3) runs with min and max; the
run records the load average at its start and end and the CPU split over it.
Prints a table and writes JSON (default ``bench/results/<date>-<commit>.json``
and a copy in ``latest.json``); ``bench/report.py FILE`` turns it into the
README's tables. Options: ``--quick`` (fewer iterations), ``--json PATH``,
``--strict`` (exit 1 when a target is missed), ``--scale FILE`` (include a
``bench/scale.py`` result); see ``--help``. Extra arguments can also come from
the ``BENCH_ARGS`` environment variable (``make bench BENCH_ARGS=--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import resource
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bench import accept_floor, cpu, floors, kafka_bench, metrics, wrk  # noqa: E402
from bench.gateway import (  # noqa: E402
    BenchError,
    DeployTiming,
    Gateway,
    Invocation,
    closed_loop,
    fnbus_home,
    load_credentials,
    node_code,
    unique_name,
)
from bench.kafka_bench import ActivationWatcher  # noqa: E402
from bench.private_stack import PrivateStack  # noqa: E402
from bench.stats import (  # noqa: E402
    REMAINDER,
    Figure,
    Summary,
    at_least,
    at_most,
    build_report,
    chunk_percentiles,
    cpu_split,
    format_table,
    hop_breakdown,
    median,
    parse_server_timing,
    percentile,
    proc_stat_ticks,
    result_file_name,
    spread_figure,
    summarize,
    summary_figures,
    verdict,
)
from fnbus import local  # noqa: E402
from fnbus.config import SERVICE_NAMES, Settings  # noqa: E402
from fnbus.topics import Topics  # noqa: E402

# Issue 12's targets on the 2-core reference machine.
TARGET_WARM_P50_MS = 5.0
TARGET_WARM_P99_MS = 15.0
TARGET_THROUGHPUT = 1000.0
TARGET_OVERHEAD_P50_MS = 3.0  # warm p50 above the warm-runner floor
TARGET_ASYNC_ACCEPTED = 5000.0  # issue 12: 202s per second
TARGET_FRONT_P50_MS = 1.0  # issue 12: gateway front (HTTP + auth, no Kafka)
ASYNC_RUNS = 3
ASYNC_DRAIN_MAX_S = 60.0
TARGET_COLD_PREWARMED_MS = 20.0
TARGET_DEPLOY_S = 5.0

SETTLE_AFTER_DEPLOY_S = 0.5  # let the change feed reach the gateway and old containers retire
PREWARM_WAIT_S = 15.0
OTHER_CPU_WARN_PERCENT = 30.0  # CPU of processes outside the stack during a wrk run, % of one core

S_WARM = "warm sync latency (gateway)"
S_THROUGHPUT = "throughput at saturation (gateway)"
S_COLD = "cold start (first invocation of a new version)"
S_DEPLOY = "deploy (save → Productive)"
S_FLOORS = "floors"
S_HOPS = "per-hop breakdown (sync, concurrency 1)"
S_KAFKA = "Kafka tuning (project producer, shared broker)"
RUNS = 3  # every headline figure is the median of this many runs


@dataclass(frozen=True)
class Plan:
    c1_calls: int
    c16_calls: int
    warmup_calls: int
    wrk_connections: tuple[int, ...]
    wrk_duration_s: int
    wrk_c1_s: int
    httpx_duration_s: float
    cold_prewarmed_reps: int
    cold_burst_reps: int
    runner_runs: int
    runner_cold: int
    kafka_round_trips: int
    docker_runs: int
    front_calls: int

    @staticmethod
    def full() -> Plan:
        return Plan(c1_calls=900, c16_calls=3000, warmup_calls=200, wrk_connections=(16, 32, 64),
                    wrk_duration_s=10, wrk_c1_s=10, httpx_duration_s=10.0, cold_prewarmed_reps=5,
                    cold_burst_reps=2, runner_runs=500, runner_cold=5, kafka_round_trips=500, docker_runs=5,
                    front_calls=500)

    @staticmethod
    def quick() -> Plan:
        return Plan(c1_calls=150, c16_calls=480, warmup_calls=50, wrk_connections=(32,),
                    wrk_duration_s=5, wrk_c1_s=4, httpx_duration_s=5.0, cold_prewarmed_reps=2,
                    cold_burst_reps=1, runner_runs=200, runner_cold=2, kafka_round_trips=200, docker_runs=3,
                    front_calls=200)


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def note_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:400]


# --------------------------------------------------------------------------- machine


def _first_line(path: str, prefix: str, sep: str = ":") -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix) and sep in line:
                    return line.split(sep, 1)[1].strip().strip('"')
    except OSError:
        return None
    return None


def machine_info(settings: Settings) -> dict[str, Any]:
    mem_kb = _first_line("/proc/meminfo", "MemTotal")
    try:
        docker_version = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                                        capture_output=True, text=True, timeout=20, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        docker_version = ""
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _first_line("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(mem_kb.split()[0]) / 1024 / 1024, 1) if mem_kb else None,
        "kernel": platform.release(),
        "os": _first_line("/etc/os-release", "PRETTY_NAME=", "=") or platform.platform(),
        "python": platform.python_version(),
        "docker_server": docker_version or None,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": list(os.getloadavg()),
        "settings": {"prewarm_per_runtime": settings.prewarm_per_runtime,
                     "max_containers": settings.max_containers,
                     "max_concurrent_per_account": settings.max_concurrent_per_account,
                     "lambda_cpus": settings.lambda_cpus, "lambda_memory_mb": settings.lambda_memory_mb,
                     "runtime_image_node": settings.runtime_image_node,
                     "gateways": settings.gateways, "invokers": settings.invokers,
                     "background_nice": settings.background_nice},
    }


# --------------------------------------------------------------------------- the gateway part


def server_note(server: dict[str, float | None], *, cold_starts: bool = True) -> str:
    """A note's server-side part: the gateway's and invoker's means from /metrics over the
    same window, and (unless the caller counts them itself) the cold starts seen meanwhile."""
    note = ""
    if server.get("gateway_mean_ms") is not None:
        note += (f"; server-side means: gateway {server['gateway_mean_ms']:.1f} ms, of which invoker "
                 f"{server.get('invoker_warm_mean_ms') or 0:.1f} ms (pick-up → result)")
    if cold_starts and server.get("invoker_cold_invocations"):
        note += f"; {server['invoker_cold_invocations']:.0f} cold starts during measurement"
    return note


def wrk_summary(res: wrk.WrkResult) -> Summary:
    """wrk's latency histogram as a Summary (wrk reports no minimum)."""
    return Summary(n=res.ok_requests, min=None, mean=res.lat_mean_ms, p50=res.lat_p50_ms, p95=res.lat_p95_ms,
                   p99=res.lat_p99_ms, max=res.lat_max_ms)


@dataclass
class BenchLambda:
    id: str = ""
    version: int = 0


class GatewayBench:
    def __init__(self, gw: Gateway, settings: Settings, plan: Plan, figures: list[Figure],
                 allow_install: bool, runs: int = RUNS) -> None:
        self.gw = gw
        self.runs = runs
        self.hops: dict[str, Any] | None = None
        self.pyspy: Path | None = None
        self.settings = settings
        self.plan = plan
        self.figures = figures
        self.allow_install = allow_install
        self.main = BenchLambda()
        self.deploys: list[tuple[str, DeployTiming]] = []
        self.cold_samples: list[dict[str, Any]] = []
        self.bursts: list[dict[str, Any]] = []
        self.invoker_url = settings.url_of("invoker")
        # Each gateway replica's own port (fnbus.local): /metrics of that process alone.
        self.gateway_metric_urls = [f"http://127.0.0.1:{r.port}" for r in local.plan(settings, ["gateway"])]
        self.home = fnbus_home(REPO)
        self.wrk_path: str | None = None
        self.wrk_log: list[str] = []

    # -- helpers -------------------------------------------------------------------------
    async def pool_stats(self) -> dict[str, int] | None:
        try:
            r = await self.gw.client.get(f"{self.invoker_url}/internal/pool", timeout=2, headers={
                "Authorization": f"Bearer {self.settings.service_token}"})
            return r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    async def wait_prewarmed(self) -> dict[str, int] | None:
        """Until the invoker shows its pre-warmed runners (both runtimes) again, at most PREWARM_WAIT_S."""
        want = self.settings.prewarm_per_runtime * 2
        deadline = time.monotonic() + PREWARM_WAIT_S
        stats = await self.pool_stats()
        while stats is not None and stats.get("prewarmed", 0) < want and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            stats = await self.pool_stats()
        return stats

    async def metrics(self) -> metrics.Snapshot:
        return await metrics.snapshot(self.gw.client, self.gateway_metric_urls, self.invoker_url)

    async def new_version(self, lam: BenchLambda, kind: str | None) -> DeployTiming:
        """Save code (create the lambda the first time, PATCH afterwards), deploy, wait for Productive."""
        marker = f"v{lam.version + 1} {time.time_ns()}"
        t0 = time.perf_counter()
        if not lam.id:
            body, save_s = await self.gw.create_lambda(unique_name(), node_code(marker))
            lam.id = body["id"]
        else:
            body, save_s = await self.gw.patch_code(lam.id, node_code(marker))
        lam.version = int(body["version"])
        timing = await self.gw.deploy_and_wait(lam.id, lam.version, t0, save_s)
        if kind is not None:
            self.deploys.append((kind, timing))
        return timing

    @staticmethod
    def _cold_sample(kind: str, lam: BenchLambda, inv: Invocation, pool_before: dict[str, int] | None
                     ) -> dict[str, Any]:
        return {"kind": kind, "lambda_id": lam.id, "version": lam.version, "latency_ms": round(inv.latency_ms, 2),
                "status": inv.status, "cold_start": inv.cold_start, "duration_ms": inv.duration_ms,
                "activation_id": inv.activation_id, "pool_before": pool_before}

    def _wrk(self) -> str | None:
        if self.wrk_path is None and not self.wrk_log:
            self.wrk_path = wrk.find_or_install(self.allow_install, self.wrk_log)
            if self.wrk_path is None and not self.wrk_log:
                self.wrk_log.append("wrk not found (--no-install)")
        return self.wrk_path

    async def cpu_snapshot(self) -> cpu.CpuSnapshot | None:
        try:
            return await asyncio.to_thread(cpu.take, time.monotonic())
        except (OSError, ValueError):
            return None  # not Linux, or /proc unreadable: the CPU split is optional

    def cpu_usage(self, before: cpu.CpuSnapshot | None, after: cpu.CpuSnapshot | None) -> dict[str, Any]:
        """Percent of one core per component; ``other_processes`` names the busiest of ``other``."""
        if before is None or after is None:
            return {}
        roots = cpu.read_roots(self.home / "run", [*SERVICE_NAMES, "kafka", "postgres"])
        roots["bench harness"] = (os.getpid(),)
        shares, others = cpu.split(before, after, roots)
        return {**shares, "other_processes": [f"{comm} {share:.0f}%" for comm, share in others],
                "other_processes_percent": round(sum(share for _, share in others), 1)}

    async def run_wrk(self, connections: int, duration_s: int, query: str = "", lambda_id: str | None = None
                      ) -> tuple[wrk.WrkResult, dict[str, Any]]:
        """One wrk run (invoking the main lambda, or ``lambda_id``) and the CPU split during it."""
        path = await asyncio.to_thread(self._wrk)
        assert path is not None
        url = f"{self.gw.creds.gateway_url}{self.gw.base}/lambdas/{lambda_id or self.main.id}/invoke{query}"
        body = json.dumps({"headers": [], "payload": {"bench": "wrk", "connections": connections}})
        before = await self.cpu_snapshot()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        result = await asyncio.to_thread(wrk.run, path, url, self.gw.creds.authorization, body,
                                         connections=connections, duration_s=duration_s,
                                         threads=1 if connections == 1 else 2)
        shares = self.cpu_usage(before, await self.cpu_snapshot())
        # wrk has exited when the second snapshot is taken, so /proc counted it under
        # "other"; its CPU is in this process's reaped-children usage instead.
        done = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.monotonic() - started
        if shares and wall > 0:
            used = (done.ru_utime - children.ru_utime) + (done.ru_stime - children.ru_stime)
            wrk_pct = round(100.0 * used / wall, 1)
            shares["wrk"] = wrk_pct
            shares["other"] = round(max(0.0, float(shares.get("other", 0.0)) - wrk_pct), 1)
        return result, shares

    # -- steps ---------------------------------------------------------------------------
    async def setup(self) -> None:
        say("deploy: creating and deploying a new lambda")
        pool = await self.wait_prewarmed()
        timing = await self.new_version(self.main, "create")
        say(f"    create → Productive in {timing.total_s:.2f} s (v{timing.version})")
        await asyncio.sleep(SETTLE_AFTER_DEPLOY_S)
        first = await self.gw.invoke(self.main.id, {"first": True})
        if not first.ok:
            raise BenchError(f"first invocation answered {first.status}: {first.body}")
        self.cold_samples.append(self._cold_sample("new lambda", self.main, first, pool))

    async def sequential_timed(self, calls: int) -> tuple[list[tuple[float, dict[str, float]]], dict[int, int],
                                                          list[str]]:
        """``calls`` sequential sync invocations: (client-observed ms, parsed Server-Timing) of each 200."""
        url = f"{self.gw.base}/lambdas/{self.main.id}/invoke"
        samples: list[tuple[float, dict[str, float]]] = []
        statuses: dict[int, int] = {}
        errors: list[str] = []
        for n in range(calls):
            t0 = time.perf_counter()
            try:
                r = await self.gw.client.post(url, json={"headers": [], "payload": {"n": n}})
            except httpx.HTTPError as exc:
                statuses[0] = statuses.get(0, 0) + 1
                if len(errors) < 5:
                    errors.append(note_error(exc))
                continue
            latency = (time.perf_counter() - t0) * 1000
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 200:
                samples.append((latency, parse_server_timing(r.headers.get("server-timing"))))
            elif len(errors) < 5:
                errors.append(f"{r.status_code}: {r.text[:200]}")
        return samples, statuses, errors

    async def warm_c1(self) -> None:
        """Concurrency 1: ``runs`` wrk runs (primary when present: no client overhead), then
        ``runs`` sets of httpx calls that also read the per-hop ``Server-Timing``."""
        plan = self.plan
        runs = self.runs
        say(f"warm latency at concurrency 1: {plan.warmup_calls} warm-up calls")
        warm = await closed_loop(self.gw, self.main.id, concurrency=1, total=plan.warmup_calls)
        if warm.ok == 0:
            raise BenchError(f"warm-up failed: {warm.statuses} {warm.errors}")
        have_wrk = bool(await asyncio.to_thread(self._wrk))
        c1_targets = {"p50": at_most(TARGET_WARM_P50_MS), "p99": at_most(TARGET_WARM_P99_MS)}
        wrk_p50: float | None = None
        if have_wrk:
            wrk_runs: list[dict[str, Any]] = []
            results: list[wrk.WrkResult] = []
            for i in range(runs):
                say(f"    wrk, 1 connection, {plan.wrk_c1_s} s (run {i + 1}/{runs})")
                load = os.getloadavg()[0]
                before = await self.metrics()
                res, shares = await self.run_wrk(1, plan.wrk_c1_s)
                server = metrics.window(before, await self.metrics())
                results.append(res)
                wrk_runs.append({**res.to_dict(), "load1": load, "server_side": server,
                                 "cpu_percent_of_one_core": shares})
                say(f"        p50 {res.lat_p50_ms:.2f} ms, p99 {res.lat_p99_ms:.2f} ms, load {load:.1f}")
            wrk_p50 = median([r.lat_p50_ms for r in results])
            note = (f"{runs} runs of {plan.wrk_c1_s} s, sequential calls; load average at the starts: "
                    + ", ".join(f"{r['load1']:.1f}" for r in wrk_runs))
            for pct in ("p50", "p95", "p99"):
                values = [getattr(r, f"lat_{pct}_ms") for r in results]
                self.figures.append(spread_figure(
                    f"warm_c1_{pct}", S_WARM, f"concurrency 1, {pct}", values, "ms", "wrk (1 connection)",
                    c1_targets.get(pct), note if pct == "p50" else "",
                    {"runs": wrk_runs} if pct == "p50" else None))
        per_run = max(20, plan.c1_calls // runs)
        all_samples: list[tuple[float, dict[str, float]]] = []
        run_p50: list[float] = []
        run_p99: list[float] = []
        statuses: dict[int, int] = {}
        errors: list[str] = []
        for i in range(runs):
            say(f"    httpx, {per_run} sequential calls with Server-Timing (run {i + 1}/{runs})")
            samples, st, errs = await self.sequential_timed(per_run)
            for k, v in st.items():
                statuses[k] = statuses.get(k, 0) + v
            errors += errs
            if samples:
                lat = [c for c, _ in samples]
                run_p50.append(median(lat))
                run_p99.append(percentile(lat, 99))
            all_samples += samples
        breakdown = hop_breakdown(all_samples) if all_samples else None
        self.hops = breakdown
        note = f"{runs} × {per_run} sequential calls from the harness's Python client"
        if wrk_p50 is not None and run_p50:
            note += (f"; {median(run_p50) - wrk_p50:+.1f} ms at p50 against wrk: the Python client's own cost, "
                     "on the same 2 cores")
        failed = sum(n for s_, n in statuses.items() if s_ != 200)
        if failed:
            note += f"; {failed} failed ({errors[:1]})"
        details: dict[str, Any] = {"calls": per_run * runs, "statuses": {str(k): v for k, v in statuses.items()},
                                   "errors": errors[:5], "hops": breakdown}
        key, label, tool = ("warm_c1_httpx", "concurrency 1 (httpx client),", "httpx (async, keep-alive)")
        if not have_wrk:
            key, label = "warm_c1", "concurrency 1,"
            note += ("; " + "; ".join(self.wrk_log)) if self.wrk_log else ""
        self.figures.append(spread_figure(f"{key}_p50", S_WARM, f"{label} p50", run_p50, "ms", tool,
                                          None if have_wrk else c1_targets["p50"], note, details))
        self.figures.append(spread_figure(f"{key}_p99", S_WARM, f"{label} p99", run_p99, "ms", tool,
                                          None if have_wrk else c1_targets["p99"]))
        self.hop_figures(breakdown)

    def hop_figures(self, breakdown: dict[str, Any] | None) -> None:
        """One figure per hop of the gateway's Server-Timing (medians over the httpx calls)."""
        if not breakdown or not breakdown["with_header"]:
            self.figures.append(Figure(
                "hop_total", S_HOPS, "gateway total (Server-Timing)", None, "ms", "Server-Timing",
                note="the gateway sent no Server-Timing header: no per-hop breakdown"))
            return
        hops = breakdown["hops"]
        labels = {"total": "gateway total (request received → response ready)",
                  "produce": "produce (gateway send → broker ack)",
                  "queue": "queue (broker ack → invoker consumed)",
                  "dispatch": "dispatch (invoker consumed → request written to runner)",
                  "runner": "runner round trip",
                  "reply": "reply (runner result → gateway got the reply record)",
                  REMAINDER: "client + loopback (client-observed − total)"}
        for name, hop in hops.items():
            note = ""
            if name == "total":
                note = (f"{breakdown['with_header']} of {breakdown['samples']} answers carried the header; "
                        f"sum of the hop medians {breakdown['sum_of_hops_p50']:.2f} ms; client-observed p50 "
                        f"{breakdown['client_p50']:.2f} ms")
            self.figures.append(Figure(f"hop_{name}", S_HOPS, f"{labels.get(name, name)} p50", float(hop["p50"]),
                                       "ms", "Server-Timing (httpx, c1)", None, note,
                                       {"p99": hop["p99"], "n": hop["n"]}))

    async def warm_c16(self) -> None:
        plan = self.plan
        say("warm latency at concurrency 16: warm-up (16 warm containers)")
        warm = await closed_loop(self.gw, self.main.id, concurrency=16, total=max(plan.warmup_calls, 160))
        if warm.ok == 0:
            raise BenchError(f"warm-up failed: {warm.statuses} {warm.errors}")
        before = await self.metrics()
        if self._wrk():
            say(f"    wrk, 16 connections, {plan.wrk_duration_s} s")
            res, shares = await self.run_wrk(16, plan.wrk_duration_s)
            server = metrics.window(before, await self.metrics())
            summary: Summary | None = wrk_summary(res)
            tool = "wrk (16 connections, 2 threads)"
            details: dict[str, Any] = {"wrk": res.to_dict(), "server_side": server,
                                       "cpu_percent_of_one_core": shares}
            note = f"{res.ok_requests} calls in {res.duration_s:.0f} s ({res.ok_per_s:.0f}/s), {res.errors} errors"
            if shares:
                note += f"; CPU (% of one core): {cpu.describe(shares)}"
        else:
            say(f"    httpx, 16 concurrent workers, {plan.c16_calls} calls")
            result = await closed_loop(self.gw, self.main.id, concurrency=16, total=plan.c16_calls)
            server = metrics.window(before, await self.metrics())
            summary = summarize(result.latencies_ms) if result.latencies_ms else None
            tool = "httpx (async, 16 workers)"
            details = {"calls": plan.c16_calls, "ok": result.ok,
                       "statuses": {str(k): v for k, v in result.statuses.items()},
                       "server_side": server, "errors": result.errors}
            note = f"{plan.c16_calls} calls, {result.ok / result.elapsed_s:.0f}/s"
        note += server_note(server)
        self.figures += summary_figures("warm_c16", S_WARM, "concurrency 16,", summary, "ms", tool, note=note,
                                        details=details)

    async def throughput(self) -> None:
        runs: list[dict[str, Any]] = []
        best: tuple[float, dict[str, Any]] | None = None
        spy = self.start_pyspy()
        try:
            best = await self._throughput_sweep(runs)
        finally:
            self.stop_pyspy(spy)
        tool = "wrk (2 threads, Lua POST script)" if self._wrk() else "httpx (async closed loop; wrk unavailable)"
        await self._throughput_report(runs, best, tool)

    def start_pyspy(self) -> subprocess.Popen[bytes] | None:
        if self.pyspy is None:
            return None
        exe = Path(sys.executable).with_name("py-spy")
        try:
            pid = int((self.home / "run" / "gateway.pid").read_text().strip())
        except (OSError, ValueError) as exc:
            say(f"py-spy: no gateway pid ({exc})")
            return None
        self.pyspy.parent.mkdir(parents=True, exist_ok=True)
        say(f"py-spy: recording the gateway (pid {pid}) into {self.pyspy}")
        return subprocess.Popen([str(exe), "record", "-p", str(pid), "-o", str(self.pyspy), "-r", "200",
                                 "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @staticmethod
    def stop_pyspy(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None:
            return
        proc.send_signal(signal.SIGINT)  # py-spy writes the flame graph when interrupted
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()

    async def _throughput_sweep(self, runs: list[dict[str, Any]]) -> tuple[float, dict[str, Any]] | None:
        plan = self.plan
        best: tuple[float, dict[str, Any]] | None = None
        if self._wrk():
            for conns in plan.wrk_connections:
                say(f"throughput: wrk {plan.wrk_duration_s} s at {conns} connections")
                res, shares = await self.run_wrk(conns, plan.wrk_duration_s)
                entry: dict[str, Any] = {**res.to_dict(), "cpu_percent_of_one_core": shares}
                runs.append(entry)
                say(f"    {res.ok_per_s:.0f} ok/s, p50 {res.lat_p50_ms:.1f} ms, p99 {res.lat_p99_ms:.1f} ms, "
                    f"{res.errors} errors")
                if best is None or res.ok_per_s > best[0]:
                    best = (res.ok_per_s, entry)
        else:
            for conns in plan.wrk_connections:
                say(f"throughput: httpx {plan.httpx_duration_s:.0f} s at {conns} concurrent calls")
                await closed_loop(self.gw, self.main.id, concurrency=conns, duration_s=2.0)
                res2 = await closed_loop(self.gw, self.main.id, concurrency=conns, duration_s=plan.httpx_duration_s)
                rate = res2.ok / res2.elapsed_s
                entry = {"connections": conns, "ok_requests": res2.ok, "duration_s": round(res2.elapsed_s, 3),
                         "ok_per_s": round(rate, 1), "statuses": {str(k): v for k, v in res2.statuses.items()},
                         "latency_ms": summarize(res2.latencies_ms).to_dict(2) if res2.latencies_ms else None}
                runs.append(entry)
                if best is None or rate > best[0]:
                    best = (rate, entry)
        return best

    async def _throughput_report(self, runs: list[dict[str, Any]], best: tuple[float, dict[str, Any]] | None,
                                 tool: str) -> None:
        plan = self.plan
        if best is None:
            raise BenchError("no throughput run completed")
        # The headline is the median of `runs` runs at the best connection count.
        conns = int(best[1]["connections"])
        repeats = [float(best[0])]
        for i in range(self.runs - 1):
            say(f"throughput: repeat {i + 2}/{self.runs} at {conns} connections")
            if self._wrk():
                res, shares = await self.run_wrk(conns, plan.wrk_duration_s)
                entry = {**res.to_dict(), "cpu_percent_of_one_core": shares, "repeat": True}
                rate = res.ok_per_s
            else:
                res2 = await closed_loop(self.gw, self.main.id, concurrency=conns, duration_s=plan.httpx_duration_s)
                rate = res2.ok / res2.elapsed_s
                entry = {"connections": conns, "ok_requests": res2.ok, "duration_s": round(res2.elapsed_s, 3),
                         "ok_per_s": round(rate, 1), "repeat": True}
            runs.append(entry)
            repeats.append(rate)
            say(f"    {rate:.0f} ok/s")
        lat = best[1].get("latency_ms") or {}
        note = ("ok/s by connections: " + ", ".join(f"{r['connections']} → {r['ok_per_s']:.0f}"
                                                     for r in runs if not r.get("repeat"))
                + f"; best at {best[1]['connections']} connections, repeated there"
                + (f", p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms" if lat else "")
                + f"; the load generator shares the {os.cpu_count()} cores with the stack")
        if best[1].get("cpu_percent_of_one_core"):
            note += f"; CPU in that run (% of one core): {cpu.describe(best[1]['cpu_percent_of_one_core'])}"
        if self.wrk_log:
            note += "; " + "; ".join(self.wrk_log)
        self.figures.append(spread_figure("throughput", S_THROUGHPUT, "successful invocations per second (sync)",
                                          repeats, "req/s", tool, at_least(TARGET_THROUGHPUT), note,
                                          {"runs": runs, "connections": conns,
                                           "pool_after": await self.pool_stats()}))
        self.ceiling_figure([r for r in runs if int(r.get("connections", 0)) == conns])

    def ceiling_figure(self, runs: list[dict[str, Any]]) -> None:
        """What the CPU spent per call at saturation allows on this machine's cores.

        Per run at the headline's connection count: each component's share of a core
        divided by the rate is its core-ms per call; the cores' time divided by the
        platform's core-ms per call (the load generator left out) is the most calls
        per second the machine could carry, were nothing else slower. The median run's
        split is kept in the details.
        """
        cores = os.cpu_count() or 1
        rows = []
        for r in runs:
            shares, rate = r.get("cpu_percent_of_one_core"), float(r.get("ok_per_s") or 0)
            per_call = cpu.per_call_ms(shares, rate) if shares else {}
            ceiling = cpu.ceiling_per_s(per_call, cores) if per_call else None
            if ceiling is not None:
                rows.append((ceiling, per_call, rate))
        if not rows:
            return
        rows.sort(key=lambda row: row[0])
        ceiling, per_call, rate = rows[len(rows) // 2]
        parts = sorted(((k, v) for k, v in per_call.items() if k not in ("total", "wrk") and v >= 0.05),
                       key=lambda kv: -kv[1])
        note = (f"{cores} cores × 1000 ms ÷ {per_call['total'] - per_call.get('wrk', 0):.2f} core-ms per call "
                f"(the platform's CPU at {rate:.0f} calls/s, wrk's {per_call.get('wrk', 0):.2f} ms left out): "
                + ", ".join(f"{k} {v:.2f}" for k, v in parts))
        self.figures.append(spread_figure(
            "throughput_ceiling", S_FLOORS, "CPU ceiling: calls/s the cores allow at the measured CPU per call",
            [row[0] for row in rows], "req/s", "/proc/<pid>/stat during the wrk runs", None, note,
            {"cpu_ms_per_call": per_call, "cores": cores}))

    async def async_accepted(self) -> None:
        """202s per second for ``?async=true``, and how fast the platform then finishes them.

        ``runs`` runs at 32 connections. For each, an activations-topic watcher is
        positioned at the end before the load starts; after the load it waits until
        an activation record of the bench lambda arrived for every accepted call
        (at most ASYNC_DRAIN_MAX_S). Completion rate = completed calls / (the last
        record's timestamp − the load's start): accepted → activation recorded by
        the invoker, end to end. The next run starts with no backlog.
        """
        duration_s = max(2, self.plan.wrk_duration_s // 2)
        rates: list[float] = []
        completions: list[float] = []
        runs: list[dict[str, Any]] = []
        use_wrk = self._wrk() is not None
        topic = Topics(self.settings.topic_prefix).activations
        for i in range(self.runs):
            load = os.getloadavg()[0]
            say(f"async accepted: run {i + 1}/{self.runs}, {duration_s} s at 32 connections")
            async with ActivationWatcher(self.settings.kafka_bootstrap, topic, self.main.id) as watcher:
                whole_before = await self.cpu_snapshot()
                started = time.time()
                if use_wrk:
                    res, shares = await self.run_wrk(32, duration_s, "?async=true")
                    rate, ok = res.ok_per_s, res.ok_requests
                    entry: dict[str, Any] = {**res.to_dict(), "cpu_percent_of_one_core": shares}
                else:
                    ok, elapsed = await self._async_httpx(32, float(duration_s))
                    rate = ok / elapsed
                    entry = {"connections": 32, "ok_requests": ok, "duration_s": round(elapsed, 3),
                             "ok_per_s": round(rate, 1)}
                say(f"    {rate:.0f} accepted/s; waiting for {ok} activation records")
                seen, last_ms = await watcher.wait_for(ok, ASYNC_DRAIN_MAX_S)
                whole = self.cpu_usage(whole_before, await self.cpu_snapshot())
            span_s = (last_ms / 1000 - started) if last_ms else None
            # CPU per completed call, per component, from the load's start to the last record (plus
            # the watcher's 1 s of quiet): robust to other load on the machine, unlike the rates.
            window_s = time.time() - started
            if seen and whole:
                entry["cpu_us_per_completed_call"] = {
                    k: round(v / 100 * window_s * 1e6 / seen) for k, v in whole.items()
                    if isinstance(v, int | float) and k not in ("idle", "other_processes_percent")}
            completion = seen / span_s if span_s and span_s > 0 else None
            # `seen` may exceed wrk's count: calls in flight when wrk stopped are not counted by it.
            entry |= {"load1": load, "accepted": ok, "completed": seen,
                      "first_accept_to_last_record_s": round(span_s, 3) if span_s else None,
                      "completed_per_s": round(completion, 1) if completion else None}
            runs.append(entry)
            rates.append(rate)
            if completion is not None and seen >= ok:
                completions.append(completion)
            say(f"    {seen}/{ok} completed, {completion or 0:.0f}/s end to end")
        tool = "wrk (2 threads, Lua POST script)" if use_wrk else "httpx (async closed loop)"
        loads = ", ".join(f"{r['load1']:.1f}" for r in runs)
        note = f"{self.runs} runs of {duration_s} s at 32 connections; load average at the starts: {loads}"
        # The gateway's CPU per accepted call while wrk ran bounds what one gateway process can
        # accept even with a core to itself (the rest of the stack works through the backlog meanwhile).
        gw_us = sorted(float(r["cpu_percent_of_one_core"]["gateway"]) * 1e4 / float(r["ok_per_s"])
                       for r in runs if (r.get("cpu_percent_of_one_core") or {}).get("gateway")
                       and float(r.get("ok_per_s") or 0) > 0)
        if gw_us:
            mid = gw_us[len(gw_us) // 2]
            note += (f"; gateway CPU per accepted call during the load {mid:.0f} µs (median run): one gateway "
                     f"process accepts at most {1e6 / mid:.0f}/s with a core to itself")
        self.figures.append(spread_figure("async_accepted", S_THROUGHPUT, "async accepted (202s per second)",
                                          rates, "req/s", tool, at_least(TARGET_ASYNC_ACCEPTED), note,
                                          {"runs": runs}))
        per_call = [r["cpu_us_per_completed_call"] for r in runs if r.get("cpu_us_per_completed_call")]
        platform = [sum(v for k, v in pc.items() if k in (*SERVICE_NAMES, "kafka", "postgres", "lambda containers"))
                    for pc in per_call]
        if platform:
            self.figures.append(spread_figure(
                "async_cpu_per_call", S_THROUGHPUT, "async: platform CPU per completed call", platform, "µs",
                "/proc (services, Kafka, PostgreSQL, containers)", None,
                "accept → activation record, all of the platform's processes; per component in the runs' "
                "cpu_us_per_completed_call"))
        incomplete = [r for r in runs if r["completed"] < r["accepted"]]
        cnote = ("accepted → activation record on the activations topic, for every call of the run (also those "
                 "in flight when the load tool stopped); rate = completed calls / (load start → last record)")
        if incomplete:
            cnote += (f"; {len(incomplete)} run(s) not complete after {ASYNC_DRAIN_MAX_S:.0f} s (left out): "
                      + ", ".join(f"{r['completed']}/{r['accepted']}" for r in incomplete))
        self.figures.append(spread_figure("async_completed", S_THROUGHPUT, "async completed end to end (per second)",
                                          completions, "req/s", "activations topic (aiokafka)", None, cnote))

    async def _async_httpx(self, concurrency: int, duration_s: float) -> tuple[int, float]:
        url = f"{self.gw.base}/lambdas/{self.main.id}/invoke"
        body = {"headers": [], "payload": {"bench": "async"}}
        ok = 0
        t0 = time.perf_counter()
        stop_at = t0 + duration_s

        async def worker() -> None:
            nonlocal ok
            while time.perf_counter() < stop_at:
                r = await self.gw.client.post(url, params={"async": "true"}, json=body)
                ok += r.status_code == 202

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return ok, time.perf_counter() - t0

    async def cold_prewarmed(self) -> None:
        for i in range(self.plan.cold_prewarmed_reps):
            pool = await self.wait_prewarmed()
            timing = await self.new_version(self.main, "redeploy")
            await asyncio.sleep(SETTLE_AFTER_DEPLOY_S)
            inv = await self.gw.invoke(self.main.id, {"cold": i})
            self.cold_samples.append(self._cold_sample("redeploy", self.main, inv, pool))
            say(f"cold start (pre-warmed) {i + 1}/{self.plan.cold_prewarmed_reps}: {inv.latency_ms:.1f} ms "
                f"cold_start={inv.cold_start}; PATCH → Productive {timing.total_s:.2f} s")

    async def cold_burst(self) -> None:
        """First calls of new versions of more lambdas, in parallel, than there are pre-warmed runners.

        Different lambdas, so no call can reuse another's container: the first
        ``prewarm_per_runtime`` take the pre-warmed runners, the others must
        start a container (the refill takes longer than the burst).
        """
        width = self.settings.prewarm_per_runtime + 2
        lambdas = [BenchLambda() for _ in range(width)]
        for i in range(self.plan.cold_burst_reps):
            say(f"cold burst {i + 1}/{self.plan.cold_burst_reps}: deploying new versions of {width} lambdas")
            await asyncio.gather(*(self.new_version(lam, None) for lam in lambdas))
            await asyncio.sleep(SETTLE_AFTER_DEPLOY_S)
            pool = await self.wait_prewarmed()
            invs = await asyncio.gather(*(self.gw.invoke(lam.id, {"burst": i}) for lam in lambdas))
            calls = sorted((self._cold_sample("burst", lam, inv, pool) for lam, inv in zip(lambdas, invs, strict=True)),
                           key=lambda s: s["latency_ms"])
            self.bursts.append({"width": width, "pool_before": pool, "calls": calls})
            say("    " + ", ".join(f"{c['latency_ms']:.0f} ms{'' if c['cold_start'] else ' (not cold!)'}"
                                   for c in calls))

    async def gateway_front(self) -> None:
        """Gateway HTTP + auth + lambda cache without Kafka: invoking a lambda that is not deployed (409)."""
        lam = BenchLambda()
        body, _ = await self.gw.create_lambda(unique_name("bench-draft"), node_code("draft"))
        lam.id = body["id"]
        for _ in range(20):
            await self.gw.invoke(lam.id, {})
        statuses: dict[int, int] = {}
        per_run = max(20, self.plan.front_calls // self.runs)
        run_p50: list[float] = []
        run_p99: list[float] = []
        what = ("invocations of a never-deployed lambda: request parsing, API key, lambda cache and the "
                "error answer, nothing queued")
        if await asyncio.to_thread(self._wrk):
            # wrk, like the warm figures: the harness's Python client would add its own ~1 ms.
            details: list[dict[str, Any]] = []
            for _ in range(self.runs):
                res, shares = await self.run_wrk(1, self.plan.wrk_c1_s, lambda_id=lam.id)
                if res.requests and res.status_errors == res.requests:  # every answer the 409
                    run_p50.append(res.lat_p50_ms)
                    run_p99.append(res.lat_p99_ms)
                details.append({**res.to_dict(), "cpu_percent_of_one_core": shares})
            check = await self.gw.invoke(lam.id, {"after": True})
            statuses[check.status] = 1
            note = f"{self.runs} wrk runs of {self.plan.wrk_c1_s} s, 1 connection, sequential {what}"
            tool = "wrk (1 connection)"
            extra: dict[str, Any] = {"runs": details}
        else:
            for _ in range(self.runs):
                latencies: list[float] = []
                for i in range(per_run):
                    inv = await self.gw.invoke(lam.id, {"i": i})
                    statuses[inv.status] = statuses.get(inv.status, 0) + 1
                    if inv.status in (404, 409):
                        latencies.append(inv.latency_ms)
                if latencies:
                    run_p50.append(median(latencies))
                    run_p99.append(percentile(latencies, 99))
            note = f"{self.runs} × {per_run} {what}"
            tool = "httpx (async, keep-alive)"
            extra = {}
        self.figures.append(spread_figure(
            "floor_gateway_front_p50", S_FLOORS, "gateway HTTP+auth, no Kafka (invoke → 409) p50", run_p50, "ms",
            tool, at_most(TARGET_FRONT_P50_MS), note, {"statuses": {str(k): v for k, v in statuses.items()}, **extra}))
        self.figures.append(spread_figure(
            "floor_gateway_front_p99", S_FLOORS, "gateway HTTP+auth, no Kafka (invoke → 409) p99", run_p99, "ms",
            tool))

    async def verify_versions(self) -> None:
        """Check from the activation records that each first call ran the new version."""
        for sample in self.cold_samples:
            if sample.get("activation_id"):
                sample["ran_version"] = await self.gw.activation_version(sample["activation_id"])

    def cold_figures(self, error: str | None) -> None:
        firsts = [s for s in self.cold_samples if s["status"] == 200]
        latencies = [s["latency_ms"] for s in firsts]
        flags = sum(1 for s in firsts if s["cold_start"])
        mismatched = [s for s in firsts if s.get("ran_version") not in (None, s["version"])]
        note = (f"median of {len(latencies)} first calls 0.5 s after Productive (new lambda, then PATCH + "
                f"redeploy), cold_start=true in {flags}/{len(firsts)}, max {max(latencies):.1f} ms"
                if latencies else "")
        if mismatched:
            note += f"; {len(mismatched)} ran an older version (gateway cache lag)"
        if error:
            note = (note + "; " if note else "") + error
        self.figures.append(Figure(
            "cold_prewarmed", S_COLD, "with a pre-warmed container (gateway)",
            median(latencies) if latencies else None, "ms", "httpx (one call per new version)",
            at_most(TARGET_COLD_PREWARMED_MS), note, {"samples": self.cold_samples}))
        slowest = [b["calls"][-1]["latency_ms"] for b in self.bursts if b["calls"]]
        bnote = ""
        if self.bursts:
            width = self.bursts[0]["width"]
            pre = self.settings.prewarm_per_runtime
            beyond = [c["latency_ms"] for b in self.bursts for c in b["calls"][pre:]]
            bnote = (f"slowest of {width} parallel first calls of {width} different lambdas with {pre} pre-warmed "
                     f"runners, median over {len(self.bursts)} burst(s); calls beyond the pre-warmed ones: "
                     + ", ".join(f"{x:.0f}" for x in beyond) + " ms")
        self.figures.append(Figure(
            "cold_no_prewarm", S_COLD, "without a pre-warmed container (gateway, burst)",
            median(slowest) if slowest else None, "ms", "httpx (parallel burst)", None, bnote or (error or ""),
            {"bursts": self.bursts}))

    def deploy_figures(self) -> None:
        creates = [t.total_s for k, t in self.deploys if k == "create"]
        redeploys = [t.total_s for k, t in self.deploys if k == "redeploy"]
        all_ = [{"kind": k, **asdict(t)} for k, t in self.deploys]
        self.figures.append(Figure(
            "deploy_create", S_DEPLOY, "new lambda: POST …/lambdas → Productive",
            median(creates) if creates else None, "s", "httpx (poll GET every 20 ms)", at_most(TARGET_DEPLOY_S),
            f"{len(creates)} sample(s)", {"samples": [d for d in all_ if d["kind"] == "create"]}))
        self.figures.append(Figure(
            "deploy_redeploy", S_DEPLOY, "new version: PATCH code → Productive",
            median(redeploys) if redeploys else None, "s", "httpx (poll GET every 20 ms)",
            at_most(TARGET_DEPLOY_S),
            f"median of {len(redeploys)}, max {max(redeploys):.2f} s" if redeploys else "",
            {"samples": [d for d in all_ if d["kind"] == "redeploy"]}))


async def gateway_part(gw: Gateway, settings: Settings, plan: Plan, figures: list[Figure],
                       allow_install: bool, runs: int = RUNS, pyspy: Path | None = None,
                       only: frozenset[str] = frozenset()) -> None:
    bench = GatewayBench(gw, settings, plan, figures, allow_install, runs)
    bench.pyspy = pyspy
    c1_targets = {"p50": at_most(TARGET_WARM_P50_MS), "p99": at_most(TARGET_WARM_P99_MS)}
    try:
        await bench.setup()
    except Exception as exc:  # noqa: BLE001 - nothing else can be measured through the gateway
        traceback.print_exc(file=sys.stderr)
        figures += summary_figures("warm_c1", S_WARM, "concurrency 1,", None, "ms", "httpx", targets=c1_targets,
                                   note=f"setup failed: {note_error(exc)}")
        bench.deploy_figures()
        return

    short = {"warm c1": "warm", "cold start (pre-warmed)": "cold", "cold start (burst)": "burst", "warm c16": "c16",
             "throughput": "throughput", "gateway front": "front", "async accepted": "async"}

    async def step(name: str, fn: Callable[[], Awaitable[None]], on_error: Callable[[str], None]) -> None:
        if only and short[name] not in only:
            return
        try:
            await fn()
        except Exception as exc:  # noqa: BLE001 - report and go on with the next measurement
            traceback.print_exc(file=sys.stderr)
            on_error(f"{name} failed: {note_error(exc)}")

    await step("warm c1", bench.warm_c1, lambda msg: figures.extend(summary_figures(
        "warm_c1", S_WARM, "concurrency 1,", None, "ms", "httpx", targets=c1_targets, note=msg)))
    # Cold starts before the concurrency-16 runs: otherwise each redeploy would also be
    # retiring 16 warm containers of the previous version while we measure.
    cold_error: list[str] = []
    await step("cold start (pre-warmed)", bench.cold_prewarmed, cold_error.append)
    await step("cold start (burst)", bench.cold_burst, cold_error.append)
    await step("warm c16", bench.warm_c16, lambda msg: figures.extend(summary_figures(
        "warm_c16", S_WARM, "concurrency 16,", None, "ms", "wrk/httpx", note=msg)))
    await step("throughput", bench.throughput, lambda msg: figures.append(Figure(
        "throughput", S_THROUGHPUT, "successful invocations per second", None, "req/s", "wrk/httpx",
        at_least(TARGET_THROUGHPUT), msg)))
    await step("gateway front", bench.gateway_front, lambda msg: figures.extend(summary_figures(
        "floor_gateway_front", S_FLOORS, "gateway HTTP+auth, no Kafka (invoke → 409)", None, "ms", "httpx",
        which=("p50", "p99"), note=msg)))
    await step("async accepted", bench.async_accepted, lambda msg: figures.append(Figure(
        "async_accepted", S_THROUGHPUT, "async accepted (202s per second)", None, "req/s", "wrk/httpx",
        at_least(TARGET_ASYNC_ACCEPTED), msg)))
    await bench.verify_versions()
    if not only or only & {"cold", "burst"}:
        bench.cold_figures(cold_error[0] if cold_error else None)
    bench.deploy_figures()


# --------------------------------------------------------------------------- floors


async def kafka_tuning_part(settings: Settings, home: Path, quick: bool, figures: list[Figure]) -> None:
    """The producer/consumer sweeps of bench/kafka_bench.py as figures (no targets: they justify settings)."""
    try:
        doc = await kafka_bench.tuning(settings.kafka_bootstrap, quick=quick, say=say,
                                       broker=kafka_bench.broker_pid(home))
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        figures.append(Figure("kafka_tuning", S_KAFKA, "producer/consumer sweeps", None, "ms", "bench/kafka_bench.py",
                              None, note_error(exc)))
        return
    tool = "fnbus.kafka.Producer (bench/kafka_bench.py)"
    first = True
    for row in doc["sync_latency"]:
        bg = f", {row['background_per_s']}/s in the background" if row["background_per_s"] else ""
        figures.append(Figure(f"kafka_sync_linger{row['linger_ms']}_bg{row['background_per_s']}", S_KAFKA,
                              f"sync hop p50, linger {row['linger_ms']} ms{bg}", row["round_trip_p50_ms"], "ms",
                              tool, None, f"p99 {row['round_trip_p99_ms']:.2f} ms, ack p50 {row['ack_p50_ms']:.2f} ms",
                              {"kafka_tuning": doc} if first else {}))
        first = False
    for row in doc["async_throughput"]:
        what = "64 senders awaiting acks" if row["mode"] == "closed" else f"send_nowait, {row['mode']}"
        figures.append(Figure(f"kafka_async_linger{row['linger_ms']}_b{row['max_batch_size']}_{row['mode'][:4]}",
                              S_KAFKA, f"async produce, linger {row['linger_ms']} ms, batch "
                              f"{row['max_batch_size'] // 1024} KiB ({what})", row["per_s"], "req/s", tool, None,
                              f"ack p50 {row['ack_ms_p50']:.1f} ms; CPU per record: client "
                              f"{row['cpu_us_per_record']:.0f} µs, broker {row['broker_cpu_us_per_record']:.0f} µs"))
    for row in doc["fetch_latency"]:
        figures.append(Figure(f"kafka_fetch_wait{row['fetch_max_wait_ms']}", S_KAFKA,
                              f"consume after ack p50, fetch_max_wait {row['fetch_max_wait_ms']} ms",
                              row["consume_p50_ms"], "ms", "AIOKafkaConsumer", None,
                              f"p99 {row['consume_p99_ms']:.2f} ms; records 20 ms apart"))
    for row in doc["fetch_throughput"]:
        figures.append(Figure(f"kafka_poll{row['max_poll_records']}", S_KAFKA,
                              f"backlog read, max_poll_records {row['max_poll_records']}", row["per_s"], "req/s",
                              "AIOKafkaConsumer", None,
                              f"{row['records']} records in {row['polls']} polls, {row['cpu_us_per_record']:.1f} µs "
                              "CPU per record"))


def floor_figures(key: str, label: str, samples: list[float], tool: str, note: str,
                  details: dict[str, Any]) -> list[Figure]:
    """p50 and p99 of one sequential floor measurement, read as RUNS consecutive parts."""
    runs = RUNS if len(samples) >= RUNS * 20 else 1
    note = f"{note}; the {len(samples)} calls read as {runs} consecutive runs"
    details = {**details, "summary": summarize(samples).to_dict()}
    return [spread_figure(f"{key}_p50", S_FLOORS, f"{label} p50", chunk_percentiles(samples, runs, 50), "ms", tool,
                          None, note, details),
            spread_figure(f"{key}_p99", S_FLOORS, f"{label} p99", chunk_percentiles(samples, runs, 99), "ms", tool)]


async def floors_part(settings: Settings, home: Path, plan: Plan, figures: list[Figure]) -> dict[str, float]:
    medians: dict[str, float] = {}
    say(f"floor: runner over its socket ({plan.runner_cold} direct cold starts, {plan.runner_runs} run() calls)")
    try:
        rf = await floors.runner_floor(settings, home, runs=plan.runner_runs, cold_samples=plan.runner_cold)
        figures += floor_figures(
            "floor_runner_run", "warm runner run() over its socket", rf.run_ms,
            "RunnerConnection (fnbus.runner_protocol)",
            f"{len(rf.run_ms)} sequential run() calls on one {settings.runtime_image_node} container",
            {"runner_reported_duration_ms": summarize(rf.runner_reported_ms).to_dict()
             if rf.runner_reported_ms else None, "errors": rf.errors})
        medians["runner"] = figures[-2].value or summarize(rf.run_ms).p50
        totals = [c["total_ms"] for c in rf.cold]
        figures.append(Figure(
            "floor_cold_direct", S_COLD, "floor: start container + connect + init, directly",
            median(totals) if totals else None, "ms", "DockerRuntime + RunnerConnection",
            None, f"median of {len(totals)}; phases (median): {floors.cold_breakdown(rf.cold)}",
            {"samples": rf.cold}))
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        figures += summary_figures("floor_runner_run", S_FLOORS, "warm runner run() over its socket", None, "ms",
                                   "RunnerConnection", which=("p50", "p99"), note=note_error(exc))
        figures.append(Figure("floor_cold_direct", S_COLD, "floor: start container + connect + init, directly",
                              None, "ms", "DockerRuntime + RunnerConnection", None, note_error(exc)))

    say(f"floor: Kafka produce→consume ({plan.kafka_round_trips} sequential round trips)")
    try:
        kf = await floors.kafka_floor(settings.kafka_bootstrap, round_trips=plan.kafka_round_trips)
        figures += floor_figures(
            "floor_kafka_rt", "Kafka produce→consume (one hop)", kf.round_trip_ms,
            "fnbus.kafka.Producer + AIOKafkaConsumer",
            f"topic {kf.topic}; producer acks=all, idempotent, linger 0; consumer as the gateway's reply "
            "reader (assigned partition, fetch_max_wait 200 ms)",
            {"produce_ack_ms": summarize(kf.produce_ack_ms).to_dict()})
        medians["kafka"] = figures[-2].value or summarize(kf.round_trip_ms).p50
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        figures += summary_figures("floor_kafka_rt", S_FLOORS, "Kafka produce→consume (one hop)", None, "ms",
                                   "fnbus.kafka.Producer + AIOKafkaConsumer", which=("p50", "p99"),
                                   note=note_error(exc))

    await accept_floor_figure(settings, home, plan, figures)

    say(f"floor: docker run of the runtime image ({plan.docker_runs}×)")
    image = settings.runtime_image_node
    try:
        times, errors = await asyncio.to_thread(floors.docker_run_floor, image, plan.docker_runs)
        figures.append(Figure(
            "floor_docker_run", S_FLOORS, "docker run --rm --network none … node -e 0",
            median(times) if times else None, "ms", "docker CLI (subprocess)", None,
            f"median of {len(times)} ({image})" + (f"; errors: {errors[:2]}" if errors else ""),
            {"samples_ms": [round(t, 1) for t in times]}))
    except Exception as exc:  # noqa: BLE001
        figures.append(Figure("floor_docker_run", S_FLOORS, "docker run --rm --network none … node -e 0", None,
                              "ms", "docker CLI (subprocess)", None, note_error(exc)))
    return medians


async def accept_floor_figure(settings: Settings, home: Path, plan: Plan, figures: list[Figure]) -> None:
    """Async acceptance with nothing of the platform: a bare ASGI app producing to Kafka
    (bench/accept_floor.py), beside the async-accepted figure."""
    label = "floor: bare ASGI accept → Kafka ack, accepted/s (wrk, 32 connections)"
    tool = "uvicorn + fnbus.kafka.Producer (bench/accept_floor.py), wrk"
    log: list[str] = []
    wrk_path = await asyncio.to_thread(wrk.find_or_install, False, log)
    if wrk_path is None:
        figures.append(Figure("floor_accept", S_FLOORS, label, None, "req/s", tool, None,
                              "wrk not installed: " + "; ".join(log)))
        return
    try:
        result = await accept_floor.measure(settings.kafka_bootstrap, wrk_path,
                                            broker_pid=kafka_bench.broker_pid(home), runs=RUNS,
                                            duration_s=max(2, plan.wrk_duration_s // 2), say=say)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        figures.append(Figure("floor_accept", S_FLOORS, label, None, "req/s", tool, None, note_error(exc)))
        return
    note = (f"the bare server's CPU per accepted call {result['server_us_per_call']:.0f} µs and the broker's "
            f"{result['broker_us_per_call']:.0f} µs (median run): {result['cores']} cores accept at most "
            f"{result['ceiling_per_s']:.0f}/s with nothing else running")
    figures.append(spread_figure("floor_accept", S_FLOORS, label, [r["accepted_per_s"] for r in result["runs"]],
                                 "req/s", tool, None, note, {"accept_floor": result}))


def path_floor_figure(figures: list[Figure], medians: dict[str, float]) -> None:
    """2 Kafka hops (request, reply) + one runner call: what the warm path costs before any Python;
    and the platform's overhead over the warm-runner floor (issue 12's ≤ 3 ms)."""
    warm = next((f for f in figures if f.key == "warm_c1_p50"), None)
    if "runner" in medians and warm is not None and warm.value is not None:
        figures.append(Figure("overhead_over_runner", S_FLOORS, "platform overhead over the warm-runner floor, p50",
                              warm.value - medians["runner"], "ms", "computed", at_most(TARGET_OVERHEAD_P50_MS),
                              f"warm c1 p50 {warm.value:.2f} ms − runner p50 {medians['runner']:.2f} ms"))
    if "kafka" not in medians or "runner" not in medians:
        return
    total = 2 * medians["kafka"] + medians["runner"]
    note = "2 × Kafka p50 + runner p50"
    if warm is not None and warm.value is not None:
        note += f"; the gateway's warm p50 is {warm.value - total:.1f} ms above it (HTTP, auth, invoker, pool)"
    figures.append(Figure("floor_path_sum", S_FLOORS, "sum of floors on the warm path", total, "ms", "computed",
                          None, note))


def noise_warnings(figures: list[Figure], machine: dict[str, Any]) -> list[str]:
    """Say so when something outside the stack competed for the CPU while we measured."""
    out: list[str] = []
    cores = machine.get("cores") or 1
    load = machine.get("loadavg_at_start") or [0.0]
    if load[0] > cores:
        out.append(f"the 1-minute load average was {load[0]:.1f} on {cores} cores when the run started")
    for fig in figures:
        runs = fig.details.get("runs") or ([fig.details["wrk"] | {"cpu_percent_of_one_core":
                                                                  fig.details.get("cpu_percent_of_one_core")}]
                                           if "wrk" in fig.details else [])
        for run in runs:
            shares = run.get("cpu_percent_of_one_core") or {}
            other = shares.get("other_processes_percent", 0.0)
            if other > OTHER_CPU_WARN_PERCENT:
                names = ", ".join(shares.get("other_processes") or [])
                out.append(f"{fig.label}: {other:.0f}% of a core went to other processes (not the services, "
                           f"Kafka, PostgreSQL, lambda containers or wrk) during the {run['connections']}-connection "
                           f"run ({names}); its figures are pessimistic")
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (under two minutes in total)")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the JSON report (default: bench/results/<date>-<commit>.json, "
                             "also copied to bench/results/latest.json)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a figure misses its target")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk (use httpx)")
    parser.add_argument("--skip-floors", action="store_true", help="only the gateway figures")
    parser.add_argument("--skip-kafka-tuning", action="store_true", help="without the producer/consumer sweeps")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs per headline figure (default {RUNS})")
    parser.add_argument("--private-stack", action="store_true",
                        help="start the six services on a private home, ports, database and topic prefix "
                             "(shared Kafka, PostgreSQL and Docker) instead of using the running stack")
    parser.add_argument("--only", default="",
                        help="comma-separated gateway steps to run (warm, cold, burst, c16, throughput, front, "
                             "async); default all. For development: a partial run's file is not a headline")
    parser.add_argument("--code", type=Path, default=None,
                        help="with --private-stack: run the services from this tree (e.g. `git archive` of an "
                             "older commit, for a before/after comparison)")
    parser.add_argument("--stack-env", action="append", default=[], metavar="FNBUS_X=VALUE",
                        help="with --private-stack: a setting for its services (repeatable)")
    parser.add_argument("--keep-stack-home", action="store_true", help="with --private-stack: keep its logs")
    parser.add_argument("--scale", type=Path, default=None,
                        help="a bench/scale.py result (JSON) to include under \"scale\" in the report")
    parser.add_argument("--pyspy", type=Path, default=None,
                        help="record a py-spy flame graph (SVG) of the gateway during the throughput runs")
    extra = shlex.split(os.environ.get("BENCH_ARGS", ""))
    return parser.parse_args(extra + argv)


def git_commit() -> tuple[str | None, bool]:
    """The checkout's short commit and whether tracked files differ from it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                    capture_output=True, text=True, check=False, timeout=10).stdout.strip())
        return sha or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, False


def read_proc_stat() -> dict[str, int] | None:
    try:
        return proc_stat_ticks(Path("/proc/stat").read_text())
    except (OSError, ValueError):
        return None


async def main_async(args: argparse.Namespace) -> int:
    if args.private_stack:
        extra = dict(item.split("=", 1) for item in args.stack_env)
        stack = PrivateStack(Settings(), extra_env=extra, code=args.code)
        say(f"private stack: starting the services in {stack.home} (topics {stack.prefix}.*, "
            f"database {stack.db_name})")
        try:
            await stack.start()
        except BaseException:
            await stack.stop(keep_home=True)
            raise
        try:
            return await bench_async(args)
        finally:
            say("private stack: stopping")
            await stack.stop(keep_home=args.keep_stack_home)
    return await bench_async(args)


async def bench_async(args: argparse.Namespace) -> int:
    plan = Plan.quick() if args.quick else Plan.full()
    settings = Settings()
    home = fnbus_home(REPO)
    creds = load_credentials(home)
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    machine = await asyncio.to_thread(machine_info, settings)
    stat_start = read_proc_stat()
    cpu_start = await asyncio.to_thread(cpu.take, time.monotonic())
    commit, dirty = await asyncio.to_thread(git_commit)
    say(f"fnbus bench ({'quick' if args.quick else 'full'}) against {creds.gateway_url}, account "
        f"{creds.account_id}, {machine['cores']} cores, commit {commit}{' (+changes)' if dirty else ''}")
    figures: list[Figure] = []
    cleanup_problems: list[str] = []
    gw = Gateway(creds, max_connections=128)
    try:
        try:
            await gateway_part(gw, settings, plan, figures, allow_install=not args.no_install, runs=args.runs,
                               pyspy=args.pyspy, only=frozenset(filter(None, args.only.split(","))))
        finally:
            say(f"cleanup: undeploying and deleting the {len(gw.created)} bench lambda(s)")
            for lambda_id in gw.created:
                try:
                    problem = await gw.cleanup(lambda_id)
                except httpx.HTTPError as exc:
                    problem = note_error(exc)
                if problem:
                    cleanup_problems.append(f"{lambda_id}: {problem}")
            if gw.created:
                cleanup_problems += await asyncio.to_thread(floors.remove_leftover_images, settings, gw.created)
    finally:
        await gw.aclose()
    if not args.skip_floors:
        medians = await floors_part(settings, home, plan, figures)
        path_floor_figure(figures, medians)
    if not args.skip_kafka_tuning:
        await kafka_tuning_part(settings, home, args.quick, figures)
    order = [S_WARM, S_HOPS, S_THROUGHPUT, S_COLD, S_DEPLOY, S_FLOORS, S_KAFKA]
    figures.sort(key=lambda f: order.index(f.section) if f.section in order else len(order))

    machine["loadavg_at_end"] = list(os.getloadavg())
    stat_end = read_proc_stat()
    if stat_start and stat_end:
        machine["cpu_split_percent"] = cpu_split(stat_start, stat_end)
    roots = cpu.read_roots(home / "run", [*SERVICE_NAMES, "kafka", "postgres"])
    roots["bench harness"] = (os.getpid(),)
    shares, others = cpu.split(cpu_start, await asyncio.to_thread(cpu.take, time.monotonic()), roots)
    machine["process_cpu_percent_of_one_core"] = {**shares, "other_processes": [f"{c} {v:.0f}%" for c, v in others]}
    warnings = noise_warnings(figures, machine)
    scale = None
    if args.scale is not None:
        try:
            scale = json.loads(args.scale.read_text())
        except (OSError, ValueError) as exc:
            warnings.append(f"--scale {args.scale}: {exc}")
    run = {"mode": "quick" if args.quick else "full", "started": started_at, "commit": commit,
           "dirty": dirty, "runs_per_figure": args.runs, "private_stack": bool(args.private_stack),
           "services_code": str(args.code) if args.code else None, "stack_env": args.stack_env,
           "duration_s": round(time.monotonic() - started, 1), "plan": asdict(plan),
           "gateway_url": creds.gateway_url, "account_id": creds.account_id,
           "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
           "cleanup_problems": cleanup_problems, "warnings": warnings}
    report = build_report(figures, machine=machine, run=run)
    if scale is not None:
        report["scale"] = scale
    results = REPO / "bench" / "results"
    if args.json is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%MZ")
        args.json = results / result_file_name(stamp, commit, dirty=dirty, mode=run["mode"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    args.json.write_text(text)
    if args.json.parent.resolve() == results.resolve() and args.json.name != "latest.json":
        (results / "latest.json").write_text(text)

    print()
    print(f"fnbus bench — {machine['date']} — {machine['cores']} cores ({machine.get('cpu_model') or '?'}), "
          f"{run['mode']} run in {run['duration_s']:.0f} s")
    print()
    print(format_table(figures))
    tally = verdict(figures)
    print()
    print(f"targets: {tally['pass']} passed, {tally['fail']} missed; {tally['error']} measurement error(s). "
          f"JSON: {args.json}")
    split = machine.get("cpu_split_percent")
    if split:
        print(f"CPU over the run: user {split['user']}%, system {split['system']}%, idle {split['idle']}%; "
              f"load average {machine['loadavg_at_start'][0]:.1f} at the start, "
              f"{machine['loadavg_at_end'][0]:.1f} at the end")
    print(f"markdown table: .venv/bin/python bench/report.py {args.json}")
    for warning in warnings:
        print(f"warning: {warning}")
    if cleanup_problems:
        print(f"cleanup problems: {cleanup_problems}")
    if tally["error"]:
        return 2
    if args.strict and tally["fail"]:
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(main_async(args))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
