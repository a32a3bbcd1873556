"""W3C traceparent parsing and the hop arithmetic of fnbus.tracing (pure functions)."""

from __future__ import annotations

import pytest

from fnbus.schemas import InvocationRequest
from fnbus.tracing import (
    HOPS,
    TraceParent,
    format_traceparent,
    hops_ms,
    new_span_id,
    new_trace_id,
    parse_server_timing,
    parse_traceparent,
    server_timing,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"


def test_the_spec_example_parses() -> None:
    assert parse_traceparent(VALID) == TraceParent(TRACE, PARENT, "01")


def test_flags_are_kept_as_sent() -> None:
    parsed = parse_traceparent(f"00-{TRACE}-{PARENT}-00")
    assert parsed is not None and parsed.flags == "00"


def test_surrounding_blanks_are_ignored() -> None:
    assert parse_traceparent(f"  {VALID}\t") == TraceParent(TRACE, PARENT, "01")


@pytest.mark.parametrize("value", [
    None,
    "",
    "garbage",
    VALID[:-1],  # too short
    VALID + "-extra",  # version 00 has exactly four fields
    VALID + "0",
    f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
    f"00-{TRACE.upper()}-{PARENT}-01",  # upper-case hex is invalid
    f"00-{TRACE}-{PARENT.upper()}-01",
    f"00-{TRACE[:-1]}g-{PARENT}-01",  # not hex
    f"00-{TRACE}-{PARENT}-0x",
    f"ff-{TRACE}-{PARENT}-01",  # version ff is forbidden
    f"0g-{TRACE}-{PARENT}-01",
    f"00_{TRACE}-{PARENT}-01",  # wrong separators
    f"00-{TRACE}_{PARENT}-01",
    f"00-{TRACE}-{PARENT}_01",
    f"00-{TRACE[:-2]}-{PARENT}00-01",  # right length, wrong field widths
    f"01-{TRACE}-{PARENT}-01x",  # a later version: extra data only after a dash
])
def test_invalid_headers_are_ignored(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_is_read_by_its_first_four_fields() -> None:
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01-what-the-future-brings") == \
        TraceParent(TRACE, PARENT, "01")
    assert parse_traceparent(f"01-{TRACE}-{PARENT}-01") == TraceParent(TRACE, PARENT, "01")


def test_new_ids_are_valid_and_distinct() -> None:
    ids = {new_trace_id() for _ in range(100)}
    spans = {new_span_id() for _ in range(100)}
    assert len(ids) == 100 and len(spans) == 100
    for trace_id, span_id in zip(ids, spans, strict=True):
        header = format_traceparent(trace_id, span_id)
        assert parse_traceparent(header) == TraceParent(trace_id, span_id, "01")


def test_every_request_has_a_trace_and_copies_keep_it() -> None:
    request = InvocationRequest(account_id="a", lambda_id="l")
    assert parse_traceparent(format_traceparent(request.trace_id, new_span_id())) is not None
    assert InvocationRequest(account_id="a", lambda_id="l").trace_id != request.trace_id
    retry = request.model_copy(update={"attempt": 2})
    assert retry.trace_id == request.trace_id
    assert InvocationRequest.from_bytes(retry.to_bytes()).trace_id == request.trace_id


def test_a_request_without_a_trace_gets_a_new_one_when_read() -> None:
    # An older producer's record: no trace_id field at all.
    old = b'{"schema_version": 1, "account_id": "a", "lambda_id": "l"}'
    trace_id = InvocationRequest.from_bytes(old).trace_id
    assert len(trace_id) == 32 and trace_id != "0" * 32


MS = 1_000_000


def test_all_hops_from_all_stamps() -> None:
    hops = hops_ms(received_ns=1000 * MS, produce_ns=1001 * MS, acked_ns=1002 * MS,
                   consumed_ns=1003 * MS, runner_sent_ns=1005 * MS,
                   runner_received_ns=1008 * MS, reply_ns=1010 * MS, ready_ns=1011 * MS)
    assert list(hops) == list(HOPS)
    assert hops == {"total": 11.0, "produce": 1.0, "queue": 1.0, "dispatch": 2.0,
                    "runner": 3.0, "reply": 2.0}


def test_a_hop_without_both_ends_is_left_out() -> None:
    # An older invoker's reply: no invoker stamps, so queue, dispatch, runner and reply
    # cannot be measured.
    hops = hops_ms(received_ns=1000 * MS, produce_ns=1001 * MS, acked_ns=1002 * MS,
                   reply_ns=1010 * MS, ready_ns=1011 * MS)
    assert hops == {"total": 11.0, "produce": 1.0}


def test_a_negative_hop_is_left_out() -> None:
    # The invoker's clock behind the gateway's: "queue" would be negative.
    hops = hops_ms(acked_ns=1002 * MS, consumed_ns=1001 * MS, runner_sent_ns=1003 * MS)
    assert hops == {"dispatch": 2.0}


def test_server_timing_format() -> None:
    value = server_timing({"total": 12.3456, "produce": 0.004})
    assert value == "total;dur=12.35, produce;dur=0.00"
    assert parse_server_timing(value) == {"total": 12.35, "produce": 0.0}


def test_server_timing_parser_tolerates_other_entries() -> None:
    assert parse_server_timing('cache;desc="hit", db;dur=53, app;dur="47.2"') == \
        {"db": 53.0, "app": 47.2}
