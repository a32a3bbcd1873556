"""The schedules table: CRUD with the original platform's rules, fires, results.

Contract of :class:`Schedules`:
1. Every write validates first (cron, payload, lambda) and then runs as one
   transaction; bad input changes nothing.
2. "At most 10 functions scheduled per account" counts distinct lambdas with a
   schedule (enabled or not), and at most ``max_per_lambda`` schedules (enabled
   or not) point at one lambda; both are checked under a per-account advisory
   lock so two concurrent creates cannot both take the last place.
3. ``claim_due()`` locks due rows (``FOR UPDATE SKIP LOCKED``), records one
   fire per (schedule, due minute) — the unique key makes a second fire of the
   same minute impossible — and advances ``next_due_ms``, all in one
   transaction. Only fires recorded by that transaction are produced.
4. ``record_result()`` applies an activation record to the schedule that fired
   it; a result of an older fire never overwrites a newer one.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from fnbus.api_models import ScheduleCreate, ScheduleOut, ScheduleUpdate
from fnbus.errors import Conflict, NotFound, Unprocessable
from fnbus.lambda_cache import LambdaCache
from fnbus.schemas import ActivationRecord, InvocationOutcome, LambdaChange, LambdaState
from services.scheduler import cron
from services.scheduler.clock import Clock
from services.scheduler.options import (
    MAX_PAYLOAD_CHARS,
    MAX_SCHEDULED_LAMBDAS,
    MAX_SCHEDULES_PER_LAMBDA,
    SchedulerOptions,
)

log = logging.getLogger(__name__)

# Namespace of the deterministic activation ids of scheduled invocations.
ACTIVATION_NAMESPACE = uuid.UUID("6f1d7c2e-8a43-4b8e-9a51-5c0de5c4ed01")
PRODUCTIVE_WAIT_S = 2.0  # a lambda deployed a moment ago may not be in our cache yet


def activation_id(schedule_id: str, due_ms: int) -> str:
    """Same schedule and minute → same id, so a re-produced request is recognisable downstream."""
    return str(uuid.uuid5(ACTIVATION_NAMESPACE, f"{schedule_id}:{due_ms}"))


def payload_chars(payload: Any) -> int:
    return len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))


def check_payload(payload: Any) -> None:
    size = payload_chars(payload)
    if size > MAX_PAYLOAD_CHARS:
        raise Unprocessable(
            f"payload is {size} characters as JSON; a schedule's payload is limited to "
            f"{MAX_PAYLOAD_CHARS} characters", code="schedule_payload_too_large",
            details={"chars": size, "max_chars": MAX_PAYLOAD_CHARS})


def is_productive(change: LambdaChange | None) -> bool:
    return (change is not None and change.deployed_version is not None
            and change.state in (LambdaState.PRODUCTIVE, LambdaState.MODIFIED))


def _uuid(value: str, what: str = "schedule") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"{what} {value} not found", code=f"{what}_not_found") from None


@dataclass(frozen=True)
class Fire:
    schedule_id: str
    account_id: str
    lambda_id: str
    due_ms: int
    activation_id: str
    payload: Any


class Schedules:
    def __init__(self, pool: asyncpg.Pool, cache: LambdaCache | None, clock: Clock,
                 options: SchedulerOptions, max_per_lambda: int = MAX_SCHEDULES_PER_LAMBDA) -> None:
        self.pool = pool
        self.cache = cache
        self.clock = clock
        self.options = options
        self.max_per_lambda = max_per_lambda

    # -- reading -------------------------------------------------------------------------
    def _out(self, row: asyncpg.Record) -> ScheduleOut:
        change = self.cache.get(str(row["lambda_id"])) if self.cache else None
        return ScheduleOut(
            id=str(row["id"]), account_id=row["account_id"], lambda_id=str(row["lambda_id"]),
            lambda_name=change.name if change else None, cron=row["cron"],
            payload=row["payload"], enabled=row["enabled"],
            next_invocation_ms=row["next_due_ms"], last_invocation_ms=row["last_invocation_ms"],
            last_state=row["last_state"], last_outcome=row["last_outcome"],
            last_error=row["last_error"], last_activation_id=row["last_activation_id"],
            last_run_ms=row["last_run_ms"], created_ms=row["created_ms"],
            updated_ms=row["updated_ms"])

    async def list_all(self, account_id: str) -> list[ScheduleOut]:
        rows = await self.pool.fetch(
            "SELECT * FROM schedules WHERE account_id = $1 ORDER BY created_ms, id", account_id)
        return [self._out(r) for r in rows]

    async def _row(self, conn: Any, account_id: str, schedule_id: str, *,
                   lock: bool = False) -> asyncpg.Record:
        row = await conn.fetchrow(
            "SELECT * FROM schedules WHERE id = $1 AND account_id = $2"
            + (" FOR UPDATE" if lock else ""), _uuid(schedule_id), account_id)
        if row is None:
            raise NotFound(f"schedule {schedule_id} not found", code="schedule_not_found")
        return row

    async def get(self, account_id: str, schedule_id: str) -> ScheduleOut:
        return self._out(await self._row(self.pool, account_id, schedule_id))

    # -- validation ----------------------------------------------------------------------
    async def _check_lambda(self, account_id: str, lambda_id: str) -> uuid.UUID:
        lid = _uuid(lambda_id, "lambda")
        change = self.cache.get(str(lid)) if self.cache else None
        if self.cache is not None and not is_productive(change):
            change = await self.cache.wait_for(str(lid), is_productive, PRODUCTIVE_WAIT_S)
        if change is None or change.account_id != account_id:
            raise NotFound(f"lambda {lambda_id} not found", code="lambda_not_found")
        if not is_productive(change):
            raise Unprocessable(
                f"lambda {change.name!r} is {change.state.value}: only productive (deployed) "
                "lambdas can be scheduled; deploy it first", code="lambda_not_productive")
        return lid

    async def _check_limit(self, conn: Any, account_id: str, lambda_id: uuid.UUID) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('fnbus.schedules:' || $1))",
                           account_id)
        others = await conn.fetchval(
            "SELECT count(DISTINCT lambda_id) FROM schedules WHERE account_id = $1 "
            "AND lambda_id <> $2", account_id, lambda_id)
        if others >= MAX_SCHEDULED_LAMBDAS:
            raise Conflict(
                f"at most {MAX_SCHEDULED_LAMBDAS} functions can be scheduled per account; "
                "delete a schedule of another function first", code="schedule_limit_reached",
                details={"max_scheduled_functions": MAX_SCHEDULED_LAMBDAS})
        # The schedule being moved onto this lambda still points at its old one: not counted.
        mine = await conn.fetchval(
            "SELECT count(*) FROM schedules WHERE account_id = $1 AND lambda_id = $2",
            account_id, lambda_id)
        if mine >= self.max_per_lambda:
            raise Conflict(
                f"at most {self.max_per_lambda} schedules per function; delete or change one "
                "of this function's schedules first", code="lambda_schedule_limit_reached",
                details={"max_schedules_per_lambda": self.max_per_lambda})

    # -- writing -------------------------------------------------------------------------
    async def create(self, account_id: str, body: ScheduleCreate) -> ScheduleOut:
        expr = cron.validate(body.cron)
        check_payload(body.payload)
        lid = await self._check_lambda(account_id, body.lambda_id)
        now = self.clock.now_ms()
        next_due = cron.next_after(expr, now) if body.enabled else None
        async with self.pool.acquire() as conn, conn.transaction():
            await self._check_limit(conn, account_id, lid)
            row = await conn.fetchrow(
                """INSERT INTO schedules (id, account_id, lambda_id, cron, payload, enabled,
                                          next_due_ms, created_ms, updated_ms)
                   VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $8) RETURNING *""",
                uuid.uuid4(), account_id, lid, expr, body.payload, body.enabled,
                next_due, now)
        log.info("schedule created", extra={"account_id": account_id, "lambda_id": str(lid),
                                            "schedule_id": str(row["id"]), "cron": expr})
        return self._out(row)

    async def update(self, account_id: str, schedule_id: str, body: ScheduleUpdate) -> ScheduleOut:
        given = body.model_fields_set
        expr = cron.validate(body.cron) if body.cron is not None else None
        if "payload" in given:
            check_payload(body.payload)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._row(conn, account_id, schedule_id, lock=True)
            lid = row["lambda_id"]
            if body.lambda_id is not None and body.lambda_id != str(lid):
                lid = await self._check_lambda(account_id, body.lambda_id)
                await self._check_limit(conn, account_id, lid)
            elif body.enabled and not row["enabled"]:
                await self._check_lambda(account_id, str(lid))
            new_expr = expr or row["cron"]
            enabled = row["enabled"] if body.enabled is None else body.enabled
            now = self.clock.now_ms()
            next_due = row["next_due_ms"]
            if not enabled:
                next_due = None
            elif expr is not None or not row["enabled"] or next_due is None:
                next_due = cron.next_after(new_expr, now)
            payload = body.payload if "payload" in given else row["payload"]
            row = await conn.fetchrow(
                """UPDATE schedules SET lambda_id = $2, cron = $3, payload = $4::jsonb,
                          enabled = $5, next_due_ms = $6, updated_ms = $7
                   WHERE id = $1 RETURNING *""",
                row["id"], lid, new_expr, payload, enabled, next_due, now)
        return self._out(row)

    async def delete(self, account_id: str, schedule_id: str) -> None:
        deleted = await self.pool.fetchval(
            "DELETE FROM schedules WHERE id = $1 AND account_id = $2 RETURNING id",
            _uuid(schedule_id), account_id)
        if deleted is None:
            raise NotFound(f"schedule {schedule_id} not found", code="schedule_not_found")

    async def delete_for_lambda(self, lambda_id: str) -> int:
        try:
            lid = uuid.UUID(lambda_id)
        except ValueError:
            return 0
        rows = await self.pool.fetch("DELETE FROM schedules WHERE lambda_id = $1 RETURNING id", lid)
        if rows:
            log.info("deleted the schedules of an undeployed lambda",
                     extra={"lambda_id": lambda_id, "count": len(rows)})
        return len(rows)

    async def scheduled_lambdas(self) -> list[str]:
        rows = await self.pool.fetch("SELECT DISTINCT lambda_id FROM schedules")
        return [str(r["lambda_id"]) for r in rows]

    # -- firing (leader only) ------------------------------------------------------------
    async def claim_due(self, now_ms: int, recorded_ms: int | None = None) -> tuple[list[Fire], int]:
        """Record and advance one batch of schedules due at ``now_ms``; return (fires, rows seen).

        ``now_ms`` may lie slightly ahead (the leader prepares the coming minute's
        fires a few seconds early); ``recorded_ms`` is the real time of recording.
        """
        fires: list[Fire] = []
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, account_id, lambda_id, cron, payload, next_due_ms FROM schedules
                   WHERE enabled AND next_due_ms <= $1 ORDER BY next_due_ms
                   LIMIT $2 FOR UPDATE SKIP LOCKED""", now_ms, self.options.fire_batch)
            if not rows:
                return [], 0
            ids, dues, nexts, row_acts, fired_dues, acts = [], [], [], [], [], []
            by_key: dict[tuple[str, int], asyncpg.Record] = {}
            acts_by_key: dict[tuple[str, int], str] = {}
            for r in rows:
                p = cron.plan(r["cron"], r["next_due_ms"], now_ms, self.options.catch_up_ms)
                ids.append(r["id"])
                dues.append(p.fire_ms)
                nexts.append(p.next_due_ms)
                if p.skipped:
                    log.info("skipped due minutes missed while no scheduler ran",
                             extra={"schedule_id": str(r["id"]), "was_due_ms": r["next_due_ms"]})
                act = None if p.fire_ms is None else activation_id(str(r["id"]), p.fire_ms)
                row_acts.append(act)
                if p.fire_ms is not None and act is not None:
                    fired_dues.append((r["id"], p.fire_ms))
                    acts.append(act)
                    by_key[(str(r["id"]), p.fire_ms)] = r
                    acts_by_key[(str(r["id"]), p.fire_ms)] = act
            inserted = await conn.fetch(
                """INSERT INTO schedule_fires (schedule_id, due_ms, activation_id, fired_ms)
                   SELECT u.id, u.due, u.act, $4::bigint
                   FROM unnest($1::uuid[], $2::bigint[], $3::text[]) AS u(id, due, act)
                   ON CONFLICT DO NOTHING RETURNING schedule_id, due_ms""",
                [k[0] for k in fired_dues], [k[1] for k in fired_dues], acts,
                now_ms if recorded_ms is None else recorded_ms)
            await conn.execute(
                """UPDATE schedules s SET next_due_ms = v.next_due,
                          last_invocation_ms = COALESCE(v.fired, s.last_invocation_ms),
                          last_activation_id = COALESCE(v.act, s.last_activation_id)
                   FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::text[])
                        AS v(id, next_due, fired, act)
                   WHERE s.id = v.id""",
                ids, nexts, dues, row_acts)
        for rec in inserted:
            r = by_key[(str(rec["schedule_id"]), rec["due_ms"])]
            fires.append(Fire(str(r["id"]), r["account_id"], str(r["lambda_id"]), rec["due_ms"],
                              acts_by_key[(str(r["id"]), rec["due_ms"])], r["payload"]))
        return fires, len(rows)

    async def mark_produced(self, fires: Sequence[Fire], produced_ms: int) -> None:
        if fires:
            await self.pool.execute(
                """UPDATE schedule_fires f SET produced_ms = $3
                   FROM unnest($1::uuid[], $2::bigint[]) AS v(id, due)
                   WHERE f.schedule_id = v.id AND f.due_ms = v.due""",
                [f.schedule_id for f in fires], [f.due_ms for f in fires], produced_ms)

    async def unproduced(self, now_ms: int, fired_before_ms: int) -> list[Fire]:
        """Fires recorded but never acknowledged by the broker (a leader died in between)."""
        rows = await self.pool.fetch(
            """SELECT f.schedule_id, f.due_ms, f.activation_id, s.account_id, s.lambda_id, s.payload
               FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id
               WHERE f.produced_ms IS NULL AND f.due_ms BETWEEN $1 AND $3 AND f.fired_ms <= $2
               ORDER BY f.due_ms LIMIT 10000""",
            now_ms - self.options.catch_up_ms, fired_before_ms, now_ms)
        return [Fire(str(r["schedule_id"]), r["account_id"], str(r["lambda_id"]), r["due_ms"],
                     r["activation_id"], r["payload"]) for r in rows]

    async def prune_fires(self, now_ms: int) -> int:
        result = await self.pool.execute(
            "DELETE FROM schedule_fires WHERE due_ms < $1",
            now_ms - self.options.fires_retention_ms)
        return int(result.split()[-1])

    async def earliest_due(self) -> int | None:
        value = await self.pool.fetchval(
            "SELECT min(next_due_ms) FROM schedules WHERE enabled")
        return None if value is None else int(value)

    # -- results (jsonb parameters go through the pool's JSON codec) -------------------------
    async def record_result(self, record: ActivationRecord) -> bool:
        ok = record.outcome == InvocationOutcome.SUCCEEDED
        error = record.error.model_dump(mode="json") if record.error else None
        row = await self.pool.fetchrow(
            """WITH f AS (UPDATE schedule_fires SET outcome = $2 WHERE activation_id = $1
                          RETURNING schedule_id, due_ms)
               UPDATE schedules s SET last_state = $3, last_outcome = $2, last_error = $4::jsonb,
                      last_run_ms = $5, last_result_due_ms = f.due_ms
               FROM f WHERE s.id = f.schedule_id
                 AND (s.last_result_due_ms IS NULL OR s.last_result_due_ms <= f.due_ms)
               RETURNING s.id""",
            record.activation_id, record.outcome.value, "success" if ok else "failure",
            error, record.started_ms)
        return row is not None
