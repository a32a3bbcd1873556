"""Per-account quotas at the gateway: an invocation rate limit and an async backlog cap.

Both are enforced by :class:`QuotaMiddleware`, a pure ASGI middleware in front of the
invocation routes (ours and the original platform's, sync and async, by lambda and by
event, and test invocations). The check is a dict look-up and some arithmetic: no I/O.

Rate limit (:class:`RateLimiter`), contract:

1. Each account has a token bucket holding at most ``burst`` tokens, refilled at
   ``rate_per_s``; a new account starts full. Every invocation request takes one token.
2. With no token left the request is refused with 429, ``Retry-After`` in whole
   seconds (at least 1) until a token is back, code ``rate_limited``.
3. A request that then fails authentication or authorisation (401/403) gives its token
   back: callers without the account's credentials cannot spend its quota (they can
   only hold tokens for the few milliseconds their request takes; see docs/security.md).
4. Buckets that have refilled completely are forgotten when the table grows, so
   requests naming made-up accounts cannot grow it without bound.

The bucket lives in each gateway process: with several gateways behind a load
balancer an account may reach ``rate × number of gateways`` in total. There is no
setting for the number of gateways, so the settings are per gateway process.

Async backlog (:class:`Backlog`), contract:

1. The gateway counts, per account, the async invocations it accepted (the activation
   ids of its 202 answers) and has not yet seen finish. Sync calls are not counted.
2. A request that asks for async execution (``?async=true``) while the account has
   ``cap`` or more pending is refused with 429 ``backlog_full`` and ``Retry-After: 1``.
   Requests in flight hold a reservation, so concurrent requests cannot overshoot.
   Invocation by event answers 202 by itself when several lambdas implement the event:
   those activation ids are counted but the request is not refused up front (it may
   turn out synchronous).
3. Completions come from ``fnbus.activations`` (one :class:`ActivationRecord` per
   finished attempt), read by :class:`CompletionFeed` without a consumer group from
   the end of the topic: every gateway sees every completion and ignores ids it does
   not hold. The first record of an activation frees its slot; a retry scheduled after
   a failed attempt is no longer counted.
4. Counts never go negative: an id counts once however often it is accepted, a
   completion for an unknown id is ignored, a completion that overtakes its 202 (a fast
   lambda) is remembered for a while so the later acceptance does not count it.
5. A pending id older than :data:`PENDING_STALE_S` is dropped (its record was lost),
   so a slot can leak for at most that long.
6. The counts live in memory: a restarted gateway starts from zero, and each gateway
   counts only what it accepted itself, so the cap is per gateway process too.

Why the gateway's own count and not the invokers' queues: the gateway decides at
once, without a network round trip on the hot path, and the activations topic is
already the authoritative "this attempt finished" signal that log-ingest reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from aiokafka import ConsumerRecord
from fastapi import FastAPI
from prometheus_client import Counter

from fnbus import resources
from fnbus.config import Settings
from fnbus.kafka import Consumer
from fnbus.schemas import ActivationRecord

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Scope = dict[str, Any]

# When the bucket table has this many accounts, full buckets are dropped from it.
BUCKET_PRUNE_AT = 10_000
# A pending async invocation whose completion never arrived stops counting after this.
PENDING_STALE_S = 3600.0
# How many completions of ids not (yet) held are remembered, for a 202 that comes late.
EARLY_COMPLETIONS_MAX = 10_000
# How long an early completion is remembered.
EARLY_COMPLETION_TTL_S = 60.0
# The backlog frees slots as lambdas finish; a client should simply try again soon.
BACKLOG_RETRY_AFTER_S = 1
# How long the completion feed may take to get its partitions at start.
START_TIMEOUT_S = 30.0
# 202 bodies are a few ids; a larger one is not parsed (its ids are not counted).
ACCEPTED_BODY_MAX_BYTES = 1 << 20

RATE_LIMITED = "rate_limited"
BACKLOG_FULL = "backlog_full"
# The original platform's paths answer {errorCode, errorMsg}; ours, outside handler.*
# (a client must not take them for the lambda's own failure).
LP_CODES = {RATE_LIMITED: "fnbus.quota.rate-limited", BACKLOG_FULL: "fnbus.quota.backlog-full"}
REFUSALS = Counter("fnbus_gateway_quota_refusals_total",
                   "Invocations refused with 429 over an account's quota", ["reason"])
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})  # what FastAPI reads as a true bool


def retry_after_s(wait_s: float) -> int:
    """``Retry-After`` for a wait: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait_s))


