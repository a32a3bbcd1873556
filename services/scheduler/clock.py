"""Time, behind a small Protocol so due-time logic and leadership are testable.

Two clocks matter to the scheduler:

- the *schedule clock* decides which minute is due. In production it is the
  wall clock; :class:`ScaledClock` (``FNBUS_SCHEDULER_SECONDS_PER_MINUTE``, a
  test/dev knob) maps a few real seconds onto one scheduler minute so that tests
  see many minutes go by quickly;
- the *lease clock* times the leader lease in real milliseconds; it is always
  the wall clock outside unit tests.
"""

from __future__ import annotations

import time
from typing import Protocol

MINUTE_MS = 60_000
# Fixed origin of the scaled clock: every process maps real time onto the same
# scheduler time, so two schedulers with the knob agree on which minute is due.
SCALED_ORIGIN_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


class Clock(Protocol):
    def now_ms(self) -> int:
        """Current time in epoch milliseconds (UTC), in this clock's time."""

    def real_delay_s(self, until_ms: int) -> float:
        """Real seconds until this clock reads ``until_ms`` (≤ 0 when already past)."""


class SystemClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def real_delay_s(self, until_ms: int) -> float:
        return (until_ms - time.time() * 1000) / 1000


class ScaledClock:
    """``seconds_per_minute`` real seconds make one scheduler minute."""

    def __init__(self, seconds_per_minute: float, origin_ms: int = SCALED_ORIGIN_MS) -> None:
        if seconds_per_minute <= 0:
            raise ValueError("seconds_per_minute must be positive")
        self.factor = 60.0 / seconds_per_minute
        self.origin_ms = origin_ms

    def now_ms(self) -> int:
        return int(self.origin_ms + (time.time() * 1000 - self.origin_ms) * self.factor)

    def real_delay_s(self, until_ms: int) -> float:
        return (until_ms - self.now_ms()) / self.factor / 1000


def minute_floor(ms: int) -> int:
    return ms - ms % MINUTE_MS


def clock_for(seconds_per_minute: float) -> Clock:
    return SystemClock() if seconds_per_minute == 60 else ScaledClock(seconds_per_minute)
