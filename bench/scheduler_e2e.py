"""Scheduler fire lag to the invocation start, end to end on the running stack.

Standalone, against a stack that ``make up`` (or ``make bench``) started:
``.venv/bin/python bench/scheduler_e2e.py [--accounts 3] [--minutes 2]``.

Where ``bench/scheduler_lag.py`` stops at the request on the invocations topic
(10,000 schedules, the scheduler alone), this follows each fire through the
invoker into a real container:

1. creates ``accounts`` accounts (through the registry's internal API, like
   ``fnbus admin create-account``) and in each the ten scheduled functions the
   platform allows: ten Node lambdas, deployed, each with a ``* * * * *`` schedule
   made through the public API;
2. waits for ``minutes`` minute boundaries (plus the 30 s execution limit);
3. reads each fire's activation record through the public API (its id is the
   scheduler's deterministic id for the schedule and the due minute) and
   measures from the due minute to two moments: the invoker picking the request
   up (``started_ms``), and the function's code starting in its container
   (``finished_ms - duration_ms``, as the runner timed the run), which adds
   placing the call in a container and, in the first minute, its cold start;
4. deletes the schedules and the lambdas (the accounts stay, named ``bsched…``).

Prints p50/p99/max per minute and overall, and one JSON line. The schedules are
made together, at least 10 s before a minute boundary: that boundary is every
schedule's first fire, with its container cold; later minutes find them warm.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gateway import BenchError, Credentials, Gateway, fnbus_home, load_credentials, node_code  # noqa: E402
from bench.run import say  # noqa: E402
from bench.stats import percentile  # noqa: E402
from fnbus.config import REPO_ROOT, Settings  # noqa: E402
from services.scheduler.store import activation_id  # noqa: E402

MINUTE_MS = 60_000
PER_ACCOUNT = 10  # the platform's limit of scheduled functions per account
SETTLE_S = 40  # after the last due minute: the 30 s limit, then log-ingest


async def new_account(registry: httpx.AsyncClient, gateway_url: str, account: str) -> Gateway:
    r = await registry.post("/internal/accounts", json={"id": account, "name": account, "admin_name": "admin"})
    if r.status_code != 201:
        raise BenchError(f"creating account {account}: {r.status_code} {r.text[:200]}")
    key = r.json()["api_key"]
    r = await registry.post(f"/internal/accounts/{account}/terms-of-use", json={"accept": True})
    if r.status_code >= 400:
        raise BenchError(f"accepting the terms for {account}: {r.status_code} {r.text[:200]}")
    return Gateway(Credentials(gateway_url, account, key))


async def deployed_lambda(gw: Gateway, name: str) -> str:
    saved = time.perf_counter()
    body, save_s = await gw.create_lambda(name, node_code(name))
    await gw.deploy_and_wait(body["id"], 1, saved, save_s)
    return str(body["id"])


async def start_times(gw: Gateway, activation: str) -> tuple[int, int] | None:
    """(picked up, code started), epoch ms, from the activation record; None if there is none."""
    r = await gw.client.get(f"{gw.base}/activations/{activation}")
    if r.status_code != 200:
        return None
    record = r.json()
    return int(record["started_ms"]), int(record["finished_ms"]) - int(record["duration_ms"])


async def run(accounts: int, minutes: int) -> dict[str, Any]:
    settings = Settings()
    gateway_url = load_credentials(fnbus_home(REPO_ROOT)).gateway_url
    tag = uuid.uuid4().hex[:6]
    gateways: list[Gateway] = []
    schedules: dict[int, list[str]] = {}
    try:
        async with httpx.AsyncClient(base_url=settings.registry_url, timeout=30, headers={
                "Authorization": f"Bearer {settings.service_token}"}) as registry:
            for i in range(accounts):
                gateways.append(await new_account(registry, gateway_url, f"bsched{tag}{i}"))
        say(f"deploying {accounts * PER_ACCOUNT} lambdas")
        lambdas = [await asyncio.gather(*(deployed_lambda(gw, f"sched-{tag}-{i}-{j}") for j in range(PER_ACCOUNT)))
                   for i, gw in enumerate(gateways)]
        # Schedule them all at least 10 s before a minute boundary, so that boundary is
        # every schedule's first fire (its containers cold) and the next ones find them warm.
        to_boundary_ms = MINUTE_MS - int(time.time() * 1000) % MINUTE_MS
        if to_boundary_ms < 10_000:
            await asyncio.sleep(to_boundary_ms / 1000 + 1)
        say("scheduling them (* * * * *)")
        for i, gw in enumerate(gateways):
            schedules[i] = list(await asyncio.gather(
                *(gw.create_schedule(lambda_id, "* * * * *", {"bench": lambda_id}) for lambda_id in lambdas[i])))
        first_due = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS + MINUTE_MS
        dues = [first_due + k * MINUTE_MS for k in range(minutes)]
        wait_s = (dues[-1] / 1000 + SETTLE_S) - time.time()
        say(f"waiting {wait_s:.0f} s for {minutes} minute boundaries")
        await asyncio.sleep(wait_s)
        picked: dict[int, list[float]] = {due: [] for due in dues}
        code: dict[int, list[float]] = {due: [] for due in dues}
        missing = 0
        for i, gw in enumerate(gateways):
            for schedule_id in schedules[i]:
                for due in dues:
                    times = await start_times(gw, activation_id(schedule_id, due))
                    if times is None:
                        missing += 1
                        continue
                    picked[due].append((times[0] - due) / 1000)
                    code[due].append((times[1] - due) / 1000)
    finally:
        say("cleanup: deleting schedules and lambdas")
        for i, gw in enumerate(gateways):
            for schedule_id in schedules.get(i, []):
                await gw.client.delete(f"{gw.base}/schedules/{schedule_id}")
            for lambda_id in gw.created:
                problem = await gw.cleanup(lambda_id)
                if problem:
                    say(f"cleanup of {lambda_id}: {problem}")
            await gw.aclose()
    return {
        "schedules": accounts * PER_ACCOUNT, "accounts": accounts, "minutes": minutes,
        "fires": sum(map(len, picked.values())), "missing": missing,
        "to_pick_up_s": _stats([lag for values in picked.values() for lag in values]),
        "to_code_start_s": _stats([lag for values in code.values() for lag in values]),
        "per_minute": [{"due_ms": due, "fires": len(picked[due]), "to_pick_up_s": _stats(picked[due]),
                        "to_code_start_s": _stats(code[due])} for due in dues],
    }


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values)}


def _line(stats: dict[str, float]) -> str:
    return f"p50 {stats['p50']:.2f} s, p99 {stats['p99']:.2f} s, max {stats['max']:.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=3, help="accounts, ten scheduled lambdas each")
    parser.add_argument("--minutes", type=int, default=2)
    args = parser.parse_args()
    try:
        result = asyncio.run(run(args.accounts, args.minutes))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for minute in result["per_minute"]:
        stamp = time.strftime("%H:%M", time.gmtime(minute["due_ms"] / 1000))
        print(f"due {stamp} UTC, {minute['fires']} fires: to pick-up {_line(minute['to_pick_up_s'])}; "
              f"to code start {_line(minute['to_code_start_s'])}")
    print(f"{result['fires']} fires of {result['schedules']} schedules in {result['accounts']} accounts, "
          f"{result['missing']} missing. Due minute → invoker pick-up: {_line(result['to_pick_up_s'])}; "
          f"→ code start: {_line(result['to_code_start_s'])}")
    print(json.dumps(result))
    return 0 if result["missing"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
