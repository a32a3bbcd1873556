"""Retry policies: defaults, bounds, backoff and the decision after an attempt."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fnbus.retry import (
    DEFAULT_POLICIES,
    Action,
    Backoff,
    FailureKind,
    OnExhausted,
    RetryPolicy,
    RetryPolicyUpdate,
    decide,
    delay_topic_s,
)
from fnbus.schemas import ErrorCode, EventSource, InvocationError, InvocationOutcome

FAIL = InvocationError(code=ErrorCode.CUSTOM_FAILURE, message="bad")
PLATFORM = InvocationError(code=ErrorCode.PLATFORM, message="docker")


def test_every_source_has_a_default_and_the_documented_shape() -> None:
    assert set(DEFAULT_POLICIES) == set(EventSource)
    assert DEFAULT_POLICIES[EventSource.HTTP].max_attempts == 3
    assert set(DEFAULT_POLICIES[EventSource.HTTP].retry_on) == set(FailureKind)
    assert DEFAULT_POLICIES[EventSource.EVENT].max_attempts == 1  # messaging: never repeated
    assert DEFAULT_POLICIES[EventSource.EVENT].on_exhausted is OnExhausted.DEAD_LETTER
    assert DEFAULT_POLICIES[EventSource.SCHEDULER].max_attempts == 1
    assert DEFAULT_POLICIES[EventSource.SCHEDULER].on_exhausted is OnExhausted.DROP


def test_exponential_backoff_doubles_caps_and_jitters_downwards() -> None:
    policy = RetryPolicy(max_attempts=10, initial_delay_ms=1000, max_delay_ms=5000, jitter=0.5)
    no_jitter = [policy.delay_ms(n, rng=lambda: 0.0) for n in range(1, 6)]
    assert no_jitter == [1000, 2000, 4000, 5000, 5000]
    full = [policy.delay_ms(n, rng=lambda: 1.0) for n in range(1, 6)]
    assert full == [1000, 1000, 2000, 2500, 2500]  # never below the initial delay


def test_fixed_backoff_ignores_jitter() -> None:
    policy = RetryPolicy(backoff=Backoff.FIXED, initial_delay_ms=300, max_delay_ms=300, jitter=1)
    assert {policy.delay_ms(n, rng=lambda: 0.7) for n in range(1, 5)} == {300}


@pytest.mark.parametrize("changes", [
    {"max_attempts": 11}, {"max_attempts": 0}, {"initial_delay_ms": 50},
    {"max_delay_ms": 300_001}, {"max_event_age_ms": 25 * 3600 * 1000}, {"jitter": 1.5},
    {"initial_delay_ms": 5000, "max_delay_ms": 1000}, {"unknown": 1},
])
def test_overrides_outside_bounds_are_refused(changes: dict) -> None:
    with pytest.raises(ValidationError):
        DEFAULT_POLICIES[EventSource.HTTP].merged(changes)


def test_update_keeps_unset_fields() -> None:
    update = RetryPolicyUpdate(max_attempts=5)
    merged = DEFAULT_POLICIES[EventSource.HTTP].merged(update.changes())
    assert merged.max_attempts == 5 and merged.initial_delay_ms == 1000


def _decide(policy: RetryPolicy, attempt: int = 1, outcome: InvocationOutcome =
            InvocationOutcome.CODING_FAILURE, error: InvocationError | None = FAIL,
            synchronous: bool = False, created_ms: int = 0, now_ms: int = 1000):
    return decide(policy, attempt=attempt, outcome=outcome, error=error, synchronous=synchronous,
                  created_ms=created_ms, now_ms=now_ms, rng=lambda: 0.0)


def test_decisions() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay_ms=200, max_delay_ms=1000,
                         retry_on=[FailureKind.FUNCTION_ERROR], max_event_age_ms=10_000)
    assert _decide(policy, outcome=InvocationOutcome.SUCCEEDED, error=None).action is Action.DONE
    assert _decide(policy, synchronous=True).action is Action.DONE
    first = _decide(policy, attempt=1)
    assert first.action is Action.RETRY and first.delay_ms == 200
    assert _decide(policy, attempt=2).delay_ms == 400
    last = _decide(policy, attempt=3)
    assert last.action is Action.DEAD_LETTER and "none left" in last.reason
    # Not a retried kind: ends at once.
    timeout = _decide(policy, outcome=InvocationOutcome.TIMEOUT,
                      error=InvocationError(code=ErrorCode.TIMEOUT, message="t"))
    assert timeout.action is Action.DEAD_LETTER and "not retried" in timeout.reason
    # Too old by the time of the next attempt.
    old = _decide(policy, created_ms=0, now_ms=9_900)
    assert old.action is Action.DEAD_LETTER and "old" in old.reason
    # Undeployed lambdas are not retried.
    gone = _decide(policy, outcome=InvocationOutcome.PLATFORM_FAILURE,
                   error=InvocationError(code=ErrorCode.NOT_DEPLOYED, message="gone"))
    assert gone.action is Action.DEAD_LETTER and "not deployed" in gone.reason
    drop = policy.merged({"on_exhausted": "drop"})
    assert _decide(drop, attempt=3).action is Action.DROP
    assert _decide(RetryPolicy(max_attempts=2, retry_on=[FailureKind.PLATFORM_FAILURE]),
                   outcome=InvocationOutcome.PLATFORM_FAILURE, error=PLATFORM).action is Action.RETRY


def test_delay_topics() -> None:
    assert delay_topic_s(200) == 1
    assert delay_topic_s(1000) == 1
    assert delay_topic_s(1001) == 10
    assert delay_topic_s(60_000) == 60
    assert delay_topic_s(299_000) == 300
    assert delay_topic_s(10_000_000) == 300
