"""Retry policies per event source, as data, and the decision they make after a failure.

A policy says how often a failed *asynchronous* invocation runs again, how long
it waits in between, which failures deserve another try, how old an event may
get, and what happens when it gives up: dead-letter (kept for inspection and
replay) or drop (one log line).

Contract of :func:`decide`:
1. Success never retries; a synchronous request (``reply_to`` set) never retries,
   because its caller already has the answer.
2. A failure whose kind is not in ``retry_on`` ends at once.
3. A failure with attempts left, and an event younger than ``max_event_age_ms``,
   retries after :meth:`RetryPolicy.delay_ms` for that attempt.
4. Anything else ends; the policy's ``on_exhausted`` says dead-letter or drop.

Defaults per source are in :data:`DEFAULT_POLICIES` (and in the README's table);
an account may override any of them within :data:`BOUNDS`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fnbus.schemas import ErrorCode, EventSource, InvocationError, InvocationOutcome
from fnbus.topics import RETRY_DELAYS_S


class FailureKind(str, Enum):
    FUNCTION_ERROR = "function_error"  # the lambda's own error: callback error, throw, crash
    TIMEOUT = "timeout"  # hard-killed at the execution limit
    PLATFORM_FAILURE = "platform_failure"  # ours: container, runner, broker


class Backoff(str, Enum):
    FIXED = "fixed"  # every wait is initial_delay_ms
    EXPONENTIAL = "exponential"  # initial, 2×, 4×, … capped at max_delay_ms, with jitter


class OnExhausted(str, Enum):
    DEAD_LETTER = "dead_letter"  # to the dead-letter topic: list, inspect, replay, purge
    DROP = "drop"  # a log line, nothing kept


@dataclass(frozen=True)
class Bounds:
    """What an account's override may ask for."""

    max_attempts: int = 10
    min_delay_ms: int = 100
    max_delay_ms: int = 300_000  # the longest retry topic
    max_event_age_ms: int = 24 * 3600 * 1000


BOUNDS = Bounds()


class RetryPolicy(BaseModel):
    """One event source's retry policy. Every field has a unit in its name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=1, ge=1, le=BOUNDS.max_attempts,
                              description="runs in total, the first included; 1 = never retry")
    backoff: Backoff = Field(default=Backoff.EXPONENTIAL, description="fixed or exponential")
    initial_delay_ms: int = Field(default=1000, ge=BOUNDS.min_delay_ms, le=BOUNDS.max_delay_ms,
                                  description="wait before the first retry")
    max_delay_ms: int = Field(default=60_000, ge=BOUNDS.min_delay_ms, le=BOUNDS.max_delay_ms,
                              description="cap of an exponential wait")
    jitter: float = Field(default=0.2, ge=0.0, le=1.0,
                          description="exponential only: up to this fraction is taken off at random")
    retry_on: list[FailureKind] = Field(
        default_factory=lambda: [FailureKind.TIMEOUT, FailureKind.PLATFORM_FAILURE],
        description="which failures run again")
    max_event_age_ms: int = Field(default=3_600_000, ge=1000, le=BOUNDS.max_event_age_ms,
                                  description="no retry once the event is older than this")
    on_exhausted: OnExhausted = Field(OnExhausted.DEAD_LETTER,
                                      description="dead_letter or drop (with a log line)")

    @model_validator(mode="after")
    def _delays_ordered(self) -> RetryPolicy:
        if self.max_delay_ms < self.initial_delay_ms:
            raise ValueError("max_delay_ms must be at least initial_delay_ms")
        return self

    def delay_ms(self, failed_attempt: int, rng: Callable[[], float] = random.random) -> int:
        """Wait before running attempt ``failed_attempt + 1``.

        Exponential: ``initial × 2^(n-1)`` capped at ``max_delay_ms``, minus up to
        ``jitter`` of it at random, so that many failures at once do not retry in
        one burst. Never below the initial delay.
        """
        if self.backoff is Backoff.FIXED:
            return self.initial_delay_ms
        base = min(self.max_delay_ms, self.initial_delay_ms * 2 ** max(0, failed_attempt - 1))
        jittered = int(base * (1.0 - self.jitter * rng()))
        return max(self.initial_delay_ms, jittered)

    def merged(self, changes: dict[str, Any]) -> RetryPolicy:
        """This policy with ``changes`` applied, validated again (ValueError outside bounds)."""
        return RetryPolicy.model_validate({**self.model_dump(), **changes})


class RetryPolicyUpdate(BaseModel):
    """An account's override: the fields to change; the rest stay as they are."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int | None = Field(default=None, ge=1, le=BOUNDS.max_attempts)
    backoff: Backoff | None = None
    initial_delay_ms: int | None = Field(default=None, ge=BOUNDS.min_delay_ms, le=BOUNDS.max_delay_ms)
    max_delay_ms: int | None = Field(default=None, ge=BOUNDS.min_delay_ms, le=BOUNDS.max_delay_ms)
    jitter: float | None = Field(default=None, ge=0.0, le=1.0)
    retry_on: list[FailureKind] | None = None
    max_event_age_ms: int | None = Field(default=None, ge=1000, le=BOUNDS.max_event_age_ms)
    on_exhausted: OnExhausted | None = None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


