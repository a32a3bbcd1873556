"""The floor under async acceptance: the least an ASGI server on this machine spends to
take a JSON invocation and have it acknowledged by Kafka, with nothing of the platform.

A subprocess serves one bare ASGI app under uvicorn with the gateway's loop and parser
(uvloop, httptools): it reads the body, parses it with pydantic-core, produces it with
:class:`fnbus.kafka.Producer` (acks=all, idempotent, linger 0: the gateway's producer) to
a one-partition ``bench.*`` topic, waits for the ack and answers 202 with an id — no
routing, no API key, no quotas, no validation, no tracing. ``wrk`` drives it at 32
connections (the harness's async step) for ``runs`` runs; the server's and the broker's
CPU per accepted call come from ``/proc``, and ``cores × 10⁶ ÷ (server + broker µs)`` is
the most calls per second these cores could accept with nothing else running.

    .venv/bin/python -m bench.accept_floor            # against the broker of `make up`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TOPIC = "bench.accept-floor"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
BODY = json.dumps({"headers": [], "payload": {"bench": "accept-floor"}})


# -- the server ------------------------------------------------------------------------------
def make_app(bootstrap: str, topic: str) -> Any:
    import orjson
    import pydantic_core

    from fnbus.kafka import Producer

    producer = Producer(bootstrap, client_id="bench-accept-floor")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await producer.start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await producer.stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        pydantic_core.from_json(body)
        activation_id = str(uuid.uuid4())
        await producer.send(topic, body, key=activation_id)
        answer = orjson.dumps({"activation_id": activation_id})
        await send({"type": "http.response.start", "status": 202,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})

    return app


def serve(port: int, bootstrap: str, topic: str) -> None:
    import uvicorn

    from fnbus.service import FAST_SERVER

    uvicorn.run(make_app(bootstrap, topic), host="127.0.0.1", port=port, log_config=None,
                access_log=False, lifespan="on", **FAST_SERVER)


# -- the measurement -------------------------------------------------------------------------
def _ticks(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _start(port: int, bootstrap: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "libs"), str(REPO)])}
    return subprocess.Popen([sys.executable, "-m", "bench.accept_floor", "serve", "--port", str(port),
                             "--bootstrap", bootstrap], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure(bootstrap: str, wrk_path: str, *, broker_pid: int | None, runs: int = 3,
                  duration_s: int = 5, connections: int = 32,
                  say: Any = lambda message: None) -> dict[str, Any]:
    """Accepted calls per second and CPU per call of the bare server, ``runs`` wrk runs."""
    import httpx

    from bench import wrk
    from fnbus.topics import TopicSpec, ensure_topics

    await ensure_topics(bootstrap, [TopicSpec(TOPIC, 1)])
    port = _free_port()
    proc = _start(port, bootstrap)
    url = f"http://127.0.0.1:{port}/"
    rows: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("the bare server exited: "
                                       + (proc.stderr.read() if proc.stderr else b"").decode()[-500:])
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.post(url, content=BODY)).status_code == 202:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the bare server did not answer within 30 s")
                await asyncio.sleep(0.1)
        await asyncio.to_thread(wrk.run, wrk_path, url, "", BODY, connections=connections,
                                duration_s=1, threads=2)  # warm-up
        for i in range(runs):
            say(f"floor: bare ASGI accept → Kafka, wrk {duration_s} s at {connections} connections "
                f"(run {i + 1}/{runs})")
            server0, broker0, load = _ticks(proc.pid), _ticks(broker_pid), os.getloadavg()[0]
            res = await asyncio.to_thread(wrk.run, wrk_path, url, "", BODY, connections=connections,
                                          duration_s=duration_s, threads=2)
            server_s = (_ticks(proc.pid) - server0) / CLK_TCK
            broker_s = (_ticks(broker_pid) - broker0) / CLK_TCK
            ok = max(1, res.ok_requests)
            rows.append({"accepted_per_s": round(res.ok_per_s, 1), "accepted": res.ok_requests,
                         "errors": res.errors, "load1": round(load, 2),
                         "server_us_per_call": round(server_s * 1e6 / ok, 1),
                         "broker_us_per_call": round(broker_s * 1e6 / ok, 1) if broker_pid else None,
                         "latency_ms": res.to_dict()["latency_ms"]})
    finally:
        await asyncio.to_thread(_stop, proc)
    cores = os.cpu_count() or 1
    server_us = statistics.median(r["server_us_per_call"] for r in rows)
    broker_values = [r["broker_us_per_call"] for r in rows if r["broker_us_per_call"] is not None]
    broker_us = statistics.median(broker_values) if broker_values else 0.0
    return {"runs": rows, "connections": connections, "duration_s": duration_s, "cores": cores,
            "server_us_per_call": server_us, "broker_us_per_call": broker_us,
            "ceiling_per_s": round(cores * 1e6 / (server_us + broker_us), 1) if server_us + broker_us else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    srv = sub.add_parser("serve", help="run the bare server (the measurement starts it itself)")
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--bootstrap", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.bootstrap, TOPIC)
        return 0
    from bench import kafka_bench, wrk
    from fnbus.config import Settings

    settings = Settings()
    log: list[str] = []
    wrk_path = wrk.find_or_install(False, log)
    if wrk_path is None:
        print("wrk not found", *log, file=sys.stderr)
        return 2
    home = Path(os.environ.get("FNBUS_HOME") or REPO / ".fnbus")
    result = asyncio.run(measure(settings.kafka_bootstrap, wrk_path, broker_pid=kafka_bench.broker_pid(home),
                                 runs=args.runs, duration_s=args.seconds, say=print))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
