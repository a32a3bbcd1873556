"""The gateway's own cost on the invoke path, without Kafka, the registry or a container.

A server process runs the gateway's real pieces: ``create_service_app`` (edge checks,
metrics), the body limit, the invoke router with its auth dependency (API key →
``Authenticator``, cached after the first call), request parsing and response
encoding. Only the ends are replaced: the registry answers the one key look-up
from memory, and ``Invocations`` answers a sync call at once with an echo
:class:`InvocationResult` that went through ``to_bytes``/``from_bytes`` like a
reply read from Kafka; an async call is "queued" by encoding the request.

The client sends sequential sync invocations (concurrency 1: p50/p99, and the server's
CPU time per call from /proc, the figure a loaded machine disturbs least), then
``--conc`` concurrent callers for sync throughput and async acceptance (202s
per second). Each figure is the median of ``--reps`` runs with min and max;
the load average is recorded at the start of each run. The client is Python
on the same cores: compare runs of this script with each other, not with wrk.

    .venv/bin/python bench/front.py --reps 3 --json bench/results/front-<name>.json
    .venv/bin/python bench/front.py --loop asyncio --http h11    # uvicorn's defaults

``--pyspy SVG`` records a flame graph of the server during the sequential calls
(needs ``py-spy`` in the venv; it is not a project dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ACCOUNT = "bench-acct"
LAMBDA = "bench-lambda"
API_KEY = "bench-api-key-0123456789"
BODY = json.dumps({"headers": [{"key": "x-bench", "value": "1"}],
                   "payload": {"message": "hello", "n": 42, "items": list(range(10))}}).encode()


# -- server --------------------------------------------------------------------------------
def build_app() -> Any:
    from fnbus.api_models import MAX_MANAGEMENT_BODY_BYTES
    from fnbus.config import Settings
    from fnbus.schemas import (
        InvocationOutcome,
        InvocationRequest,
        InvocationResult,
        LambdaChange,
        LambdaState,
        Runtime,
    )
    from fnbus.service import allow_status, create_service_app
    from services.gateway import invoke
    from services.gateway.auth import Authenticator
    from services.gateway.limits import BodyLimit

    class Registry:
        async def call(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
            return {"account_id": ACCOUNT, "user_id": "u1", "user_name": "bench",
                    "roles": ["FaaS-Admin", "FaaS-Developer", "FaaS-Invocation"], "key_id": "k1", "provisioned": True}

    state = LambdaChange(lambda_id=LAMBDA, account_id=ACCOUNT, name="echo",
                         runtime=list(Runtime)[0], state=list(LambdaState)[0],
                         deployed_version=1, deployed_image="none")

    class Echo(invoke.Invocations):
        def __init__(self) -> None:
            self.default_timeout_ms = 30_000

        async def deployed(self, account_id: str, lambda_id: str) -> LambdaChange:
            return state

        async def submit(self, request: InvocationRequest, timeout_s: float = 0) -> None:
            request.to_bytes()

        async def call(self, request: InvocationRequest) -> InvocationResult:
            sent = InvocationRequest.from_bytes(request.to_bytes())
            reply = InvocationResult(activation_id=sent.activation_id, account_id=sent.account_id,
                                     lambda_id=sent.lambda_id, outcome=InvocationOutcome.SUCCEEDED,
                                     result=sent.payload, duration_ms=1)
            return InvocationResult.from_bytes(reply.to_bytes())

    settings = Settings()
    allow_status(invoke.LP_LAMBDA_ERROR_STATUS, "Lambda Failure")
    app = create_service_app("gateway", settings)
    app.add_middleware(BodyLimit, max_bytes=MAX_MANAGEMENT_BODY_BYTES)
    app.include_router(invoke.router)
    app.state.auth = Authenticator(Registry(), settings.jwt_secret)  # type: ignore[arg-type]
    app.state.invocations = Echo()
    app.state.reply_topic = "bench.replies"
    return app


def serve(port: int, loop: str, http: str) -> None:
    import uvicorn

    config = uvicorn.Config(build_app(), host="127.0.0.1", port=port, log_config=None,
                            access_log=False, lifespan="off", loop=loop, http=http)
    uvicorn.Server(config).run()


# -- client --------------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _sequential(client: Any, url: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await client.post(url, content=BODY)
        times.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"sync invoke answered {r.status_code}: {r.text[:200]}")
    return times


async def _rate(client: Any, url: str, conc: int, seconds: float, expect: int) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            r = await client.post(url, content=BODY)
            if r.status_code != expect:
                raise RuntimeError(f"answered {r.status_code}, expected {expect}")
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return done / (time.perf_counter() - t0)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_run(base: str, n: int, conc: int, seconds: float, pid: int) -> dict[str, float]:
    import httpx

    url = f"{base}/api/v1/accounts/{ACCOUNT}/lambdas/{LAMBDA}/invoke"
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
        await _sequential(client, url, 100)  # warm-up
        load = os.getloadavg()[0]
        cpu0 = _cpu_s(pid)
        seq = await _sequential(client, url, n)
        cpu1 = _cpu_s(pid)
        sync_rate = await _rate(client, url, conc, seconds, 200)
        async_rate = await _rate(client, url + "?async=true", conc, seconds, 202)
    # The server's CPU per sequential call: far less sensitive to a loaded machine than
    # wall-clock time (the clock tick is 10 ms, so n must be large; 1000 calls ≈ 1–3 s).
    return {"load1": load, "p50_ms": statistics.median(seq), "p99_ms": _pct(seq, 0.99),
            "server_cpu_us_per_call": (cpu1 - cpu0) / n * 1e6,
            "sync_per_s": sync_rate, "async_202_per_s": async_rate}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("bench server exited during start-up")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError("bench server did not start")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    p.add_argument("--loop", default="uvloop", help="uvicorn loop: uvloop | asyncio")
    p.add_argument("--http", default="httptools", help="uvicorn HTTP parser: httptools | h11")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("-n", type=int, default=1000, help="sequential calls per run")
    p.add_argument("--conc", type=int, default=16, help="concurrent callers for the rates")
    p.add_argument("--seconds", type=float, default=4.0, help="duration of each rate")
    p.add_argument("--label", default="")
    p.add_argument("--json", type=Path)
    p.add_argument("--pyspy", type=Path, help="flame graph (SVG) of the server, first run")
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve, args.loop, args.http)
        return 0

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))}
    server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve",
                               str(port), "--loop", args.loop, "--http", args.http], env=env)
    spy: subprocess.Popen[bytes] | None = None
    runs = []
    try:
        _wait_up(port, server)
        for i in range(args.reps):
            if args.pyspy and i == 0:
                spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record",
                                        "-p", str(server.pid), "-o", str(args.pyspy),
                                        "-d", "10", "-r", "200", "--nonblocking"])
                time.sleep(1)
            run = asyncio.run(one_run(f"http://127.0.0.1:{port}", args.n, args.conc,
                                      args.seconds, server.pid))
            runs.append(run)
            print(json.dumps({k: round(v, 3) for k, v in run.items()}), flush=True)
    finally:
        if spy is not None:
            spy.wait(timeout=60)
        server.terminate()
        server.wait(timeout=30)

    summary = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        summary[key] = {"median": round(statistics.median(values), 3),
                        "min": round(min(values), 3), "max": round(max(values), 3)}
    out = {"label": args.label, "loop": args.loop, "http": args.http, "reps": args.reps,
           "n": args.n, "conc": args.conc, "seconds": args.seconds, "cores": os.cpu_count(),
           "python": platform.python_version(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                      time.gmtime()),
           "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip(),
           "summary": summary, "runs": runs}
    print(json.dumps({"label": args.label, "summary": summary}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
