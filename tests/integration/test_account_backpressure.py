"""One account's backlog does not delay another account's calls (issue 11, defect 2).

Account A posts a flood of asynchronous calls of a slow lambda; meanwhile account
B makes sequential synchronous calls of an echo lambda. B's p99 latency under
the flood stays within a few tens of milliseconds of its p99 measured first
without it, and every one of A's calls runs exactly once.

Sizes: ``FNBUS_TEST_FLOOD_CALLS`` (300 here; 1,500 reproduces the issue's case),
``FNBUS_TEST_FLOOD_SLEEP_MS`` (2,000), ``FNBUS_TEST_P99_SLACK_MS`` (50),
``FNBUS_TEST_B_SAMPLES`` (100 per window).

Noise: every service runs in this test's process on a shared 2-core machine,
so one window's p99 can catch a scheduling hiccup of the machine. B is
measured in two windows during the flood and the better one counts, and the
slack is the larger of 50 ms and the unloaded measurement's own spread
(p99 − p50). A call queued behind A's backlog waits at least one of A's runs
(2 s), far beyond either.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time

import pytest
from aiokafka import AIOKafkaConsumer

from fnbus.config import Settings
from fnbus.schemas import ActivationRecord, InvocationOutcome
from fnbus.topics import Topics
from tests.integration.invoke_support import deploy
from tests.integration.mgmt_support import Account, create_account
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

FLOOD_CALLS = int(os.environ.get("FNBUS_TEST_FLOOD_CALLS", "300"))
SLEEP_MS = int(os.environ.get("FNBUS_TEST_FLOOD_SLEEP_MS", "2000"))
P99_SLACK_MS = float(os.environ.get("FNBUS_TEST_P99_SLACK_MS", "50"))
SAMPLES = int(os.environ.get("FNBUS_TEST_B_SAMPLES", "100"))

SLOW = f"function lambda(input, callback) {{ setTimeout(() => callback(null, 'slept'), {SLEEP_MS}); }}\n"
ECHO = "function lambda(input, callback) { callback(null, {echo: input.payload}); }\n"


def percentile(samples_ms: list[float], q: float) -> float:
    ordered = sorted(samples_ms)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def p50(samples_ms: list[float]) -> float:
    return percentile(samples_ms, 0.50)


def p99(samples_ms: list[float]) -> float:
    return percentile(samples_ms, 0.99)


async def b_latencies_ms(account: Account, lambda_id: str) -> tuple[list[float], float]:
    """SAMPLES sequential synchronous calls, each timed from request to response.

    Also the worst lag of this process's event loop meanwhile (every service of the
    test runs in it): a diagnostic printed beside the latencies.
    """
    out: list[float] = []
    lag_ms = 0.0

    async def watch() -> None:
        nonlocal lag_ms
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lag_ms = max(lag_ms, (time.perf_counter() - before - 0.01) * 1000)

    watcher = asyncio.create_task(watch())
    try:
        async with account.client() as c:
            for n in range(SAMPLES):
                started = time.perf_counter()
                r = await c.post(f"/lambdas/{lambda_id}/invoke", json={"payload": n}, timeout=90)
                out.append((time.perf_counter() - started) * 1000)
                assert r.status_code == 200 and r.json()["result"] == {"echo": n}, r.text
    finally:
        watcher.cancel()
    return out, lag_ms


# The case (1,500 calls of a 2 s lambda, 16 at a time) takes over three minutes.
@pytest.mark.timeout(max(300, FLOOD_CALLS * SLEEP_MS // 1000 // 16 + 240))
async def test_a_flooding_account_does_not_delay_another_accounts_sync_calls(
    settings: Settings, gateway_url: str, run_id: str,
) -> None:
    flooder = await create_account(settings, gateway_url, f"flood{run_id}")
    quiet = await create_account(settings, gateway_url, f"quiet{run_id}")
    slow = await deploy(flooder, "slow", SLOW)
    echo = await deploy(quiet, "echo", ECHO)
    per_account = settings.max_concurrent_per_account

    async with flooder.client() as a:
        # Warm both: A's share of containers exists before the flood (cold starts are CPU
        # work on this machine, not queueing), and B's echo container.
        warm = await asyncio.gather(*(a.post(f"/lambdas/{slow}/invoke", json={}, timeout=90)
                                      for _ in range(per_account)))
        assert all(r.status_code == 200 for r in warm), [r.text for r in warm]
        await b_latencies_ms(quiet, echo)
        unloaded, unloaded_lag_ms = await b_latencies_ms(quiet, echo)

        # The flood: accepted at once (202), then worked off per_account at a time.
        ids: list[str] = []
        gate = asyncio.Semaphore(20)

        async def post() -> None:
            async with gate:
                r = await a.post(f"/lambdas/{slow}/invoke", params={"async": "true"}, json={},
                                 timeout=60)
            assert r.status_code == 202, r.text
            ids.append(r.json()["activation_id"])

        started = time.monotonic()
        await asyncio.gather(*(post() for _ in range(FLOOD_CALLS)))
        accepted_s = time.monotonic() - started
        await asyncio.sleep(2)  # the invoker has fetched the flood and runs A's share of it

        windows = [await b_latencies_ms(quiet, echo) for _ in range(2)]
        measured_at_s = time.monotonic() - started

    expected_s = FLOOD_CALLS / per_account * SLEEP_MS / 1000
    loaded, loaded_lag_ms = min(windows, key=lambda w: p99(w[0]))
    slack_ms = max(P99_SLACK_MS, p99(unloaded) - p50(unloaded))
    print(f"\nB unloaded: p50 {p50(unloaded):.1f} ms, p99 {p99(unloaded):.1f} ms (event loop lag "
          f"up to {unloaded_lag_ms:.0f} ms); during A's flood of {FLOOD_CALLS} × {SLEEP_MS} ms "
          f"(accepted in {accepted_s:.1f} s): p99 per window "
          f"{', '.join(f'{p99(w):.1f}' for w, _ in windows)} ms; the better: p50 {p50(loaded):.1f} ms, "
          f"p99 {p99(loaded):.1f} ms (event loop lag up to {loaded_lag_ms:.0f} ms); "
          f"allowed p99 {p99(unloaded) + slack_ms:.1f} ms")
    # B was measured while A's backlog was still there (it takes expected_s to work off).
    assert measured_at_s < expected_s, "the flood was over before B was measured"
    assert p99(loaded) <= p99(unloaded) + slack_ms, (p99(unloaded), p99(loaded), slack_ms)

    # Every one of A's calls ran, exactly once.
    runs = await runs_of(settings, Topics(settings.topic_prefix).activations, set(ids),
                         timeout_s=expected_s + 120)
    missing = set(ids) - runs.keys()
    assert not missing, f"{len(missing)} of A's calls never ran"
    twice = {i: n for i, n in runs.items() if n != 1}
    assert not twice, f"ran more than once: {twice}"


async def runs_of(settings: Settings, topic: str, ids: set[str],
                  timeout_s: float) -> collections.Counter[str]:
    """Successful activation records per id among ``ids``, until all are there (+2 s)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    runs: collections.Counter[str] = collections.Counter()
    try:
        async def complete() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    activation = ActivationRecord.from_bytes(record.value)
                    if activation.activation_id in ids:
                        assert activation.outcome is InvocationOutcome.SUCCEEDED, activation
                        runs[activation.activation_id] += 1
            return ids <= runs.keys()

        await eventually(complete, timeout_s=timeout_s, interval_s=0, what="every flood call's run")
        await asyncio.sleep(2)
        await complete()
    finally:
        await consumer.stop()
    return runs

