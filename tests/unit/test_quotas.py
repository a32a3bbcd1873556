"""The gateway's quota logic: token buckets, Retry-After, async backlog counting, the middleware."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.gateway import quotas
from services.gateway.quotas import Backlog, QuotaMiddleware, RateLimiter, retry_after_s


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_grants_the_burst_then_refuses_with_the_wait_until_a_token_is_back() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=2, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 0.25
    assert limiter.take("a") == pytest.approx(0.25)  # refused calls do not cost a token
    clock.now += 0.25
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == pytest.approx(0.5)


def test_buckets_are_per_account_and_refill_up_to_the_burst_only() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1, burst=2, clock=clock)
    limiter.take("a")
    limiter.take("a")
    assert limiter.take("a") > 0
    assert limiter.take("b") == 0.0
    clock.now += 3600
    assert limiter.tokens("a") == 2
    assert [limiter.take("a") for _ in range(3)][2] > 0


def test_a_token_given_back_is_usable_again_but_never_beyond_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1, burst=1, clock=clock)
    assert limiter.take("a") == 0.0
    limiter.give_back("a")
    assert limiter.take("a") == 0.0
    limiter.give_back("a")
    limiter.give_back("a")
    limiter.give_back("unknown")
    assert limiter.tokens("a") == 1


def test_full_buckets_are_forgotten_when_the_table_grows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quotas, "BUCKET_PRUNE_AT", 3)
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1, burst=5, clock=clock)
    for account in ("x", "y", "busy"):
        limiter.take(account)
    for _ in range(4):
        limiter.take("busy")
    clock.now += 1  # x and y are full again, busy is not
    limiter.take("new")
    assert len(limiter) == 2
    assert limiter.tokens("busy") == pytest.approx(1)


@pytest.mark.parametrize(("wait_s", "header"), [
    (0.001, 1), (0.5, 1), (1.0, 1), (1.01, 2), (2.5, 3), (59.99, 60)])
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(wait_s: float, header: int
                                                                  ) -> None:
    assert retry_after_s(wait_s) == header


def test_invalid_rates_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate_per_s=0, burst=1)
    with pytest.raises(ValueError):
        RateLimiter(rate_per_s=1, burst=0)


def test_the_backlog_counts_accepted_ids_once_and_frees_them_on_completion() -> None:
    backlog = Backlog(cap=3, clock=Clock())
    backlog.accepted("a", ["1", "2"])
    backlog.accepted("a", ["2"])  # the same id again
    assert backlog.pending("a") == 2
    backlog.finished("a", "1")
    backlog.finished("a", "1")  # a duplicate completion
    backlog.finished("a", "unknown")
    backlog.finished("b", "2")  # another account's record does not free a's slot
    assert backlog.pending("a") == 1
    backlog.finished("a", "2")
    assert backlog.pending("a") == 0
    assert backlog.pending("b") == 0


def test_reservations_count_against_the_cap_until_released() -> None:
    backlog = Backlog(cap=2, clock=Clock())
    assert backlog.reserve("a")
    assert backlog.reserve("a")
    assert not backlog.reserve("a")
    assert backlog.reserve("b")
    backlog.accepted("a", ["1"])
    backlog.release("a")
    assert not backlog.reserve("a")  # one pending plus one in flight
    backlog.release("a")
    backlog.release("a")  # one release too many stays at zero
    assert backlog.reserve("a")
    backlog.finished("a", "1")
    assert backlog.reserve("a")
    assert not backlog.reserve("a")


def test_a_completion_that_overtakes_its_acceptance_is_not_counted() -> None:
    clock = Clock()
    backlog = Backlog(cap=5, clock=clock)
    backlog.finished("a", "fast")
    backlog.accepted("a", ["fast", "slow"])
    assert backlog.pending("a") == 1
    # Remembered only for a while: much later the same id counts (a new acceptance).
    backlog.finished("a", "late")
    clock.now += quotas.EARLY_COMPLETION_TTL_S + 1
    backlog.finished("a", "other")  # trims the memory
    backlog.accepted("a", ["late"])
    assert backlog.pending("a") == 2


def test_pending_ids_whose_completion_never_came_stop_counting() -> None:
    clock = Clock()
    backlog = Backlog(cap=2, clock=clock)
    backlog.accepted("a", ["old"])
    clock.now += quotas.PENDING_STALE_S / 2
    backlog.accepted("a", ["new"])
    assert not backlog.reserve("a")
    clock.now += quotas.PENDING_STALE_S / 2 + 1
    assert backlog.pending("a") == 1
    assert backlog.reserve("a")


@pytest.mark.parametrize(("path", "target"), [
    ("/api/v1/accounts/a1/lambdas/l1/invoke", ("a1", False)),
    ("/api/v1/accounts/a1/lambdas/l1/test", ("a1", False)),
    ("/api/v1/accounts/a1/events/e1/invoke", ("a1", False)),
    ("/api/account/a1/lambdas/l1/invoke", ("a1", True)),
    ("/api/account/a1/events/e1/invoke", ("a1", True)),
    ("/api/v1/accounts/a1/events/e1/test", None),
    ("/api/v1/accounts/a1/lambdas/l1", None),
    ("/api/v1/accounts/a1/schedules/s1/invoke", None),
    ("/api/account/a1/lambdas/l1/test", None),
    ("/internal/accounts/a1/events/e1/invoke", None),
])
def test_invocation_paths_are_recognised(path: str, target: tuple[str, bool] | None) -> None:
    assert quotas._target(path) == target


@pytest.mark.parametrize(("query", "wanted"), [
    (b"", False), (b"async=true", True), (b"timeout_ms=500&async=1", True),
    (b"async=false", False), (b"asyncx=true", False), (b"async=YES", True)])
def test_async_is_read_as_fastapi_reads_a_bool(query: bytes, wanted: bool) -> None:
    assert quotas._wants_async(query) is wanted


# -- the middleware, with a stub app standing in for the routes --------------------------------
class Stub:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = json.dumps(body).encode()
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": self.body[:5], "more_body": True})
        await send({"type": "http.response.body", "body": self.body[5:]})


class FakeQuotas:
    def __init__(self, rate: float, burst: int, cap: int) -> None:
        clock = Clock()
        self.limiter = RateLimiter(rate, burst, clock)
        self.backlog = Backlog(cap, clock)


async def call(app: Any, path: str, query: bytes = b"") -> tuple[int, dict[bytes, bytes], Any]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}"}

    await app({"type": "http", "method": "POST", "path": path, "query_string": query},
              receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), json.loads(body)


async def test_the_middleware_answers_429_in_each_paths_own_shape() -> None:
    q = FakeQuotas(rate=0.5, burst=1, cap=10)
    app = QuotaMiddleware(Stub(200, {"ok": True}), q)  # type: ignore[arg-type]
    assert (await call(app, "/api/v1/accounts/a/lambdas/l/invoke"))[0] == 200
    status, headers, body = await call(app, "/api/v1/accounts/a/lambdas/l/invoke")
    assert status == 429 and headers[b"retry-after"] == b"2"
    assert body["error"]["code"] == "rate_limited"
    status, headers, body = await call(app, "/api/account/a/lambdas/l/invoke")
    assert status == 429 and headers[b"retry-after"] == b"2"
    assert body["errorCode"] == "fnbus.quota.rate-limited" and body["errorMsg"]
    assert (await call(app, "/api/v1/accounts/a/lambdas"))[0] == 200  # not an invocation


async def test_refused_credentials_give_the_token_back() -> None:
    q = FakeQuotas(rate=0.5, burst=1, cap=10)
    denied = QuotaMiddleware(Stub(401, {"error": {}}), q)  # type: ignore[arg-type]
    for _ in range(5):
        assert (await call(denied, "/api/v1/accounts/a/lambdas/l/invoke"))[0] == 401
    assert q.limiter.tokens("a") == 1


async def test_accepted_async_ids_are_counted_and_the_cap_refuses_more() -> None:
    q = FakeQuotas(rate=100, burst=100, cap=2)
    single = QuotaMiddleware(Stub(202, {"activation_id": "x1"}), q)  # type: ignore[arg-type]
    assert (await call(single, "/api/v1/accounts/a/lambdas/l/invoke", b"async=true"))[0] == 202
    several = QuotaMiddleware(Stub(202, {"event_id": "e", "invocations": [  # type: ignore[arg-type]
        {"lambda_id": "l1", "activation_id": "y1"}, {"lambda_id": "l2", "activation_id": "y2"}]}), q)
    assert (await call(several, "/api/account/a/events/e/invoke"))[0] == 202
    assert q.backlog.pending("a") == 3
    stub = Stub(202, {"activation_id": "z"})
    app = QuotaMiddleware(stub, q)  # type: ignore[arg-type]
    status, headers, body = await call(app, "/api/v1/accounts/a/lambdas/l/invoke", b"async=true")
    assert (status, headers[b"retry-after"], body["error"]["code"]) == (429, b"1", "backlog_full")
    assert stub.calls == 0
    # Sync calls are not held back by the backlog, other accounts neither.
    assert (await call(QuotaMiddleware(Stub(200, {}), q),  # type: ignore[arg-type]
                       "/api/v1/accounts/a/lambdas/l/invoke"))[0] == 200
    assert (await call(app, "/api/v1/accounts/b/lambdas/l/invoke", b"async=true"))[0] == 202
    for done in ("x1", "y1"):
        q.backlog.finished("a", done)
    assert (await call(app, "/api/v1/accounts/a/lambdas/l/invoke", b"async=true"))[0] == 202
    assert q.backlog.pending("a") == 2


async def test_a_refused_async_request_holds_no_reservation() -> None:
    q = FakeQuotas(rate=100, burst=100, cap=1)
    for status in (404, 409, 503):
        app = QuotaMiddleware(Stub(status, {"error": {}}), q)  # type: ignore[arg-type]
        assert (await call(app, "/api/v1/accounts/a/lambdas/l/invoke", b"async=true"))[0] == status
    assert q.backlog.reserve("a")


async def test_the_reservation_turns_into_the_accepted_id_in_one_step() -> None:
    q = FakeQuotas(rate=100, burst=100, cap=2)
    seen: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b'{"activation_id": "x"}'})
        seen.append(q.backlog.reserve("a"))  # one pending, no longer also one reserved
        q.backlog.release("a")

    assert (await call(QuotaMiddleware(app, q), "/api/v1/accounts/a/lambdas/l/invoke",  # type: ignore[arg-type]
                       b"async=true"))[0] == 202
    assert seen == [True]
    assert q.backlog.pending("a") == 1


async def test_an_app_that_fails_leaves_no_reservation_behind() -> None:
    q = FakeQuotas(rate=100, burst=100, cap=1)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await QuotaMiddleware(app, q)(  # type: ignore[arg-type]
            {"type": "http", "method": "POST", "path": "/api/v1/accounts/a/lambdas/l/invoke",
             "query_string": b"async=true"}, None, None)
    assert q.backlog.reserve("a")