_ALL = [FailureKind.FUNCTION_ERROR, FailureKind.TIMEOUT, FailureKind.PLATFORM_FAILURE]

DEFAULT_POLICIES: dict[EventSource, RetryPolicy] = {
    # External asynchronous invocations: the caller is gone, so we try harder.
    EventSource.HTTP: RetryPolicy(
        max_attempts=3, backoff=Backoff.EXPONENTIAL, initial_delay_ms=1000, max_delay_ms=60_000,
        retry_on=_ALL, max_event_age_ms=3_600_000, on_exhausted=OnExhausted.DEAD_LETTER),
    # Platform (messaging) events are real-time: a repeat later would act on a
    # conversation that moved on, so the invocation is not repeated; a failure is
    # dead-lettered, where it can be inspected and replayed by hand.
    EventSource.EVENT: RetryPolicy(
        max_attempts=1, backoff=Backoff.FIXED, initial_delay_ms=1000, max_delay_ms=1000,
        retry_on=[], max_event_age_ms=60_000, on_exhausted=OnExhausted.DEAD_LETTER),
    # The next tick of the schedule is the retry.
    EventSource.SCHEDULER: RetryPolicy(
        max_attempts=1, backoff=Backoff.FIXED, initial_delay_ms=1000, max_delay_ms=1000,
        retry_on=[], max_event_age_ms=60_000, on_exhausted=OnExhausted.DROP),
    # A developer is watching the result.
    EventSource.TEST: RetryPolicy(
        max_attempts=1, backoff=Backoff.FIXED, initial_delay_ms=1000, max_delay_ms=1000,
        retry_on=[], max_event_age_ms=60_000, on_exhausted=OnExhausted.DROP),
}


def default_policy(source: EventSource) -> RetryPolicy:
    return DEFAULT_POLICIES[source]


def failure_kind(outcome: InvocationOutcome, error: InvocationError | None) -> FailureKind | None:
    """What kind of failure an outcome is; None for success."""
    if outcome is InvocationOutcome.SUCCEEDED:
        return None
    if outcome is InvocationOutcome.TIMEOUT:
        return FailureKind.TIMEOUT
    if outcome is InvocationOutcome.CODING_FAILURE:
        return FailureKind.FUNCTION_ERROR
    return FailureKind.PLATFORM_FAILURE


class Action(str, Enum):
    DONE = "done"  # succeeded, or a synchronous caller has the answer
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    DROP = "drop"


@dataclass(frozen=True)
class Decision:
    action: Action
    delay_ms: int = 0  # RETRY: wait before the next attempt
    reason: str = ""  # DEAD_LETTER/DROP: why it ended


def decide(policy: RetryPolicy, *, attempt: int, outcome: InvocationOutcome,
           error: InvocationError | None, synchronous: bool, created_ms: int, now_ms: int,
           rng: Callable[[], float] = random.random) -> Decision:
    """What to do after attempt ``attempt`` ended with ``outcome`` (see the module contract)."""
    kind = failure_kind(outcome, error)
    if kind is None or synchronous:
        return Decision(Action.DONE)
    end = Action.DEAD_LETTER if policy.on_exhausted is OnExhausted.DEAD_LETTER else Action.DROP
    if error is not None and error.code == ErrorCode.NOT_DEPLOYED:
        return Decision(end, reason="lambda not deployed")
    if kind not in policy.retry_on:
        return Decision(end, reason=f"{kind.value} is not retried for this source")
    if attempt >= policy.max_attempts:
        return Decision(end, reason=f"{kind.value} after {attempt} attempt(s); none left")
    delay = policy.delay_ms(attempt, rng)
    age_at_retry = now_ms + delay - created_ms
    if age_at_retry > policy.max_event_age_ms:
        return Decision(end, reason=f"{kind.value}; the event would be {age_at_retry} ms old at the "
                                    f"next attempt (max_event_age_ms {policy.max_event_age_ms})")
    return Decision(Action.RETRY, delay_ms=delay)


def delay_topic_s(delay_ms: int) -> int:
    """The retry topic for a wait: the shortest delay topic not shorter than it (or the longest).

    The relay honours each request's own ``not_before_ms``, so a topic's delay
    only bounds how long one record can hold up the ones behind it.
    """
    for delay_s in RETRY_DELAYS_S:
        if delay_s * 1000 >= delay_ms:
            return delay_s
    return RETRY_DELAYS_S[-1]