class RateLimiter:
    """Token buckets per account (see the module contract, rate limit 1–4)."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # account -> [tokens, at]

    def take(self, account: str) -> float:
        """Take a token: 0.0 when granted, else the seconds until one is back."""
        now = self._clock()
        bucket = self._buckets.get(account)
        if bucket is None:
            if len(self._buckets) >= BUCKET_PRUNE_AT:
                self._prune(now)
            self._buckets[account] = [self.burst - 1, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate_per_s)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return 0.0
        bucket[0] = tokens
        return (1 - tokens) / self.rate_per_s

    def give_back(self, account: str) -> None:
        """Return a token taken by a request that turned out not to be the account's."""
        bucket = self._buckets.get(account)
        if bucket is not None:
            bucket[0] = min(self.burst, bucket[0] + 1)

    def tokens(self, account: str) -> float:
        bucket = self._buckets.get(account)
        if bucket is None:
            return self.burst
        return min(self.burst, bucket[0] + (self._clock() - bucket[1]) * self.rate_per_s)

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        full = [a for a, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate_per_s >= self.burst]
        for account in full:
            del self._buckets[account]


class Backlog:
    """Accepted, unfinished async invocations per account (module contract, backlog 1–6)."""

    def __init__(self, cap: int, clock: Clock = time.monotonic) -> None:
        self.cap = cap
        self._clock = clock
        # account -> {activation id: accepted at}, in acceptance order (stale ones at the front)
        self._pending: dict[str, OrderedDict[str, float]] = {}
        self._reserved: dict[str, int] = {}  # account -> requests in flight
        self._early: OrderedDict[str, float] = OrderedDict()  # activation id -> finished at

    def pending(self, account: str) -> int:
        """Accepted and unfinished (after dropping stale ones), reservations not included."""
        ids = self._pending.get(account)
        if not ids:
            return 0
        self._drop_stale(account, ids)
        return len(self._pending.get(account, ()))

    def reserve(self, account: str) -> bool:
        """Hold a slot for an async request in flight; False when the cap is reached."""
        if self.pending(account) + self._reserved.get(account, 0) >= self.cap:
            return False
        self._reserved[account] = self._reserved.get(account, 0) + 1
        return True

    def release(self, account: str) -> None:
        """The request holding a reservation has its answer (call after :meth:`accepted`)."""
        left = self._reserved.get(account, 0) - 1
        if left > 0:
            self._reserved[account] = left
        else:
            self._reserved.pop(account, None)

    def accepted(self, account: str, activation_ids: Iterable[str]) -> None:
        now = self._clock()
        for activation_id in activation_ids:
            if self._early.pop(activation_id, None) is not None:
                continue  # it finished before its 202 was counted
            self._pending.setdefault(account, OrderedDict()).setdefault(activation_id, now)

    def finished(self, account: str, activation_id: str) -> None:
        ids = self._pending.get(account)
        if ids is not None and ids.pop(activation_id, None) is not None:
            if not ids:
                del self._pending[account]
            return
        # Unknown here: another gateway's, a sync call's, a repeat, or ahead of its 202.
        now = self._clock()
        self._early[activation_id] = now
        self._early.move_to_end(activation_id)
        while self._early and (len(self._early) > EARLY_COMPLETIONS_MAX or
                               now - next(iter(self._early.values())) > EARLY_COMPLETION_TTL_S):
            self._early.popitem(last=False)

    def _drop_stale(self, account: str, ids: OrderedDict[str, float]) -> None:
        cutoff = self._clock() - PENDING_STALE_S
        # Insertion order is acceptance order: the stale ones are at the front. Only they
        # are looked at (every accepted call asks; a copy of the whole backlog per call
        # made accepting quadratic in the backlog: a fifth of the gateway's CPU at 800/s).
        while ids:
            activation_id, at = next(iter(ids.items()))
            if at > cutoff:
                break
            ids.popitem(last=False)
            log.warning("async invocation never reported finished; no longer counted",
                        extra={"account": account, "activation_id": activation_id})
        if not ids:
            self._pending.pop(account, None)


