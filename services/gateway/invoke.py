"""Invocation through the gateway: sync and async, ours and the original platform's API.

Synchronous calls produce an :class:`InvocationRequest` whose ``reply_to`` is this
gateway instance's own reply topic and wait for the :class:`InvocationResult`
with the same activation id. Asynchronous calls answer 202 with the activation
id at once; the result is read later from log-ingest.

Every invocation carries a W3C trace (:mod:`fnbus.tracing`): the caller's valid
``traceparent`` or a new one. Answers carry a ``traceparent`` with the same trace
id and the gateway's span id; synchronous answers also a ``Server-Timing`` header
with the hops of the call (total, produce, queue, dispatch, runner, reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from fnbus import catalog
from fnbus.errors import ApiError, Conflict, NotFound, Unprocessable, UpstreamUnavailable
from fnbus.identity import Identity
from fnbus.kafka import Producer
from fnbus.lambda_cache import LambdaCache
from fnbus.permissions import Permission as P
from fnbus.schemas import (
    ErrorCode,
    EventSource,
    Header,
    InvocationOutcome,
    InvocationRequest,
    InvocationResult,
    LambdaChange,
)
from fnbus.service import FastJSONResponse, FastJSONRoute
from fnbus.tracing import (
    DEFAULT_FLAGS,
    TRACEPARENT,
    HopClock,
    format_traceparent,
    hops_ms,
    new_span_id,
    new_trace_id,
    parse_traceparent,
    server_timing,
)
from services.gateway.auth import require
from services.gateway.routes import ERRORS

log = logging.getLogger(__name__)

# How long a synchronous caller waits beyond the lambda's own limit (queueing,
# a cold start, an invoker restart picking the request up again).
REPLY_GRACE_S = 15.0
# How long a call waits for the broker to take its request (one that is down or
# restarting) before the caller gets 503. The record may still be delivered
# after that, so the error names the activation id.
SUBMIT_TIMEOUT_S = 10.0
LP_LAMBDA_ERROR_STATUS = 901  # the original platform's status for the lambda's own failure
FETCH_MAX_WAIT_MS = 200  # reply reader: long-poll bound; does not delay replies
#: ASGI scope key: wall clock (time.time_ns) at which the invoke route took the request.
RECEIVED_NS = "fnbus.received_ns"

# The hop clock of the synchronous call in progress. A context variable rather than a
# parameter so that ``Invocations.call(request)`` and ``submit(request, timeout_s)``
# keep the signatures that other callers and test doubles (bench/front.py) implement;
# each request runs in its own task, hence its own context.
_CLOCK: ContextVar[HopClock | None] = ContextVar("fnbus_hop_clock", default=None)


def _late_send_done(send: asyncio.Future[Any]) -> None:
    """Outcome of a request the caller was already told 503 about."""
    if send.cancelled():
        return
    exc = send.exception()
    if exc is None:
        log.warning("an invocation given up on at submit reached the broker later")
    else:
        log.warning("an invocation given up on at submit failed: %r", exc)


class ReplyWaiter:
    """Reads this gateway's reply topic and resolves the futures of waiting callers."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._pending: dict[str, asyncio.Future[InvocationResult]] = {}
        self._clocks: dict[str, HopClock] = {}  # timed calls: when their reply was read
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # A fetch returns as soon as a reply is there; the wait only bounds empty polls
        # (at 5 ms an idle gateway and broker spent ~25 % of a core on them).
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
        await consumer.start()
        tp = TopicPartition(self.topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)  # resolve "end" now, before any request is sent
        self._consumer = consumer
        self._task = asyncio.create_task(self._loop(), name="replies")

    async def _loop(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            arrived_ns = time.time_ns()  # the end of the "reply" hop
            for records in batch.values():
                for record in records:
                    try:
                        result = InvocationResult.from_bytes(record.value)
                    except ValidationError:
                        log.error("malformed reply", extra={"offset": record.offset})
                        continue
                    future = self._pending.pop(result.activation_id, None)
                    if future is not None and not future.done():
                        if self._clocks:
                            clock = self._clocks.pop(result.activation_id, None)
                            if clock is not None:
                                clock.reply_ns = arrived_ns
                        future.set_result(result)

    def expect(self, activation_id: str, clock: HopClock | None = None
               ) -> asyncio.Future[InvocationResult]:
        """A future for the reply; ``clock.reply_ns`` is set when it is read."""
        future: asyncio.Future[InvocationResult] = asyncio.get_running_loop().create_future()
        self._pending[activation_id] = future
        if clock is not None:
            self._clocks[activation_id] = clock
        return future

    def forget(self, activation_id: str) -> None:
        self._pending.pop(activation_id, None)
        if self._clocks:
            self._clocks.pop(activation_id, None)

    async def check(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        for future in self._pending.values():
            if not future.done():
                future.cancel()


class Invocations:
    """What the endpoints need: the lambda cache, the producer, the reply waiter."""

    def __init__(self, cache: LambdaCache, producer: Producer, replies: ReplyWaiter,
                 invocations_topic: str, default_timeout_ms: int) -> None:
        self.cache = cache
        self.producer = producer
        self.replies = replies
        self.topic = invocations_topic
        self.default_timeout_ms = default_timeout_ms

    async def deployed(self, account_id: str, lambda_id: str) -> LambdaChange:
        state = self.cache.get(lambda_id)
        if state is None or state.account_id != account_id:
            raise NotFound(f"lambda {lambda_id} not found", code="lambda_not_found")
        if state.deployed_version is None:
            raise Conflict(f"lambda {lambda_id} is not deployed; deploy it first "
                           f"(POST …/lambdas/{lambda_id}/deployments)", code="lambda_not_deployed")
        return state

    async def submit(self, request: InvocationRequest,
                     timeout_s: float = SUBMIT_TIMEOUT_S) -> None:
        # Shielded: a send given up on here stays with the producer (cancelling
        # it half-way would help no one); its late outcome is only logged.
        # No task per call: the producer's own delivery future is awaited under a
        # deadline (asyncio.timeout cancels only this await, never the queued record).
        clock = _CLOCK.get()
        if clock is not None:
            clock.produce_ns = time.time_ns()
        send: asyncio.Future[Any] | None = None
        try:
            async with asyncio.timeout(timeout_s):
                send = await self.producer.send_nowait(
                    self.topic, request.to_bytes(), key=request.lambda_id, bulk=False)
                await asyncio.shield(send)
        except TimeoutError:
            if send is not None:
                send.add_done_callback(_late_send_done)
            raise UpstreamUnavailable(
                f"the broker did not take the invocation within {timeout_s:.0f} s; it may "
                f"still run: GET …/activations/{request.activation_id}",
                code="broker_unavailable") from None
        except Exception as exc:  # noqa: BLE001 - any broker failure is a 503 for the caller
            raise UpstreamUnavailable(f"could not queue the invocation: {type(exc).__name__}",
                                      code="broker_unavailable") from None
        if clock is not None:
            clock.acked_ns = time.time_ns()

    async def call(self, request: InvocationRequest) -> InvocationResult:
        future = self.replies.expect(request.activation_id, _CLOCK.get())
        try:
            # One budget for queueing and waiting: the caller hears back within it.
            wait_s = (request.timeout_ms or self.default_timeout_ms) / 1000 + REPLY_GRACE_S
            started = asyncio.get_running_loop().time()
            await self.submit(request, timeout_s=min(SUBMIT_TIMEOUT_S, wait_s))
            async with asyncio.timeout_at(started + wait_s):
                return await future
        except TimeoutError:
            raise ApiError(
                f"no result within the time limit; the invocation may still finish: "
                f"GET …/activations/{request.activation_id}", code="no_result") from None
        finally:
            self.replies.forget(request.activation_id)


class InvokeBody(BaseModel):
    headers: list[Header] = Field(default_factory=list, description="[{key, value}] passed to the lambda")
    payload: Any = Field(default=None, description="the lambda's input payload")
    timestamp: int | None = Field(default=None, description="epoch ms (original platform's field)")


class TimedRoute(FastJSONRoute):
    """:class:`FastJSONRoute` that notes when it took the request (start of ``total``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def timed_handler(request: Request) -> Response:
            request.scope[RECEIVED_NS] = time.time_ns()
            return await handler(request)

        return timed_handler


router = APIRouter(route_class=TimedRoute)  # orjson answers, Rust-parsed bodies


def _invocations(request: Request) -> Invocations:
    return request.app.state.invocations


class Trace:
    """The trace of one invocation as the gateway sees it (see :mod:`fnbus.tracing`)."""

    __slots__ = ("trace_id", "span_id", "flags")

    def __init__(self, request: Request) -> None:
        # The caller's traceparent if it is valid; otherwise (or without one) a new trace.
        parent = parse_traceparent(request.headers.get(TRACEPARENT))
        self.span_id = new_span_id()  # the gateway's span: parent of the invoker's work
        if parent is None:
            self.trace_id, self.flags = new_trace_id(), DEFAULT_FLAGS
        else:
            self.trace_id, self.flags = parent.trace_id, parent.flags

    def header(self) -> str:
        return format_traceparent(self.trace_id, self.span_id, self.flags)


async def _timed_call(inv: Invocations, req: InvocationRequest, request: Request
                      ) -> tuple[InvocationResult, HopClock]:
    clock = HopClock(request.scope.get(RECEIVED_NS, 0))
    token = _CLOCK.set(clock)
    try:
        return await inv.call(req), clock
    finally:
        _CLOCK.reset(token)


R = TypeVar("R", bound=Response)


def _stamp(response: R, trace: Trace, clock: HopClock | None = None,
           result: InvocationResult | None = None) -> R:
    """Add ``traceparent`` and, for a finished sync call, ``Server-Timing`` to ``response``."""
    response.raw_headers.append((b"traceparent", trace.header().encode()))
    if clock is not None and result is not None:
        hops = hops_ms(received_ns=clock.received_ns, produce_ns=clock.produce_ns,
                       acked_ns=clock.acked_ns, consumed_ns=result.consumed_ns,
                       runner_sent_ns=result.runner_sent_ns,
                       runner_received_ns=result.runner_received_ns, reply_ns=clock.reply_ns,
                       ready_ns=time.time_ns())
        if hops:
            response.raw_headers.append((b"server-timing", server_timing(hops).encode()))
    return response


def _error_status(result: InvocationResult) -> int:
    if result.outcome is InvocationOutcome.TIMEOUT:
        return 504
    if result.error and result.error.code == ErrorCode.NOT_DEPLOYED:
        return 409
    if result.outcome is InvocationOutcome.CODING_FAILURE:
        return 502
    return 503


def _ours(result: InvocationResult) -> JSONResponse:
    body = {"activation_id": result.activation_id, "outcome": result.outcome.value,
            "duration_ms": result.duration_ms, "cold_start": result.cold_start,
            "logs": [e.model_dump() for e in result.logs], "logs_truncated": result.logs_truncated}
    if result.outcome is InvocationOutcome.SUCCEEDED:
        return FastJSONResponse({**body, "result": result.result})
    error = result.error
    return FastJSONResponse({**body, "error": {"code": error.code if error else "unknown",
                                               "message": error.message if error else "failed",
                                               "details": error.details if error else None}},
                            status_code=_error_status(result),
                            headers={"X-Activation-Id": result.activation_id})


def _new_request(identity: Identity, lambda_id: str, body: InvokeBody, state: LambdaChange,
                 source: EventSource, reply_to: str | None, timeout_ms: int | None = None,
                 trace: Trace | None = None) -> InvocationRequest:
    traced: dict[str, Any] = {"trace_id": trace.trace_id, "parent_id": trace.span_id} \
        if trace is not None else {}
    return InvocationRequest(account_id=identity.account_id, lambda_id=lambda_id,
                             version=state.deployed_version, source=source, headers=body.headers,
                             payload=body.payload, reply_to=reply_to, timeout_ms=timeout_ms,
                             **traced)


@router.post("/api/v1/accounts/{account_id}/lambdas/{lambda_id}/invoke", responses=ERRORS,
             description=f"Requires permission `{P.LAMBDA_INVOKE.value}`. Synchronous unless "
                         "`async=true`. Errors: 502 the function failed, 504 it timed out, "
                         "409 not deployed.",
             openapi_extra={"x-permission": P.LAMBDA_INVOKE.value})
async def invoke(account_id: str, lambda_id: str, body: InvokeBody, request: Request,
                 who: Identity = Depends(require(P.LAMBDA_INVOKE)),
                 run_async: bool = Query(False, alias="async"),
                 timeout_ms: int | None = Query(None, ge=100, description=(
                     "a lower execution limit than the platform's (30 s by default)"))
                 ) -> JSONResponse:
    inv = _invocations(request)
    if timeout_ms is not None and timeout_ms > inv.default_timeout_ms:
        raise Unprocessable(f"timeout_ms may not exceed the platform limit of "
                            f"{inv.default_timeout_ms} ms", code="invalid_timeout")
    state = await inv.deployed(account_id, lambda_id)
    trace = Trace(request)
    if run_async:
        req = _new_request(who, lambda_id, body, state, EventSource.HTTP, None, timeout_ms, trace)
        await inv.submit(req)
        return _stamp(FastJSONResponse(
            {"activation_id": req.activation_id}, status_code=202,
            headers={"Location": f"/api/v1/accounts/{account_id}/activations/"
                                 f"{req.activation_id}"}), trace)
    req = _new_request(who, lambda_id, body, state, EventSource.HTTP, request.app.state.reply_topic,
                       timeout_ms, trace)
    result, clock = await _timed_call(inv, req, request)
    return _stamp(_ours(result), trace, clock, result)


class TestBody(BaseModel):
    headers: list[Header] | None = None
    payload: Any = None


@router.post("/api/v1/accounts/{account_id}/lambdas/{lambda_id}/test", responses=ERRORS,
             description=f"Requires permission `{P.LAMBDA_INVOKE.value}`. Test invocation of the "
                         "deployed lambda; without a payload, its event's sample payload is sent.",
             openapi_extra={"x-permission": P.LAMBDA_INVOKE.value})
async def test_invoke(account_id: str, lambda_id: str, request: Request,
                      body: TestBody | None = None,
                      who: Identity = Depends(require(P.LAMBDA_INVOKE))) -> JSONResponse:
    inv = _invocations(request)
    state = await inv.deployed(account_id, lambda_id)
    sample: dict[str, Any] = {}
    if state.event_id:
        template = catalog.TEMPLATES.get(state.event_id)
        sample = template.sample_payload if template else {}
    payload = body.payload if body and body.payload is not None else sample.get("payload", sample)
    invoke_body = InvokeBody(headers=(body.headers if body and body.headers else []), payload=payload)
    trace = Trace(request)
    req = _new_request(who, lambda_id, invoke_body, state, EventSource.TEST,
                       request.app.state.reply_topic, trace=trace)
    result, clock = await _timed_call(inv, req, request)
    return _stamp(_ours(result), trace, clock, result)


# -- the original platform's external invocation API ---------------------------------------
def _lp_error(result: InvocationResult) -> JSONResponse:
    error = result.error
    code = error.code if error else ErrorCode.PLATFORM
    message = error.message if error else "failed"
    if ErrorCode.is_lambda_error(code):
        status = LP_LAMBDA_ERROR_STATUS
    elif code == ErrorCode.NOT_DEPLOYED:
        status = 404
    else:
        status = 500
    return FastJSONResponse({"errorCode": code, "errorMsg": message}, status_code=status)


@router.post("/api/account/{accountId}/lambdas/{lambda_id}/invoke", responses=ERRORS,
             tags=["compatibility"],
             description=f"Requires permission `{P.LAMBDA_INVOKE.value}`. The original platform's "
                         "external invocation; errors of the lambda answer 901 with `errorCode`.",
             openapi_extra={"x-permission": P.LAMBDA_INVOKE.value})
async def lp_invoke(accountId: str, lambda_id: str, body: InvokeBody, request: Request,  # noqa: N803
                    who: Identity = Depends(require(P.LAMBDA_INVOKE)),
                    v: str = "1", skillId: str = "", externalSystem: str = "") -> JSONResponse:  # noqa: N803
    inv = _invocations(request)
    try:
        state = await inv.deployed(accountId, lambda_id)
    except (NotFound, Conflict) as exc:
        return FastJSONResponse({"errorCode": ErrorCode.NOT_DEPLOYED, "errorMsg": exc.message},
                                status_code=404)
    trace = Trace(request)
    req = _new_request(who, lambda_id, body, state, EventSource.HTTP, request.app.state.reply_topic,
                       trace=trace)
    result, clock = await _timed_call(inv, req, request)
    if result.outcome is InvocationOutcome.SUCCEEDED:
        response: JSONResponse = FastJSONResponse(result.result,
                                                  headers={"X-Activation-Id": result.activation_id})
    else:
        response = _lp_error(result)
    return _stamp(response, trace, clock, result)


# -- reading results back -----------------------------------------------------------------
async def _log_ingest(request: Request, path: str, params: dict[str, Any]) -> Any:
    client: httpx.AsyncClient = request.app.state.log_ingest
    try:
        r = await client.get(path, params=params)
    except httpx.HTTPError:
        raise UpstreamUnavailable("log-ingest unavailable", code="log_ingest_unavailable") from None
    if r.status_code == 404:
        raise NotFound("activation not found (results appear a moment after they finish)",
                       code="activation_not_found")
    if r.status_code >= 400:
        raise UpstreamUnavailable(f"log-ingest answered {r.status_code}")
    return r.json()


@router.get("/api/v1/accounts/{account_id}/activations/{activation_id}", responses=ERRORS,
            description=f"Requires permission `{P.LOGS_READ.value}`. The record of one "
                        "invocation: outcome, result or error, timings.",
            openapi_extra={"x-permission": P.LOGS_READ.value})
async def get_activation(account_id: str, activation_id: str, request: Request,
                         who: Identity = Depends(require(P.LOGS_READ))) -> Any:
    return await _log_ingest(request, f"/internal/activations/{activation_id}",
                             {"account_id": account_id})


@router.get("/api/v1/accounts/{account_id}/activations/{activation_id}/logs", responses=ERRORS,
            description=f"Requires permission `{P.LOGS_READ.value}`. Log lines of one invocation.",
            openapi_extra={"x-permission": P.LOGS_READ.value})
async def get_activation_logs(account_id: str, activation_id: str, request: Request,
                              who: Identity = Depends(require(P.LOGS_READ))) -> Any:
    return await _log_ingest(request, "/internal/logs",
                             {"account_id": account_id, "activation_id": activation_id})
