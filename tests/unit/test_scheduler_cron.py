"""Due-time calculation, the fire/downtime policy and the validation rules, with injected times."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fnbus.errors import Unprocessable
from services.scheduler import cron
from services.scheduler.clock import MINUTE_MS, SCALED_ORIGIN_MS, ScaledClock, minute_floor
from services.scheduler.store import activation_id, check_payload, payload_chars


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


NOON = ms(2025, 3, 3, 12, 0)  # a Monday


@pytest.mark.parametrize("expr", ["* * * * *", "*/5 * * * *", "0 9 * * 1-5", "0 9 * * MON-FRI",
                                  "30 2 1,15 * *", "@hourly", "  0   0 * * *  "])
def test_valid_expressions(expr: str) -> None:
    assert cron.validate(expr) == (" ".join(expr.split()) if not expr.startswith("@") else expr)


@pytest.mark.parametrize("expr", ["", "a b c d e", "61 * * * *", "* * * *", "*/0 * * * *",
                                  "* * * * * * * *", "0 0 30 2 *"])
def test_invalid_expressions_get_examples(expr: str) -> None:
    with pytest.raises(Unprocessable) as err:
        cron.validate(expr)
    assert err.value.code == "invalid_cron"
    assert "*/5 * * * *" in err.value.message and "0 9 * * 1-5" in err.value.details["examples"]


@pytest.mark.parametrize("expr", ["*/10 * * * * *", "0 */5 * * * * 2030"])
def test_seconds_field_is_refused(expr: str) -> None:
    with pytest.raises(Unprocessable) as err:
        cron.validate(expr)
    assert err.value.code == "cron_seconds_not_allowed"
    assert "once a minute" in err.value.message


def test_next_after_is_strictly_later_and_utc() -> None:
    assert cron.next_after("* * * * *", NOON) == NOON + MINUTE_MS
    assert cron.next_after("* * * * *", NOON - 1) == NOON
    assert cron.next_after("* * * * *", NOON + 59_999) == NOON + MINUTE_MS
    assert cron.at_or_after("* * * * *", NOON) == NOON
    assert cron.next_after("0 9 * * 1-5", NOON) == ms(2025, 3, 4, 9, 0)
    # Friday noon → Monday 09:00 UTC
    assert cron.next_after("0 9 * * 1-5", ms(2025, 3, 7, 12, 0)) == ms(2025, 3, 10, 9, 0)


def test_preview_lists_the_next_run_times() -> None:
    assert cron.preview("*/5 * * * *", NOON + 1, 3) == [
        NOON + 5 * MINUTE_MS, NOON + 10 * MINUTE_MS, NOON + 15 * MINUTE_MS]


def test_plan_not_due_yet() -> None:
    p = cron.plan("* * * * *", NOON + MINUTE_MS, NOON + 10)
    assert p == cron.Plan(None, NOON + MINUTE_MS, False)


def test_plan_fires_the_due_minute_and_advances() -> None:
    p = cron.plan("*/5 * * * *", NOON, NOON + 3)
    assert p == cron.Plan(NOON, NOON + 5 * MINUTE_MS, False)


def test_plan_late_within_a_minute_still_fires_that_minute() -> None:
    # A new leader that takes over 40 s into the minute fires what the old one left.
    p = cron.plan("* * * * *", NOON, NOON + 40_000)
    assert p == cron.Plan(NOON, NOON + MINUTE_MS, False)
    assert cron.plan("* * * * *", NOON, NOON + MINUTE_MS).fire_ms == NOON


def test_plan_after_downtime_skips_missed_minutes_without_a_burst() -> None:
    # Down from 12:00 to 12:30:20: only the most recent minute (12:30) fires, once.
    now = NOON + 30 * MINUTE_MS + 20_000
    p = cron.plan("* * * * *", NOON, now)
    assert p == cron.Plan(NOON + 30 * MINUTE_MS, NOON + 31 * MINUTE_MS, True)
    # Every five minutes, down for an hour, back at 13:02: nothing fires, next is 13:05.
    p = cron.plan("*/5 * * * *", NOON, NOON + 62 * MINUTE_MS)
    assert p == cron.Plan(None, NOON + 65 * MINUTE_MS, True)


def test_plan_after_downtime_for_a_daily_schedule_waits_for_tomorrow() -> None:
    p = cron.plan("0 9 * * *", ms(2025, 3, 3, 9, 0), ms(2025, 3, 3, 11, 0))
    assert p == cron.Plan(None, ms(2025, 3, 4, 9, 0), True)


def test_scaled_clock_maps_real_seconds_onto_minutes() -> None:
    clock = ScaledClock(3.0)
    before = clock.now_ms()
    boundary = minute_floor(before) + MINUTE_MS
    assert 0 <= clock.real_delay_s(boundary) <= 3.0 + 0.01
    assert clock.now_ms() > SCALED_ORIGIN_MS
    with pytest.raises(ValueError):
        ScaledClock(0)


def test_activation_ids_are_deterministic_per_schedule_and_minute() -> None:
    a = activation_id("s1", NOON)
    assert a == activation_id("s1", NOON)
    assert a != activation_id("s1", NOON + MINUTE_MS) and a != activation_id("s2", NOON)


def test_payload_limit_counts_json_characters() -> None:
    check_payload({"x": "a" * 7990})
    assert payload_chars("é") == 3  # a JSON string, counted in characters not bytes
    with pytest.raises(Unprocessable) as err:
        check_payload("a" * 8000)
    assert err.value.code == "schedule_payload_too_large"
