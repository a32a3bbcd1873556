"""Public event endpoints: invoke by event, isImplemented, dead letters, retry policies.

Invocation by event routes like a platform event (the registry picks the
account's deployed lambdas bound to the event, with skill filter and function
limit). When exactly one lambda implements the event the call is synchronous
and answers with its result, as the original platform's client expects;
when several do, it answers 202 with one activation id per lambda (those run
asynchronously under the event source's retry policy). ``?async=true`` makes
even a single target asynchronous.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from fnbus.errors import ApiError, NotFound, Unprocessable
from fnbus.identity import Identity
from fnbus.permissions import Permission as P
from fnbus.retry import RetryPolicyUpdate
from fnbus.schemas import ErrorCode, Header, InvocationOutcome, InvocationResult, new_id
from services.gateway.auth import require
from services.gateway.internal_client import InternalClient
from services.gateway.invoke import REPLY_GRACE_S, Invocations, Trace, _lp_error, _ours, _stamp
from services.gateway.management import _forward
from services.gateway.routes import operation

router = APIRouter()
ACC = "/api/v1/accounts/{account_id}"
LP_ACC = "/api/account/{accountId}"


op = functools.partial(operation, router)


class EventInvokeBody(BaseModel):
    headers: list[Header] = Field(default_factory=list, description="[{key, value}] passed to the lambda")
    payload: Any = Field(default=None, description="the lambda's input payload")
    timestamp: int | None = Field(default=None, description="epoch ms (original platform's field)")
    skill_id: str | None = Field(default=None, description="the skill, for events with skill filters")
    partition_key: str | None = Field(
        default=None, description="ordering key (e.g. a conversation id): same key, same order")


async def _invoke_by_event(request: Request, who: Identity, account_id: str, event_id: str,
                           body: EventInvokeBody, trace: Trace, *, sync: bool,
                           timeout_ms: int | None
                           ) -> tuple[dict[str, Any], InvocationResult | None]:
    """Ask the registry to route; wait for the result when it ran one lambda synchronously."""
    inv: Invocations = request.app.state.invocations
    registry: InternalClient = request.app.state.registry
    activation_id = new_id() if sync else None
    # Expect the reply before the request exists: a warm lambda can answer within milliseconds.
    future = inv.replies.expect(activation_id) if activation_id else None
    try:
        routed = await registry.call(
            "POST", f"/internal/accounts/{account_id}/events/{event_id}/invoke", identity=who,
            json={"headers": [h.model_dump() for h in body.headers], "payload": body.payload,
                  "skill_id": body.skill_id, "partition_key": body.partition_key,
                  "reply_to": request.app.state.reply_topic if sync else None,
                  "activation_id": activation_id, "timeout_ms": timeout_ms,
                  "trace_id": trace.trace_id})
        if routed.get("mode") != "sync" or future is None:
            return routed, None
        wait_s = (timeout_ms or inv.default_timeout_ms) / 1000 + REPLY_GRACE_S
        try:
            return routed, await asyncio.wait_for(future, timeout=wait_s)
        except TimeoutError:
            raise ApiError(f"no result within the time limit; the invocation may still finish: "
                           f"GET …/activations/{activation_id}", code="no_result") from None
    finally:
        if activation_id:
            inv.replies.forget(activation_id)


def _accepted(routed: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"event_id": routed["event_id"], "invocations": routed["invocations"]},
                        status_code=202)


def _check_timeout(request: Request, timeout_ms: int | None) -> None:
    limit = request.app.state.invocations.default_timeout_ms
    if timeout_ms is not None and timeout_ms > limit:
        raise Unprocessable(f"timeout_ms may not exceed the platform limit of {limit} ms",
                            code="invalid_timeout")


# -- invocation by event -----------------------------------------------------------------------
@op("POST", ACC + "/events/{event_id}/invoke", P.LAMBDA_INVOKE,
    summary="Invoke the lambdas that implement an event",
    more="Synchronous (200 with the result, errors as for lambda invocation) when exactly one "
         "deployed lambda implements the event; otherwise (or with `async=true`) 202 with one "
         "activation id per lambda. 404 `not_implemented` when none does.")
async def invoke_event(account_id: str, event_id: str, body: EventInvokeBody, request: Request,
                       who: Identity = Depends(require(P.LAMBDA_INVOKE)),
                       run_async: bool = Query(False, alias="async"),
                       timeout_ms: int | None = Query(None, ge=100)) -> JSONResponse:
    _check_timeout(request, timeout_ms)
    trace = Trace(request)
    routed, result = await _invoke_by_event(request, who, account_id, event_id, body, trace,
                                            sync=not run_async, timeout_ms=timeout_ms)
    if result is None:
        return _stamp(_accepted(routed), trace)
    return _stamp(_ours(result), trace)


@op("POST", LP_ACC + "/events/{eventId}/invoke", P.LAMBDA_INVOKE, tags=["compatibility"],
    summary="The original platform's invocation by event",
    more="One implementing lambda: 200 with its result as the body, 901 with `errorCode` when "
         "it failed. Several: 202 with their activation ids. None: 404.")
async def lp_invoke_event(accountId: str, eventId: str, body: EventInvokeBody,  # noqa: N803
                          request: Request, who: Identity = Depends(require(P.LAMBDA_INVOKE)),
                          v: str = "1", skillId: str = "",  # noqa: N803
                          externalSystem: str = "") -> JSONResponse:  # noqa: N803
    if skillId and not body.skill_id:
        body = body.model_copy(update={"skill_id": skillId})
    trace = Trace(request)
    try:
        routed, result = await _invoke_by_event(request, who, accountId, eventId, body, trace,
                                                sync=True, timeout_ms=None)
    except NotFound as exc:
        return JSONResponse({"errorCode": ErrorCode.NOT_DEPLOYED, "errorMsg": exc.message},
                            status_code=404)
    if result is None:
        return _stamp(_accepted(routed), trace)
    if result.outcome is InvocationOutcome.SUCCEEDED:
        return _stamp(JSONResponse(result.result, headers={"X-Activation-Id": result.activation_id}),
                      trace)
    return _stamp(_lp_error(result), trace)


@op("GET", ACC + "/events/{event_id}/isImplemented", P.LAMBDA_READ,
    summary="Whether a deployed lambda of this account implements the event",
    more='Answers `{"implemented": true|false}`; 404 for an event outside the catalogue.')
async def is_implemented(account_id: str, event_id: str, request: Request,
                         who: Identity = Depends(require(P.LAMBDA_READ))) -> Response:
    return await _forward(request, who)


@op("GET", LP_ACC + "/events/{eventId}/isImplemented", P.LAMBDA_READ, tags=["compatibility"],
    summary="The original platform's isImplemented",
    more='Answers `{"implemented": true|false}` (false for an unknown event).')
async def lp_is_implemented(accountId: str, eventId: str, request: Request,  # noqa: N803
                            who: Identity = Depends(require(P.LAMBDA_READ)),
                            v: str = "1") -> JSONResponse:
    registry: InternalClient = request.app.state.registry
    try:
        body = await registry.call(
            "GET", f"/internal/accounts/{accountId}/events/{eventId}/isImplemented", identity=who)
    except NotFound:
        body = {"implemented": False}
    return JSONResponse({"implemented": bool(body["implemented"])})


# -- dead letters ---------------------------------------------------------------------------------
@op("GET", ACC + "/dead-letters", P.LOGS_READ, summary="Dead letters (newest first)",
    more="`lambda_id=` filters, `limit=` caps (at most 500).")
async def list_dead_letters(account_id: str, request: Request,
                            who: Identity = Depends(require(P.LOGS_READ)),
                            lambda_id: str | None = None,
                            limit: int = Query(100, ge=1, le=500)) -> Response:
    params: dict[str, Any] = {"limit": limit}
    if lambda_id:
        params["lambda_id"] = lambda_id
    return await _forward(request, who, params=params)


@op("GET", ACC + "/dead-letters/{dead_letter_id}", P.LOGS_READ,
    summary="One dead letter: the request, the reason and the last error")
async def get_dead_letter(account_id: str, dead_letter_id: str, request: Request,
                          who: Identity = Depends(require(P.LOGS_READ))) -> Response:
    return await _forward(request, who)


@op("POST", ACC + "/dead-letters/{dead_letter_id}/replay", P.LAMBDA_INVOKE,
    summary="Replay one dead letter as a fresh asynchronous invocation (and remove it)")
async def replay_dead_letter(account_id: str, dead_letter_id: str, request: Request,
                             who: Identity = Depends(require(P.LAMBDA_INVOKE))) -> Response:
    return await _forward(request, who)


@op("POST", ACC + "/dead-letters/replay", P.LAMBDA_INVOKE,
    summary="Replay every dead letter (of one lambda with `lambda_id=`)")
async def replay_dead_letters(account_id: str, request: Request,
                              who: Identity = Depends(require(P.LAMBDA_INVOKE)),
                              lambda_id: str | None = None) -> Response:
    return await _forward(request, who, params={"lambda_id": lambda_id} if lambda_id else None)


@op("DELETE", ACC + "/dead-letters/{dead_letter_id}", P.LAMBDA_WRITE, status_code=204,
    summary="Delete one dead letter without running it")
async def delete_dead_letter(account_id: str, dead_letter_id: str, request: Request,
                             who: Identity = Depends(require(P.LAMBDA_WRITE))) -> Response:
    return await _forward(request, who)


@op("DELETE", ACC + "/dead-letters", P.LAMBDA_WRITE,
    summary="Purge the dead letters (of one lambda with `lambda_id=`)")
async def purge_dead_letters(account_id: str, request: Request,
                             who: Identity = Depends(require(P.LAMBDA_WRITE)),
                             lambda_id: str | None = None) -> Response:
    return await _forward(request, who, params={"lambda_id": lambda_id} if lambda_id else None)


# -- retry policies ---------------------------------------------------------------------------------
@op("GET", ACC + "/retry-policies", P.LAMBDA_READ,
    summary="The effective retry policy of every event source")
async def list_retry_policies(account_id: str, request: Request,
                              who: Identity = Depends(require(P.LAMBDA_READ))) -> Response:
    return await _forward(request, who)


@op("GET", ACC + "/retry-policies/{source}", P.LAMBDA_READ,
    summary="The effective retry policy of one source (http, event, scheduler, test)")
async def get_retry_policy(account_id: str, source: str, request: Request,
                           who: Identity = Depends(require(P.LAMBDA_READ))) -> Response:
    return await _forward(request, who)


@op("PUT", ACC + "/retry-policies/{source}", P.LAMBDA_WRITE,
    summary="Override a source's retry policy for this account",
    more="Fields not given keep their current value. Bounds: max_attempts ≤ 10, delays "
         "100 ms – 300 s, max_event_age_ms ≤ 24 h; outside them 422.")
async def put_retry_policy(account_id: str, source: str, body: RetryPolicyUpdate,
                           request: Request,
                           who: Identity = Depends(require(P.LAMBDA_WRITE))) -> Response:
    return await _forward(request, who, body)


@op("DELETE", ACC + "/retry-policies/{source}", P.LAMBDA_WRITE,
    summary="Back to the platform's default policy for this source")
async def reset_retry_policy(account_id: str, source: str, request: Request,
                             who: Identity = Depends(require(P.LAMBDA_WRITE))) -> Response:
    return await _forward(request, who)
