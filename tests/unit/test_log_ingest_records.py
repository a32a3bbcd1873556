"""Parsing, repair and row mapping of log-ingest records (pure functions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from fnbus.schemas import (
    ActivationRecord,
    EventSource,
    InvocationError,
    InvocationOutcome,
    LogLevel,
    LogLine,
)
from services.log_ingest.records import (
    ACTIVATION_COLUMNS,
    LOG_COLUMNS,
    MAX_EPOCH_MS,
    MAX_ID_CHARS,
    MalformedRecord,
    activation_item,
    activation_row,
    clean_json,
    clean_text,
    columns,
    datetime_to_ms,
    first_per_key,
    log_item,
    log_row,
    ms_to_datetime,
    parse_activation,
    parse_log_line,
)


def activation(**fields: Any) -> ActivationRecord:
    values: dict[str, Any] = {
        "activation_id": "act-1",
        "account_id": "acc-1",
        "lambda_id": "lam-1",
        "version": 3,
        "source": EventSource.EVENT,
        "event_id": "messaging_new_conversation",
        "attempt": 2,
        "outcome": InvocationOutcome.CODING_FAILURE,
        "result": None,
        "error": InvocationError(code="custom", message="boom", details={"line": 4}),
        "started_ms": 1_700_000_000_123,
        "finished_ms": 1_700_000_000_456,
        "duration_ms": 333,
        "cold_start": True,
        "invoker": "invoker-a",
    }
    values.update(fields)
    return ActivationRecord(**values)


def line(**fields: Any) -> LogLine:
    values: dict[str, Any] = {
        "activation_id": "act-1",
        "account_id": "acc-1",
        "lambda_id": "lam-1",
        "seq": 7,
        "level": LogLevel.WARN,
        "message": "careful",
        "ts_ms": 1_700_000_000_999,
    }
    values.update(fields)
    return LogLine(**values)


def encode(data: Any) -> bytes:
    return json.dumps(data).encode()


# --- parsing -----------------------------------------------------------------------------


def test_valid_records_parse_to_the_models() -> None:
    assert parse_activation(activation().to_bytes()) == activation()
    assert parse_log_line(line().to_bytes()) == line()


def test_unknown_fields_are_ignored() -> None:
    data = line().model_dump(mode="json") | {"added_later": 1}
    assert parse_log_line(encode(data)) == line()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty value"),
        (b"", "empty value"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
    ],
)
def test_undecodable_values_are_malformed(value: bytes | None, reason: str) -> None:
    with pytest.raises(MalformedRecord) as exc:
        parse_log_line(value)
    assert reason in exc.value.reason


@pytest.mark.parametrize("version", [None, 0, 2, "1", True])
def test_schema_version_must_be_known(version: Any) -> None:
    data = line().model_dump(mode="json")
    if version is None:
        del data["schema_version"]
    else:
        data["schema_version"] = version
    with pytest.raises(MalformedRecord, match="schema_version"):
        parse_log_line(encode(data))


@pytest.mark.parametrize("missing", ["activation_id", "seq", "level", "ts_ms"])
def test_missing_fields_are_malformed(missing: str) -> None:
    data = line().model_dump(mode="json")
    del data[missing]
    with pytest.raises(MalformedRecord, match=missing):
        parse_log_line(encode(data))


def test_wrong_field_values_are_malformed() -> None:
    data = activation().model_dump(mode="json") | {"outcome": "MAYBE"}
    with pytest.raises(MalformedRecord, match="outcome"):
        parse_activation(encode(data))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"activation_id": ""}, "empty activation_id"),
        ({"account_id": "x" * (MAX_ID_CHARS + 1)}, "account_id longer"),
        ({"lambda_id": "a\x00b"}, "lambda_id contains"),
        ({"event_id": ""}, "empty event_id"),
        ({"attempt": 2**31}, "attempt out of range"),
        ({"version": -(2**31) - 1}, "version out of range"),
        ({"duration_ms": 2**40}, "duration_ms out of range"),
        ({"started_ms": -1}, "started_ms out of range"),
        ({"finished_ms": MAX_EPOCH_MS + 1}, "finished_ms out of range"),
    ],
)
def test_values_the_database_cannot_hold_are_malformed(fields: dict[str, Any], reason: str) -> None:
    data = activation().model_dump(mode="json") | fields
    with pytest.raises(MalformedRecord, match=reason):
        parse_activation(encode(data))


def test_log_line_ranges() -> None:
    with pytest.raises(MalformedRecord, match="seq out of range"):
        parse_log_line(encode(line().model_dump(mode="json") | {"seq": 2**31}))
    with pytest.raises(MalformedRecord, match="ts_ms out of range"):
        parse_log_line(encode(line().model_dump(mode="json") | {"ts_ms": MAX_EPOCH_MS + 1}))
    assert parse_log_line(encode(line().model_dump(mode="json") | {"ts_ms": MAX_EPOCH_MS}))


def test_malformed_reasons_are_short() -> None:
    data = {"schema_version": 1}
    with pytest.raises(MalformedRecord) as exc:
        parse_activation(encode(data))
    assert "and" in exc.value.reason and "more" in exc.value.reason
    assert len(exc.value.reason) < 400


# --- repair ------------------------------------------------------------------------------


def test_clean_text_replaces_what_postgres_refuses() -> None:
    assert clean_text("plain ✓") == "plain ✓"
    assert clean_text("a\x00b") == "a\ufffdb"
    lone = json.loads('"x\\ud800y"')
    assert clean_text(lone) == "x\ufffdy"
    clean_text(lone).encode("utf-8")


def test_clean_json_walks_keys_and_values() -> None:
    dirty = {"k\x00": ["v\x00", {"n": 1, "t": True, "z": None}], "f": 1.5}
    assert clean_json(dirty) == {"k\ufffd": ["v\ufffd", {"n": 1, "t": True, "z": None}], "f": 1.5}


# --- time --------------------------------------------------------------------------------


@pytest.mark.parametrize("ms", [0, 1, 999, 1_700_000_000_001, 1_795_296_038_081, MAX_EPOCH_MS])
def test_ms_round_trip_is_exact(ms: int) -> None:
    dt = ms_to_datetime(ms)
    assert dt.tzinfo is not None
    assert datetime_to_ms(dt) == ms


def test_ms_to_datetime_is_utc() -> None:
    assert ms_to_datetime(1_000) == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)


# --- rows --------------------------------------------------------------------------------


def _as_stored(row: tuple[Any, ...], names: tuple[str, ...]) -> dict[str, Any]:
    """What SELECT gives back for a row we inserted (jsonb decoded by the pool codec)."""
    stored = dict(zip(names, row, strict=True))
    for key in ("result", "error"):
        if key in stored and stored[key] is not None:
            stored[key] = json.loads(stored[key])
    return stored


def test_activation_row_matches_the_columns() -> None:
    row = activation_row(activation())
    assert len(row) == len(ACTIVATION_COLUMNS)
    stored = dict(zip(ACTIVATION_COLUMNS, row, strict=True))
    assert stored["source"] == "event"
    assert stored["outcome"] == "CODING_FAILURE"
    assert stored["result"] is None
    assert json.loads(stored["error"]) == {"code": "custom", "message": "boom", "details": {"line": 4}}
    assert stored["started_at"] == ms_to_datetime(1_700_000_000_123)


@pytest.mark.parametrize("result", [None, "text", 0, [1, "two"], {"nested": {"ok": True}}])
def test_activation_round_trip(result: Any) -> None:
    record = activation(result=result, error=None, outcome=InvocationOutcome.SUCCEEDED)
    item = activation_item(_as_stored(activation_row(record), ACTIVATION_COLUMNS))
    assert item == record.model_dump(mode="json")
    assert item["started_ms"] == 1_700_000_000_123 and item["finished_ms"] == 1_700_000_000_456


def test_activation_round_trip_with_error() -> None:
    record = activation()
    assert activation_item(_as_stored(activation_row(record), ACTIVATION_COLUMNS)) == record.model_dump(
        mode="json"
    )


def test_activation_row_repairs_free_text() -> None:
    record = activation(result={"out": "a\x00"}, invoker="inv\x00")
    stored = dict(zip(ACTIVATION_COLUMNS, activation_row(record), strict=True))
    assert json.loads(stored["result"]) == {"out": "a\ufffd"}
    assert stored["invoker"] == "inv\ufffd"


def test_log_round_trip() -> None:
    row = log_row(line(message="hello\x00world"))
    assert len(row) == len(LOG_COLUMNS)
    item = log_item(_as_stored(row, LOG_COLUMNS))
    assert item == line(message="hello\ufffdworld").model_dump(mode="json")
    assert item["ts_ms"] == 1_700_000_000_999
    assert item["level"] == "warn"


def test_columns_transposes_rows() -> None:
    assert columns([(1, "a"), (2, "b")], 2) == [[1, 2], ["a", "b"]]
    assert columns([], 3) == [[], [], []]


def test_first_per_key_keeps_the_first_write() -> None:
    items = [("a", 1, "first"), ("b", 1, "x"), ("a", 1, "second"), ("a", 2, "y")]
    kept = first_per_key(items, key=lambda t: (t[0], t[1]))
    assert kept == [("a", 1, "first"), ("b", 1, "x"), ("a", 2, "y")]
