"""Log search on 1,000,000 stored lines: p50/p95 of typical queries.

Usage (PostgreSQL from deploy/local/infra.sh must be running):

    .venv/bin/python bench/log_search.py [--lines 1000000] [--runs 30] [--keep]

Creates its own database ``fnbus_bench_log_search`` (dropped at the end unless
``--keep``), applies the migrations, creates the daily partitions of the last
eight days, loads the lines of one account with COPY — spread evenly over seven
days, 20 lambdas, levels weighted like real output, messages from a small
vocabulary with numbers — runs ANALYZE, then times each query through
:class:`services.log_ingest.search.SearchStore` (the same SQL log-ingest serves),
first page of 100, newest first. Prints a table and, with ``--json``, the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "libs")]

from bench.stats import percentile  # noqa: E402
from fnbus import db  # noqa: E402
from fnbus.config import Settings  # noqa: E402
from services.log_ingest.search import LogFilter, SearchStore  # noqa: E402

DB_NAME = "fnbus_bench_log_search"
ACCOUNT = "bench-account"
LAMBDAS = [str(uuid.UUID(int=i + 1)) for i in range(20)]
LEVELS = ["info"] * 55 + ["log"] * 20 + ["debug"] * 10 + ["warn"] * 10 + ["error"] * 5
WORDS = ("order payment customer conversation skill agent message routing bot survey "
         "transcript callback timeout retry lookup cache token webhook session queue").split()
TARGET_MS = 1000.0


def message(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(4, 9))
    return f"{' '.join(words)} id={rng.randint(1, 10**7)} took {rng.randint(1, 900)}ms"


def rows(n: int, now: datetime, rng: random.Random):  # type: ignore[no-untyped-def]
    span_s = 7 * 24 * 3600 - 60
    per_activation = 5
    for i in range(n):
        activation = f"act-{i // per_activation:08d}"
        ts = now - timedelta(seconds=span_s * (i / n))
        yield (activation, i % per_activation, ACCOUNT, LAMBDAS[(i // per_activation) % 20],
               rng.choice(LEVELS), message(rng), ts)


async def setup(url: str, n: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await db.apply_migrations(conn)
        today = datetime.now(UTC).date()
        for back in range(8, -3, -1):
            await conn.fetchval("SELECT fnbus_ensure_day_partition('log_lines', 'ts', $1)",
                                today - timedelta(days=back))
        rng = random.Random(42)
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        batch: list[tuple[object, ...]] = []
        columns = ["activation_id", "seq", "account_id", "lambda_id", "level", "message", "ts"]
        for row in rows(n, now, rng):
            batch.append(row)
            if len(batch) == 50_000:
                await conn.copy_records_to_table("log_lines", records=batch, columns=columns)
                batch.clear()
        if batch:
            await conn.copy_records_to_table("log_lines", records=batch, columns=columns)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await conn.execute("ANALYZE log_lines")
        print(f"loaded {n} lines in {load_s:.1f} s (COPY), ANALYZE {time.perf_counter() - t0:.1f} s")
    finally:
        await conn.close()


QUERIES: list[tuple[str, LogFilter]] = [
    ("no filter", LogFilter(ACCOUNT)),
    ("one lambda", LogFilter(ACCOUNT, lambda_ids=(LAMBDAS[3],))),
    ("level error", LogFilter(ACCOUNT, levels=("error",))),
    ("text q (common word)", LogFilter(ACCOUNT, q="webhook")),
    ("text q (rare: one id)", LogFilter(ACCOUNT, q="id=4242424 ")),
    ("q + lambda", LogFilter(ACCOUNT, lambda_ids=(LAMBDAS[7],), q="payment")),
    ("level error + lambda, last 24 h", LogFilter(
        ACCOUNT, lambda_ids=(LAMBDAS[5],), levels=("error",),
        since=datetime.now(UTC) - timedelta(hours=24))),
]


async def measure(url: str, runs: int) -> list[dict[str, object]]:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    store = SearchStore(pool, retention_days=7)
    results = []
    try:
        for name, f in QUERIES:
            await store.search(f, limit=100, cursor=None)  # warm the cache once
            samples = []
            found = 0
            for _ in range(runs):
                t0 = time.perf_counter()
                items, _cursor = await store.search(f, limit=100, cursor=None)
                samples.append((time.perf_counter() - t0) * 1000)
                found = len(items)
            p50, p95 = percentile(samples, 50), percentile(samples, 95)
            results.append({"query": name, "p50_ms": round(p50, 2), "p95_ms": round(p95, 2),
                            "rows": found, "target_ms": TARGET_MS, "ok": p95 < TARGET_MS})
    finally:
        await pool.close()
    return results


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    admin_url = Settings().database_url
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{DB_NAME}"))
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await admin.close()
    try:
        await setup(url, args.lines)
        results = await measure(url, args.runs)
    finally:
        if not args.keep:
            admin = await asyncpg.connect(admin_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
            finally:
                await admin.close()
    print(f"{'query':34} {'p50 ms':>8} {'p95 ms':>8} {'rows':>5}  target p95 < {TARGET_MS:.0f} ms")
    for r in results:
        print(f"{r['query']:34} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['rows']:>5}  "
              f"{'ok' if r['ok'] else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"lines": args.lines, "runs": args.runs,
                                         "queries": results}, indent=2))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
