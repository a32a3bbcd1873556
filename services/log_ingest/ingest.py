"""One batch of Kafka records → rows in PostgreSQL, with retries. No Kafka code here.

Contract of :meth:`BatchIngestor.ingest`:
1. Every record is parsed on its own; a malformed one is logged with its
   topic/partition/offset, counted, and skipped. Nothing in a record can make the
   call fail or block.
2. The valid records are written in one idempotent statement (duplicates inside the
   batch collapse to the first; duplicates of stored rows are ignored by the store).
3. When the write fails, it is retried with exponential backoff (logged each
   time) for as long as it takes — the caller must not acknowledge the batch
   before it is durable. Rows the database refuses for their content are logged
   and skipped like malformed records.
4. It returns True once the batch is durable (acknowledge it now), and False only
   if :meth:`BatchIngestor.drain` was called while a write was still failing: the
   batch must then stay unacknowledged, to be redelivered after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fnbus.schemas import ActivationRecord, LogLine
from services.log_ingest import metrics
from services.log_ingest.records import (
    Envelope,
    Kind,
    MalformedRecord,
    activation_key,
    activation_row,
    first_per_key,
    log_key,
    log_row,
    parse_activation,
    parse_log_line,
)
from services.log_ingest.store import WriteResult

log = logging.getLogger(__name__)

DEFAULT_RETRY_INITIAL_MS = 200
DEFAULT_RETRY_MAX_MS = 10_000


class RowWriter(Protocol):
    """What the ingestor needs from the database (``store.IngestStore`` in production)."""

    async def write_activations(self, rows: Sequence[tuple[Any, ...]]) -> WriteResult: ...

    async def write_log_lines(self, rows: Sequence[tuple[Any, ...]]) -> WriteResult: ...


@dataclass(frozen=True)
class _KindSpec:
    parse: Callable[[bytes | None], Any]
    key: Callable[[Any], tuple[str, int]]
    row: Callable[[Any], tuple[Any, ...]]


@dataclass(frozen=True)
class _Parsed:
    envelope: Envelope
    message: ActivationRecord | LogLine
    key: tuple[str, int]
    row: tuple[Any, ...]


_SPECS = {
    Kind.ACTIVATION: _KindSpec(parse_activation, activation_key, activation_row),
    Kind.LOG: _KindSpec(parse_log_line, log_key, log_row),
}


def _where(env: Envelope) -> dict[str, Any]:
    return {"topic": env.topic, "partition": env.partition, "offset": env.offset}


def _ids(message: ActivationRecord | LogLine) -> dict[str, Any]:
    return {
        "account_id": message.account_id,
        "lambda_id": message.lambda_id,
        "activation_id": message.activation_id,
    }


class BatchIngestor:
    def __init__(
        self,
        writer: RowWriter,
        *,
        retry_initial_ms: int = DEFAULT_RETRY_INITIAL_MS,
        retry_max_ms: int = DEFAULT_RETRY_MAX_MS,
    ) -> None:
        self._writer = writer
        self._retry_initial_ms = retry_initial_ms
        self._retry_max_ms = retry_max_ms
        self._draining = asyncio.Event()

    def drain(self) -> None:
        """Stop retrying failed writes (shutdown): the pending batch stays unacknowledged."""
        self._draining.set()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    async def ingest(self, kind: Kind, batch: Sequence[Envelope]) -> bool:
        """Make ``batch`` durable; see the module docstring for the contract."""
        spec = _SPECS[kind]
        metrics.BATCH_SIZE.labels(kind.value).observe(len(batch))
        parsed: list[_Parsed] = []
        for env in batch:
            try:
                message = spec.parse(env.value)
                parsed.append(_Parsed(env, message, spec.key(message), spec.row(message)))
            except MalformedRecord as exc:
                self._skip(kind, env, exc.reason)
            except Exception as exc:  # noqa: BLE001 - no record may stop the stream
                self._skip(kind, env, f"unusable: {exc!r}")
        unique = first_per_key(parsed, key=lambda p: p.key)
        if not unique:
            return True
        rows = [p.row for p in unique]

        started = time.monotonic()
        result = await self._write_with_retry(kind, rows)
        if result is None:
            return False
        metrics.BATCH_WRITE_SECONDS.labels(kind.value).observe(time.monotonic() - started)

        for index, why in result.rejected:
            refused = unique[index]
            self._skip(kind, refused.envelope, f"refused by the database: {why}", **_ids(refused.message))
        stored = len(unique) - len(result.rejected)
        repeats_in_batch = len(parsed) - len(unique)
        metrics.RECORDS_INGESTED.labels(kind.value).inc(result.inserted)
        metrics.RECORDS_DUPLICATE.labels(kind.value).inc(
            repeats_in_batch + max(0, stored - result.inserted)
        )
        log.debug(
            "batch stored",
            extra={"kind": kind.value, "records": len(batch), "inserted": result.inserted},
        )
        return True

    def _skip(self, kind: Kind, env: Envelope, reason: str, **fields: Any) -> None:
        metrics.RECORDS_MALFORMED.labels(kind.value).inc()
        log.warning(
            "skipping malformed record",
            extra={"kind": kind.value, **_where(env), "reason": reason, **fields},
        )

    async def _write_with_retry(self, kind: Kind, rows: list[tuple[Any, ...]]) -> WriteResult | None:
        write = (
            self._writer.write_activations if kind is Kind.ACTIVATION
            else self._writer.write_log_lines
        )
        delay_ms = self._retry_initial_ms
        failures = 0
        while True:
            try:
                return await write(rows)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: retry, never drop
                failures += 1
                metrics.WRITE_FAILURES.labels(kind.value).inc()
                if self.draining:
                    log.warning(
                        "batch write failed while shutting down; leaving it unacknowledged",
                        extra={"kind": kind.value, "rows": len(rows), "error": repr(exc)},
                    )
                    return None
                log.warning(
                    "batch write failed; retrying",
                    extra={
                        "kind": kind.value, "rows": len(rows), "failures": failures,
                        "retry_in_ms": delay_ms, "error": repr(exc),
                    },
                )
                # Sleep, but wake at once when shutdown starts.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._draining.wait(), delay_ms / 1000)
                delay_ms = min(delay_ms * 2, self._retry_max_ms)