class CompletionFeed:
    """Reads ``fnbus.activations`` from its end and tells the backlog what finished.

    No consumer group: every gateway needs every record, and nothing is committed.
    ``start()`` returns once every partition's position is fixed, so nothing finishing
    after the gateway starts taking requests is missed.
    """

    def __init__(self, bootstrap: str, topic: str, backlog: Backlog) -> None:
        self._consumer = Consumer(bootstrap, [topic], group_id=None,
                                  client_id="fnbus-gateway-quotas",
                                  auto_offset_reset="latest", max_poll_records=500,
                                  fetch_max_wait_ms=resources.BATCHED_FETCH_WAIT_MS,
                                  fetch_min_bytes=resources.BATCHED_FETCH_MIN_BYTES)
        self._backlog = backlog
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        raw = self._consumer.raw
        # Without a group the client assigns itself every partition once it has metadata.
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while not raw.assignment():
            if asyncio.get_running_loop().time() > deadline:
                await self._consumer.stop()
                raise TimeoutError("the activations topic has no partitions to read")
            await asyncio.sleep(0.05)
        assigned = list(raw.assignment())
        await raw.seek_to_end(*assigned)
        for tp in assigned:
            await raw.position(tp)
        self._task = asyncio.create_task(self._consumer.run(self._handle))

    async def _handle(self, record: ConsumerRecord) -> None:
        try:
            activation = ActivationRecord.model_validate_json(record.value)
        except ValueError:
            return  # not ours to judge: log-ingest reports malformed records
        self._backlog.finished(activation.account_id, activation.activation_id)

    async def check(self) -> bool:
        return self._task is not None and not self._task.done() and await self._consumer.ping()

    async def stop(self) -> None:
        self._consumer.request_stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout=5)
            self._task = None
        await self._consumer.stop()


def _target(path: str) -> tuple[str, bool] | None:
    """(account, original platform's path?) for an invocation path, else None."""
    if not (path.endswith("/invoke") or path.endswith("/test")):
        return None
    parts = path.split("/")
    # /api/v1/accounts/{a}/lambdas/{id}/invoke|test, /api/v1/accounts/{a}/events/{id}/invoke
    if len(parts) == 8 and parts[1] == "api" and parts[2] == "v1" and parts[3] == "accounts":
        kind, verb = parts[5], parts[7]
        if (kind == "lambdas" and verb in ("invoke", "test")) or \
                (kind == "events" and verb == "invoke"):
            return parts[4], False
        return None
    # /api/account/{a}/lambdas/{id}/invoke, /api/account/{a}/events/{id}/invoke
    if len(parts) == 7 and parts[1] == "api" and parts[2] == "account" and \
            parts[4] in ("lambdas", "events") and parts[6] == "invoke":
        return parts[3], True
    return None


def _wants_async(query_string: bytes) -> bool:
    if b"async" not in query_string:
        return False
    for pair in query_string.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name == b"async":
            return value.decode("latin-1").lower() in _TRUE
    return False


def _accepted_ids(body: bytes) -> list[str]:
    """Activation ids of a 202: ours ``{activation_id}``, by event ``{invocations: [...]}``."""
    try:
        data = json.loads(body)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    if isinstance(data.get("activation_id"), str):
        return [data["activation_id"]]
    invocations = data.get("invocations")
    if isinstance(invocations, list):
        return [i["activation_id"] for i in invocations
                if isinstance(i, dict) and isinstance(i.get("activation_id"), str)]
    return []


class Quotas:
    """The rate limiter, the backlog and the completion feed of one gateway process."""

    def __init__(self, settings: Settings, clock: Clock = time.monotonic) -> None:
        self.limiter = RateLimiter(settings.account_invocations_per_s,
                                   settings.account_invocations_burst, clock)
        self.backlog = Backlog(settings.account_async_backlog_max, clock)

    @contextlib.asynccontextmanager
    async def completions(self, bootstrap: str, topic: str) -> AsyncIterator[CompletionFeed]:
        feed = CompletionFeed(bootstrap, topic, self.backlog)
        await feed.start()
        try:
            yield feed
        finally:
            await feed.stop()


