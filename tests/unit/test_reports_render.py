"""Email reports: settings validation, periods, the PNG chart and the message's shape."""

from __future__ import annotations

import email
import struct
import zlib
from datetime import UTC, datetime
from email import policy
from typing import Any

import pytest
from pydantic import ValidationError

from fnbus.reports import (
    CHART_CID,
    MAX_RECIPIENTS,
    Frequency,
    FunctionRow,
    Period,
    Report,
    ReportSettings,
    bar_chart,
    build_message,
    due_period,
    last_period,
    totals,
)


def item(start: str, **counts: int) -> dict[str, Any]:
    inv = {o: counts.get(o, 0) for o in ("SUCCEEDED", "CODING_FAILURE", "PLATFORM_FAILURE",
                                         "TIMEOUT", "UNKNOWN")}
    return {"bucket_start": start, "bucket_start_ms": 0, "invocations": inv,
            "total": sum(inv.values()), "cold_starts": counts.get("cold", 0),
            "retries": counts.get("retries", 0), "dead_letters": counts.get("dead", 0)}


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert (depth, color) == (8, 2)
    raw = zlib.decompress(idat)
    stride = 1 + 3 * width
    rows = [raw[i * stride + 1:(i + 1) * stride] for i in range(height)]
    assert all(raw[i * stride] == 0 for i in range(height))
    return width, height, rows


# --- settings ----------------------------------------------------------------------------


def test_settings_defaults_are_off() -> None:
    s = ReportSettings()
    assert (s.recipients, s.frequency, s.alert) == ([], Frequency.OFF, None)


@pytest.mark.parametrize("body", [
    {"recipients": ["not-an-address"]},
    {"recipients": ["a@b.example\r\nBcc: x@y.example"]},  # header injection
    {"recipients": ["ops@example.com", "OPS@example.com"]},
    {"recipients": [f"u{i}@example.com" for i in range(MAX_RECIPIENTS + 1)]},
    {"frequency": "hourly"},
    {"alert": {"failure_rate": 1.5, "window_minutes": 60}},
    {"alert": {"failure_rate": -0.1}},
    {"alert": {"failure_rate": 0.5, "window_minutes": 0}},
    {"alert": {"failure_rate": 0.5, "min_invocations": 0}},
    {"surprise": True},
])
def test_settings_refuse(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ReportSettings.model_validate(body)


def test_settings_accept_and_trim() -> None:
    s = ReportSettings.model_validate({
        "recipients": [" ops@example.com", "dev+fn@mail.example.org"], "frequency": "weekly",
        "alert": {"failure_rate": 0.25, "window_minutes": 30, "min_invocations": 5}})
    assert s.recipients == ["ops@example.com", "dev+fn@mail.example.org"]
    assert s.alert is not None and s.alert.failure_rate == 0.25


# --- periods -------------------------------------------------------------------------------


def test_daily_period_is_yesterday() -> None:
    p = last_period(Frequency.DAILY, datetime(2026, 12, 4, 0, 0, 30, tzinfo=UTC))
    assert p is not None
    assert (p.key, p.end, p.last, p.bucket) == (
        "daily:2026-12-03", datetime(2026, 12, 4, tzinfo=UTC), "24h", "hour")


def test_weekly_period_is_the_iso_week_that_ended() -> None:
    # Friday 2026-12-04: the week that ended is ISO week 48 (Mon 23 Nov – Sun 29 Nov).
    p = last_period(Frequency.WEEKLY, datetime(2026, 12, 4, 15, tzinfo=UTC))
    assert p is not None
    assert (p.key, p.end) == ("weekly:2026-W48", datetime(2026, 11, 30, tzinfo=UTC))
    assert last_period(Frequency.OFF, datetime(2026, 12, 4, tzinfo=UTC)) is None


def test_due_only_for_periods_that_ended_after_the_settings_were_saved() -> None:
    saved = datetime(2026, 12, 3, 15, tzinfo=UTC)
    # the same afternoon: yesterday's report is not sent just because reports were turned on
    assert due_period(Frequency.DAILY, saved, datetime(2026, 12, 3, 16, tzinfo=UTC)) is None
    # after midnight: the 3rd is due
    p = due_period(Frequency.DAILY, saved, datetime(2026, 12, 4, 0, 1, tzinfo=UTC))
    assert p is not None and p.key == "daily:2026-12-03"
    assert due_period(Frequency.OFF, saved, datetime(2026, 12, 5, tzinfo=UTC)) is None
    # weekly: the week that ends after the save (Mon 30 Nov – Sun 6 Dec) is due on the 7th
    assert due_period(Frequency.WEEKLY, saved, datetime(2026, 12, 6, tzinfo=UTC)) is None
    p = due_period(Frequency.WEEKLY, saved, datetime(2026, 12, 7, 0, 1, tzinfo=UTC))
    assert p is not None and p.key == "weekly:2026-W49"


# --- figures, chart and message ---------------------------------------------------------------


def test_totals_sum_every_bucket() -> None:
    t = totals([item("a", SUCCEEDED=3, CODING_FAILURE=1, cold=1),
                item("b", SUCCEEDED=1, TIMEOUT=1, PLATFORM_FAILURE=2, retries=2, dead=1)])
    assert (t.total, t.failed, t.cold_starts, t.retries, t.dead_letters) == (8, 4, 1, 2, 1)
    assert t.failure_rate == 0.5
    assert totals([]).failure_rate == 0.0


def test_bar_chart_is_a_valid_png_with_bars() -> None:
    width, height, rows = decode_png(bar_chart([(10, 0), (0, 0), (10, 5)], 60, 40))
    assert (width, height) == (60, 40)
    pixels = {bytes(r[i:i + 3]) for r in rows for i in range(0, len(r), 3)}
    assert b"\x3b\x82\xf6" in pixels and b"\xef\x44\x44" in pixels  # blue and red
    # the first bar is all blue, the third half red: count red pixels per column band
    red_left = sum(r[:3 * 20].count(b"\xef\x44\x44") for r in rows)
    red_right = sum(r[3 * 40:].count(b"\xef\x44\x44") for r in rows)
    assert red_left == 0 and red_right > 0


def test_empty_chart_is_still_a_png() -> None:
    assert decode_png(bar_chart([]))[:2] == (480, 160)


def test_message_is_text_and_html_with_the_chart_inline() -> None:
    period = Period("daily:2026-12-03", "2026-12-03", datetime(2026, 12, 4, tzinfo=UTC),
                    "24h", "hour")
    rows = [FunctionRow("id-1", "<b>greeter</b>", totals([item("a", SUCCEEDED=7,
                                                                    CODING_FAILURE=3)]))]
    report = Report("acme", period, rows, [("2026-12-03T00:00:00Z", 10, 3)])
    msg = build_message(report, "fnbus@localhost", ["ops@example.com", "dev@example.com"])
    parsed = email.message_from_bytes(bytes(msg), policy=policy.default)
    assert parsed["To"] == "ops@example.com, dev@example.com"
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "<b>greeter</b>" in text and "30.0%" in text
    html_body = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "&lt;b&gt;greeter&lt;/b&gt;" in html_body  # escaped
    assert f"cid:{CHART_CID}" in html_body
    (image,) = [p for p in parsed.walk() if p.get_content_type() == "image/png"]
    assert image["Content-ID"] == f"<{CHART_CID}>"
    decode_png(image.get_content())
