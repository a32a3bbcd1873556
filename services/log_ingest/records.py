"""Kafka record → validated message → database row → API item. Pure functions only.

Everything here is deterministic and free of I/O so the rules for what counts as
malformed, and how a message maps to a row, are unit-tested on their own.

What makes a record malformed (it is logged and skipped, never retried):
1. no value, or a value that is not a JSON object;
2. a ``schema_version`` other than :data:`fnbus.schemas.SCHEMA_VERSION` (missing
   counts as unknown: readers refuse versions they do not know);
3. fields the pydantic model rejects;
4. values the database could never store: empty or oversized ids, integers
   outside PostgreSQL's ``integer``, times outside ``timestamptz``.

Free text (log messages, results, errors) is repaired instead of refused: NUL
characters and lone surrogates, which PostgreSQL cannot store, become U+FFFD.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

from pydantic import ValidationError

from fnbus.schemas import SCHEMA_VERSION, ActivationRecord, InvocationError, LogLine, Message

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
# Ids are primary-key columns; btree entries have a size limit, and no real id is long.
MAX_ID_CHARS = 256
# 9999-12-31T23:59:59.999Z, the last instant Python's datetime can hold.
MAX_EPOCH_MS = 253_402_300_799_999
REPLACEMENT_CHAR = "\ufffd"


class Kind(str, Enum):
    """The two record streams this service ingests."""

    ACTIVATION = "activation"
    LOG = "log"


class MalformedRecord(ValueError):
    """A record that can never be written; ``reason`` says why, for the log line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Envelope:
    """One Kafka record as the ingest path sees it: where it came from and its bytes."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


# --- parsing -----------------------------------------------------------------------------

M = TypeVar("M", bound=Message)


def _parse(model: type[M], value: bytes | None) -> M:
    if value is None or len(value) == 0:
        raise MalformedRecord("empty value")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRecord(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedRecord(f"not a JSON object but {type(data).__name__}")
    version = data.get("schema_version")
    if version is None:
        raise MalformedRecord("missing schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise MalformedRecord(f"unsupported schema_version {version!r}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise MalformedRecord(f"invalid {model.__name__}: {_summarise(exc)}") from None


def _summarise(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "value"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _check_id(name: str, value: str | None, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not value:
        raise MalformedRecord(f"empty {name}")
    if len(value) > MAX_ID_CHARS:
        raise MalformedRecord(f"{name} longer than {MAX_ID_CHARS} characters")
    if clean_text(value) != value:
        raise MalformedRecord(f"{name} contains characters that cannot be stored")


def _check_int32(name: str, value: int | None) -> None:
    if value is not None and not INT32_MIN <= value <= INT32_MAX:
        raise MalformedRecord(f"{name} out of range: {value}")


def _check_ms(name: str, value: int) -> None:
    if not 0 <= value <= MAX_EPOCH_MS:
        raise MalformedRecord(f"{name} out of range: {value}")


def parse_activation(value: bytes | None) -> ActivationRecord:
    """Bytes from the activations topic → :class:`ActivationRecord`, or :class:`MalformedRecord`."""
    rec = _parse(ActivationRecord, value)
    for name in ("activation_id", "account_id", "lambda_id"):
        _check_id(name, getattr(rec, name))
    _check_id("event_id", rec.event_id, optional=True)
    _check_id("trace_id", rec.trace_id, optional=True)
    for name in ("attempt", "version", "duration_ms"):
        _check_int32(name, getattr(rec, name))
    _check_ms("started_ms", rec.started_ms)
    _check_ms("finished_ms", rec.finished_ms)
    return rec


def parse_log_line(value: bytes | None) -> LogLine:
    """Bytes from the logs topic → :class:`LogLine`, or :class:`MalformedRecord`."""
    line = _parse(LogLine, value)
    for name in ("activation_id", "account_id", "lambda_id"):
        _check_id(name, getattr(line, name))
    _check_id("trace_id", line.trace_id, optional=True)
    _check_int32("seq", line.seq)
    _check_ms("ts_ms", line.ts_ms)
    return line


# --- text repair -------------------------------------------------------------------------


def clean_text(value: str) -> str:
    """Make ``value`` storable in PostgreSQL text/jsonb: no NUL, no lone surrogates."""
    if "\x00" in value:
        value = value.replace("\x00", REPLACEMENT_CHAR)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = "".join(REPLACEMENT_CHAR if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    return value


def clean_json(value: Any) -> Any:
    """:func:`clean_text` applied to every string (keys too) inside a JSON value."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value