class QuotaMiddleware:
    """Refuse invocations over the account's quotas; count accepted async invocations."""

    def __init__(self, app: Any, quotas: Quotas) -> None:
        self.app = app
        self.limiter = quotas.limiter
        self.backlog = quotas.backlog

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        target = _target(scope["path"])
        if target is None:
            await self.app(scope, receive, send)
            return
        account, lp = target
        reserved = not lp and _wants_async(scope.get("query_string", b""))
        if reserved and not self.backlog.reserve(account):
            await _refuse(send, lp, BACKLOG_FULL, BACKLOG_RETRY_AFTER_S,
                          f"account {account} has {self.backlog.cap} async invocations "
                          f"waiting or running; try again later")
            return
        wait_s = self.limiter.take(account)
        if wait_s > 0:
            if reserved:
                self.backlog.release(account)
            await _refuse(send, lp, RATE_LIMITED, retry_after_s(wait_s),
                          f"account {account} is over {self.limiter.rate_per_s:g} invocations/s "
                          f"(burst {self.limiter.burst:g})")
            return
        status = 0
        chunks: list[bytes] = []
        size = 0
        held = reserved  # the reservation, until the answer says what became of it

        def settle(activation_ids: list[str]) -> None:
            nonlocal held
            # One step, no await between: the ids replace the reservation.
            self.backlog.accepted(account, activation_ids)
            if held:
                self.backlog.release(account)
                held = False

        async def watching_send(message: Any) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                if status in (401, 403):
                    self.limiter.give_back(account)
                if status != 202:
                    settle([])
            elif message["type"] == "http.response.body" and status == 202:
                body = message.get("body", b"")
                size += len(body)
                if size <= ACCEPTED_BODY_MAX_BYTES:
                    chunks.append(body)
                if not message.get("more_body", False):
                    # Before the client hears 202, so its next call already sees the count.
                    settle(_accepted_ids(b"".join(chunks)) if size <= ACCEPTED_BODY_MAX_BYTES
                           else [])
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            if held:  # no answer went out (the app raised) or it was cut short
                self.backlog.release(account)


async def _refuse(send: Any, lp: bool, code: str, retry_after: int, message: str) -> None:
    REFUSALS.labels(code).inc()
    if lp:
        payload: dict[str, Any] = {"errorCode": LP_CODES[code], "errorMsg": message}
    else:
        payload = {"error": {"code": code, "message": message}}
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(retry_after).encode())]})
    await send({"type": "http.response.body", "body": body})


def _document(app: FastAPI) -> None:
    """Declare 429 with ``Retry-After`` on the invocation operations (the LP body on LP paths)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        retry_after = {"Retry-After": {"description": "seconds until a retry may succeed",
                                       "schema": {"type": "integer", "minimum": 1}}}
        for path, item in schema.get("paths", {}).items():
            post = item.get("post")
            if post is None or _target(path.replace("{", "").replace("}", "")) is None:
                continue
            responses = post.setdefault("responses", {})
            if path.startswith("/api/account/"):
                responses["429"] = {"description": "over the account's quota (`errorCode` "
                                                   f"{LP_CODES[RATE_LIMITED]} or "
                                                   f"{LP_CODES[BACKLOG_FULL]})",
                                    "content": {"application/json": {"schema": {
                                        "$ref": "#/components/schemas/LpErrorOut"}}}}
            else:
                declared = responses.setdefault("429", {"description": "Too Many Requests"})
                declared["description"] = ("over the account's quota (`rate_limited` or "
                                           "`backlog_full`)")
            responses["429"]["headers"] = retry_after
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI, settings: Settings) -> Quotas:
    """Put the quota middleware in front of ``app`` and declare its 429s; start
    :meth:`Quotas.completions` in the lifespan."""
    quotas = Quotas(settings)
    app.add_middleware(QuotaMiddleware, quotas=quotas)
    _document(app)
    return quotas