# --- time --------------------------------------------------------------------------------


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds → aware UTC datetime, exactly (no float rounding)."""
    return EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(value: datetime) -> int:
    """Aware datetime → epoch milliseconds, exactly."""
    return (value - EPOCH) // timedelta(milliseconds=1)


# --- rows ---------------------------------------------------------------------------------

# Column order of the row tuples below; the store's INSERT lists them in this order.
ACTIVATION_COLUMNS = (
    "activation_id", "attempt", "account_id", "lambda_id", "version", "source", "event_id",
    "outcome", "result", "error", "started_at", "finished_at", "duration_ms", "cold_start",
    "invoker", "trace_id", "hops_ms",
)
LOG_COLUMNS = ("activation_id", "seq", "account_id", "lambda_id", "level", "message", "ts",
               "trace_id")


def _json_text(value: Any) -> str | None:
    # JSON travels as text and is cast to jsonb in SQL, independent of connection codecs.
    return None if value is None else json.dumps(clean_json(value), ensure_ascii=False)


def activation_key(rec: ActivationRecord) -> tuple[str, int]:
    return rec.activation_id, rec.attempt


def log_key(line: LogLine) -> tuple[str, int]:
    return line.activation_id, line.seq


def activation_row(rec: ActivationRecord) -> tuple[Any, ...]:
    """An activation as a tuple in :data:`ACTIVATION_COLUMNS` order."""
    error = rec.error.model_dump(mode="json") if rec.error is not None else None
    return (
        rec.activation_id,
        rec.attempt,
        rec.account_id,
        rec.lambda_id,
        rec.version,
        rec.source.value,
        rec.event_id,
        rec.outcome.value,
        _json_text(rec.result),
        _json_text(error),
        ms_to_datetime(rec.started_ms),
        ms_to_datetime(rec.finished_ms),
        rec.duration_ms,
        rec.cold_start,
        clean_text(rec.invoker),
        rec.trace_id,
        _json_text(rec.hops_ms),
    )


def log_row(line: LogLine) -> tuple[Any, ...]:
    """A log line as a tuple in :data:`LOG_COLUMNS` order."""
    return (
        line.activation_id,
        line.seq,
        line.account_id,
        line.lambda_id,
        line.level.value,
        clean_text(line.message),
        ms_to_datetime(line.ts_ms),
        line.trace_id,
    )


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows → one list per column (the shape ``unnest($1::text[], ...)`` takes)."""
    cols: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for i, value in enumerate(row):
            cols[i].append(value)
    return cols


T = TypeVar("T")


def first_per_key(items: Iterable[T], key: Callable[[T], Hashable]) -> list[T]:
    """Drop later items whose key was already seen (the database keeps the first write too)."""
    seen: set[Hashable] = set()
    kept = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            kept.append(item)
    return kept


# --- API items ---------------------------------------------------------------------------


def activation_item(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of ``activations`` → the JSON shape of :class:`ActivationRecord` (times in ms)."""
    # jsonb columns arrive decoded: fnbus.db pools install a JSON codec on every connection.
    error = row["error"]
    rec = ActivationRecord(
        activation_id=row["activation_id"],
        account_id=row["account_id"],
        lambda_id=row["lambda_id"],
        version=row["version"],
        source=row["source"],
        event_id=row["event_id"],
        attempt=row["attempt"],
        outcome=row["outcome"],
        result=row["result"],
        error=InvocationError.model_validate(error) if error is not None else None,
        started_ms=datetime_to_ms(row["started_at"]),
        finished_ms=datetime_to_ms(row["finished_at"]),
        duration_ms=row["duration_ms"],
        cold_start=row["cold_start"],
        invoker=row["invoker"],
        trace_id=row.get("trace_id"),
        hops_ms=row.get("hops_ms"),
    )
    return rec.model_dump(mode="json")


def log_item(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of ``log_lines`` → the JSON shape of :class:`LogLine` (time in ms)."""
    line = LogLine(
        activation_id=row["activation_id"],
        account_id=row["account_id"],
        lambda_id=row["lambda_id"],
        seq=row["seq"],
        level=row["level"],
        message=row["message"],
        ts_ms=datetime_to_ms(row["ts"]),
        trace_id=row.get("trace_id"),
    )
    return line.model_dump(mode="json")
