"""One invocation, end to end: place, run under the hard limit, publish.

For every request the invoker publishes, before its offset may be committed:
1. the result to the caller's reply topic (synchronous callers only), first,
   because someone is waiting for it;
2. the activation record and the log lines, for log-ingest (one record per attempt);
3. for a failed asynchronous request, what its source's retry policy says:
   the next attempt to a delay topic, a dead letter, or a log line
   (:mod:`services.invoker.retries`).

Everything published fits the topics' record size (:mod:`fnbus.topics`):
a result over ``max_result_bytes`` is not published but reported as the
lambda's error ``…handler.result-too-large``; logs and error texts are bounded
by the runner protocol. Publishing never loops on one invocation's output:
4. a record the broker refuses for what it is (too large, invalid, not
   serialisable) is replaced at once by a small platform-failure reply and
   activation record (``fnbus.platform.failure``), without result and logs;
5. other errors (the broker unavailable, a producer renewed after a failed
   batch) are retried with backoff for up to :data:`PUBLISH_RETRY_S`, then the
   failure record is published instead;
6. what is left after that — the failure record, the retry policy's next
   attempt or dead letter — is retried with backoff (at most 5 s apart) until
   the broker takes it or the invoker stops, in which case the request stays
   uncommitted and is redelivered. Only an unavailable broker or registry gets
   here, which stalls every tenant alike; dropping would lose an accepted
   invocation. A record refused for what it is is dropped with an error log.
7. A part the broker acknowledged is never sent again: a retry, and the failure
   record that replaces a refused outcome, carry only the parts still missing.
   If the activation record is out and the reply is refused, the caller gets
   the failure reply and the activation record stays the one published.

An (activation id, attempt) that this invoker already ran or is running is
skipped: a redelivered request (a rebalance, a relay that crashed after
producing, a registry that crashed between producing and committing) does not
run twice. The memory is an in-process LRU of :data:`RECENT_ACTIVATIONS`
entries — enough for redeliveries, which come within seconds; it does not
survive a restart of the invoker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import httpx
from aiokafka import ConsumerRecord
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from fnbus.kafka import Producer
from fnbus.lambda_cache import LambdaCache
from fnbus.runner_protocol import ErrorKind, LogEntry, RunResult, ToolbeltHandler, clip
from fnbus.sandbox import ContainerError
from fnbus.schemas import (
    SCHEMA_VERSION,
    ActivationRecord,
    ErrorCode,
    InvocationError,
    InvocationOutcome,
    InvocationRequest,
    InvocationResult,
    LambdaChange,
    LogEntryOut,
    LogLevel,
    LogLine,
    now_ms,
)
from fnbus.topics import SOURCE_HEADER, Topics
from fnbus.tracing import hops_ms
from services.invoker.manager import Code, CodeCache, ContainerPool
from services.invoker.pool import VersionKey
from services.invoker.proxy import ContainerProxy, InitFailed, ProxyError
from services.invoker.retries import EVENT_LAG, Retries

log = logging.getLogger(__name__)

INVOCATIONS = Counter("fnbus_invocations_total", "Finished invocations", ["source", "outcome"])
DURATION = Histogram("fnbus_invocation_duration_seconds", "Time from pick-up to result",
                     ["cold"], buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10,
                                        30, 60))


RECENT_ACTIVATIONS = 50_000
# A call whose placement fails before the code ran (a pre-warmed container found dead, a
# start the engine refused, the registry not answering for the code) is placed this many
# times before it fails with a platform error.
PLACEMENT_ATTEMPTS = 3
REPLACED = Counter("fnbus_container_replacements_total",
                   "Calls placed again because their container failed before the code ran")
# Replies up to this size leave in one produce request with the activation record; no
# topic of ours takes less than MAX_MESSAGE_BYTES (2 MiB), nor does Kafka by default (1 MB).
ONE_TURN_REPLY_BYTES = 64 * 1024
CODE_LOADS = Counter("fnbus_invoker_code_loads_total",
                     "Version code read from the registry: on deploy (prefetch) or by a call (on_call)",
                     ["how"])
DUPLICATES = Counter("fnbus_duplicate_requests_total", "Redelivered requests skipped", ["source"])
UNPUBLISHABLE = Counter("fnbus_unpublishable_results_total",
                        "Results replaced by a failure record because they could not be published",
                        ["reason"])

#: A result larger than this (as JSON, UTF-8) fails with ErrorCode.RESULT_TOO_LARGE;
#: the service passes FNBUS_MAX_RESULT_BYTES.
DEFAULT_MAX_RESULT_BYTES = 1024 * 1024
#: How long a retriable publishing error is retried before the failure record replaces it.
PUBLISH_RETRY_S = 30.0
_PUBLISH_BACKOFF_FIRST_S = 0.2
_PUBLISH_BACKOFF_MAX_S = 5.0
#: Errors that say the record itself can never be written (rule 4 of the module docstring).
UNPUBLISHABLE_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError,
    CorruptRecordException, InvalidTimestampError, UnsupportedForMessageFormatError,
    TypeError, ValueError)


#: Builds the toolbelt handler of one invocation from its request and its deadline
#: (``time.monotonic()`` seconds at which the container is killed).
ToolbeltFactory = Callable[[InvocationRequest, float], ToolbeltHandler]


class NotDeployed(Exception):
    pass


class RecentActivations:
    """Bounded memory of (activation id, attempt) pairs taken on, oldest forgotten first.

    Each pair keeps the wall clock (``time.time_ns``) at which it was taken: the start
    of the ``dispatch`` hop (:mod:`fnbus.tracing`).
    """

    def __init__(self, size: int = RECENT_ACTIVATIONS) -> None:
        self.size = size
        self._seen: OrderedDict[tuple[str, int], int] = OrderedDict()

    def take(self, activation_id: str, attempt: int, taken_ns: int = 0) -> bool:
        """True the first time a pair is seen; False for a duplicate."""
        key = (activation_id, attempt)
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = taken_ns
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True

    def taken_ns(self, activation_id: str, attempt: int) -> int | None:
        """When the pair was taken (wall clock, ns); None if unknown."""
        return self._seen.get((activation_id, attempt)) or None

    def forget(self, activation_id: str, attempt: int) -> None:
        self._seen.pop((activation_id, attempt), None)


class Invoker:
    def __init__(self, *, pool: ContainerPool, producer: Producer, cache: LambdaCache,
                 registry: httpx.AsyncClient, topics: Topics, instance: str,
                 default_timeout_ms: int, runtime_images: dict[str, str],
                 max_per_account: int, retries: Retries | None = None,
                 toolbelt: ToolbeltFactory | None = None,
                 max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
                 publish_retry_s: float = PUBLISH_RETRY_S) -> None:
        self.pool = pool
        self.producer = producer
        self.cache = cache
        self.registry = registry
        self.topics = topics
        self.instance = instance
        self.default_timeout_ms = default_timeout_ms
        self.runtime_images = runtime_images
        self.max_per_account = max_per_account
        self._accounts: dict[str, asyncio.Semaphore] = {}
        self._code = CodeCache()
        self.retries = retries
        self.recent = RecentActivations()
        self.toolbelt = toolbelt
        self.max_result_bytes = max_result_bytes
        self.publish_retry_s = publish_retry_s

    # -- entry point -----------------------------------------------------------------------
    async def handle_record(self, record: ConsumerRecord) -> None:
        consumed_ns = time.time_ns()
        try:
            request = InvocationRequest.from_bytes(record.value)
        except ValidationError as exc:
            log.error("dropping malformed invocation request",
                      extra={"offset": record.offset, "error": str(exc)[:500]})
            return
        if request.schema_version > SCHEMA_VERSION:
            log.error("dropping invocation request of unknown schema version",
                      extra={"activation_id": request.activation_id})
            return
        await self.handle(request, consumed_ns)

    async def handle(self, request: InvocationRequest, consumed_ns: int | None = None) -> None:
        if not self.recent.take(request.activation_id, request.attempt,
                                consumed_ns or time.time_ns()):
            DUPLICATES.labels(request.source.value).inc()
            log.info("skipping a request this invoker already took", extra={
                "activation_id": request.activation_id, "account_id": request.account_id,
                "lambda_id": request.lambda_id, "attempt": request.attempt})
            return
        try:
            await self._handle(request)
        except BaseException:
            # Not finished (cancelled on shutdown): a redelivery must run it.
            self.recent.forget(request.activation_id, request.attempt)
            raise

    async def _handle(self, request: InvocationRequest) -> None:
        if request.attempt == 1:
            EVENT_LAG.labels(request.source.value).observe(
                max(0, now_ms() - request.created_ms) / 1000)
        semaphore = self._accounts.setdefault(request.account_id,
                                              asyncio.Semaphore(self.max_per_account))
        async with semaphore:
            result, record, logs = await self.execute(request)
        # Run once, then publish (rules 4 to 6): a retry never runs the code twice.
        result, record, logs = await self._publish_or_fail(request, result, record, logs)
        if self.retries is None:
            return
        backoff_s = _PUBLISH_BACKOFF_FIRST_S
        while True:
            try:
                decision = await self.retries.decide(request, result)
                await self.retries.apply(request, result, decision)
                return
            except UNPUBLISHABLE_ERRORS as exc:
                # A retry or dead letter the broker refuses: the outcome is out already.
                log.error("the retry policy's record could not be published; dropped", extra={
                    "activation_id": request.activation_id, "account_id": request.account_id,
                    "lambda_id": request.lambda_id, "error": repr(exc)})
                return
            except Exception as exc:  # noqa: BLE001 - broker or registry away (rule 6)
                log.warning("applying the retry policy failed; retrying", extra={
                    "activation_id": request.activation_id, "error": repr(exc)})
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, _PUBLISH_BACKOFF_MAX_S)

    async def _publish_or_fail(self, request: InvocationRequest, result: InvocationResult,
                               record: ActivationRecord, logs: list[LogEntry]
                               ) -> tuple[InvocationResult, ActivationRecord, list[LogEntry]]:
        """Publish the outcome, or a failure in its place; return what was published."""
        backoff_s = _PUBLISH_BACKOFF_FIRST_S
        give_up = time.monotonic() + self.publish_retry_s
        failed = False
        delivered: set[str] = set()  # the parts already out are never sent twice
        while True:
            try:
                await self.publish(request, result, record, logs, delivered)
                return result, record, logs
            except Exception as exc:  # noqa: BLE001 - sorted below
                extra = {"activation_id": request.activation_id, "account_id": request.account_id,
                         "lambda_id": request.lambda_id, "error": repr(exc)}
                unpublishable = isinstance(exc, UNPUBLISHABLE_ERRORS)
                if not failed and (unpublishable or time.monotonic() >= give_up):
                    reason = type(exc).__name__ if unpublishable else "retries-exhausted"
                    UNPUBLISHABLE.labels(reason).inc()
                    log.error("the outcome could not be published; publishing a failure instead",
                              extra=extra)
                    result, record = self._undeliverable(result, record, exc)
                    logs = []
                    failed = True
                    backoff_s = _PUBLISH_BACKOFF_FIRST_S
                    continue
                if failed and unpublishable:
                    log.error("not even the failure record could be published; dropped", extra=extra)
                    return result, record, logs
                log.warning("publishing the outcome failed; retrying", extra=extra)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, _PUBLISH_BACKOFF_MAX_S)

    @staticmethod
    def _undeliverable(result: InvocationResult, record: ActivationRecord, exc: BaseException
                       ) -> tuple[InvocationResult, ActivationRecord]:
        """The small failure that replaces an outcome the broker would not take."""
        error = InvocationError(
            code=ErrorCode.PLATFORM,
            message=f"the invocation finished ({result.outcome.value}) but its outcome could not "
                    f"be delivered: {type(exc).__name__}: {clip(str(exc), 500)}")
        update = {"outcome": InvocationOutcome.PLATFORM_FAILURE, "result": None, "error": error}
        return (result.model_copy(update={**update, "logs": [], "logs_truncated": True}),
                record.model_copy(update=update))

    # -- running -------------------------------------------------------------------------
    async def prefetch_code(self, change: LambdaChange) -> None:
        """Load a newly deployed version's code now, so that its first call (a cold start)
        does not wait for the registry. Failures are left to that call to meet again."""
        if change.deleted or change.deployed_version is None:
            return
        if self._code.get((change.lambda_id, change.deployed_version)) is not None:
            return
        try:
            await self._load_code(change.account_id, change.lambda_id, change.deployed_version,
                                  how="prefetch")
        except Exception as exc:  # noqa: BLE001 - an optimisation; the call will fetch it itself
            log.info("could not prefetch a deployed version's code", extra={
                "lambda_id": change.lambda_id, "version": change.deployed_version, "error": repr(exc)})

    async def _load_code(self, account_id: str, lambda_id: str, version: int,
                         how: str = "on_call") -> Code:
        cached = self._code.get((lambda_id, version))
        if cached is not None:
            return cached
        CODE_LOADS.labels(how).inc()
        r = await self.registry.get(
            f"/internal/accounts/{account_id}/lambdas/{lambda_id}/versions/{version}")
        if r.status_code == 404:
            raise NotDeployed(f"lambda {lambda_id} version {version} does not exist")
        r.raise_for_status()
        body = r.json()
        code = Code(code=body["code"], env=dict(body["env"]),
                    can_use_prewarmed=not body["dependencies"])
        self._code.put((lambda_id, version), code)
        return code

    def _target(self, request: InvocationRequest) -> tuple[int, str, str]:
        """(version, runtime, image) to run, or NotDeployed."""
        state = self.cache.get(request.lambda_id)
        if state is None or state.account_id != request.account_id:
            if request.version is None:
                raise NotDeployed(f"lambda {request.lambda_id} is not deployed")
            raise NotDeployed(f"lambda {request.lambda_id} is unknown to this invoker")
        if state.deployed_version is None:
            # Undeployed after the request was made: it must not run any more.
            raise NotDeployed(f"lambda {request.lambda_id} is not deployed")
        version = state.deployed_version if request.version is None else request.version
        runtime = state.runtime.value
        image = state.deployed_image if state.deployed_version == version and state.deployed_image \
            else self.runtime_images[runtime]
        return version, runtime, image

    async def _place(self, request: InvocationRequest, key: VersionKey, runtime: str,
                     image: str) -> tuple[ContainerProxy, bool]:
        """A container initialised with the version's code; failures before the code ran are retried."""
        for attempt in range(1, PLACEMENT_ATTEMPTS + 1):
            try:
                return await self.pool.acquire(
                    key, runtime, image,
                    lambda: self._load_code(key.account_id, key.lambda_id, key.version))
            except InitFailed:
                raise  # the lambda's own code failed to load: placing it again changes nothing
            except (ProxyError, ContainerError, httpx.HTTPError) as exc:  # incl. loading the code
                if attempt == PLACEMENT_ATTEMPTS:
                    raise
                REPLACED.inc()
                log.warning("container failed before the code ran; placing the call again: %s", exc,
                            extra={"activation_id": request.activation_id, "attempt": attempt})
        raise AssertionError("unreachable")

    async def execute(self, request: InvocationRequest
                      ) -> tuple[InvocationResult, ActivationRecord, list[LogEntry]]:
        consumed_ns = self.recent.taken_ns(request.activation_id, request.attempt)
        started_ms = now_ms()
        t0 = time.perf_counter()
        timeout_s = (request.timeout_ms or self.default_timeout_ms) / 1000
        logs: list[LogEntry] = []
        cold = False
        version: int | None = request.version
        run: RunResult | None = None
        error: InvocationError | None = None
        outcome = InvocationOutcome.SUCCEEDED
        try:
            version, runtime, image = self._target(request)
            key = VersionKey(request.account_id, request.lambda_id, version)
            proxy, cold = await self._place(request, key, runtime, image)
            try:
                handler = self.toolbelt(request, time.monotonic() + timeout_s) if self.toolbelt else None
                outcome_ = await proxy.run(request.activation_id, self._input(request), timeout_s,
                                           toolbelt=handler)
            finally:
                await self.pool.release(proxy)
            if outcome_.timed_out:
                outcome = InvocationOutcome.TIMEOUT
                error = InvocationError(
                    code=ErrorCode.TIMEOUT,
                    message=f"the function did not finish within {timeout_s:g} s and was killed")
            elif outcome_.broken is not None:
                outcome = InvocationOutcome.CODING_FAILURE
                error = InvocationError(code=ErrorCode.RUNTIME_EXCEPTION, message=outcome_.broken)
            else:
                run = outcome_.result
                assert run is not None
                logs = run.logs
                size = self._result_bytes(run) if run.ok else 0
                if size > self.max_result_bytes:
                    # The value is not published and not stored (error is set: see below).
                    outcome = InvocationOutcome.CODING_FAILURE
                    error = InvocationError(
                        code=ErrorCode.RESULT_TOO_LARGE,
                        message=f"the function's result is {size} bytes as JSON, more than the "
                                f"limit of {self.max_result_bytes} bytes",
                        details={"result_bytes": size, "max_result_bytes": self.max_result_bytes})
                elif not run.ok:
                    outcome = InvocationOutcome.CODING_FAILURE
                    err = run.error
                    code = ErrorCode.CUSTOM_FAILURE if err and err.kind is ErrorKind.CUSTOM_FAILURE \
                        else ErrorCode.RUNTIME_EXCEPTION
                    if err and err.name == "ResultError" and "bytes as JSON" in err.message:
                        # The runner's word for a result over its frame limit (16 MiB): same error.
                        code = ErrorCode.RESULT_TOO_LARGE
                    error = InvocationError(
                        code=code, message=err.message if err else "the function failed",
                        details={"name": err.name, "stack": err.stack} if err else None)
        except NotDeployed as exc:
            outcome = InvocationOutcome.PLATFORM_FAILURE
            error = InvocationError(code=ErrorCode.NOT_DEPLOYED, message=str(exc))
        except InitFailed as exc:
            outcome = InvocationOutcome.CODING_FAILURE
            error = InvocationError(code=ErrorCode.RUNTIME_EXCEPTION,
                                    message=f"the code failed to load: {exc.error}",
                                    details={"line": exc.error.line})
        except (ProxyError, ContainerError, httpx.HTTPError) as exc:
            outcome = InvocationOutcome.PLATFORM_FAILURE
            error = InvocationError(code=ErrorCode.PLATFORM, message=f"platform failure: {exc}")
            log.warning("invocation failed on the platform side: %s", exc,
                        extra={"activation_id": request.activation_id, "error": str(exc)})
        finished_ms = now_ms()
        duration_ms = int(run.duration_ms) if run is not None else finished_ms - started_ms
        DURATION.labels(str(cold).lower()).observe(time.perf_counter() - t0)
        INVOCATIONS.labels(request.source.value, outcome.value).inc()
        log_out = [LogEntryOut(level=e.level.value, message=e.message, ts_ms=e.ts_ms) for e in logs]
        sent_ns = (run.sent_ns or None) if run is not None else None
        received_ns = (run.received_ns or None) if run is not None else None
        hops = hops_ms(consumed_ns=consumed_ns, runner_sent_ns=sent_ns,
                       runner_received_ns=received_ns)
        result = InvocationResult(
            activation_id=request.activation_id, account_id=request.account_id,
            lambda_id=request.lambda_id, outcome=outcome,
            result=run.value if run is not None and run.ok and error is None else None, error=error,
            duration_ms=duration_ms, cold_start=cold, logs=log_out,
            logs_truncated=bool(run and run.logs_truncated), finished_ms=finished_ms,
            consumed_ns=consumed_ns, runner_sent_ns=sent_ns, runner_received_ns=received_ns)
        record = ActivationRecord(
            activation_id=request.activation_id, account_id=request.account_id,
            lambda_id=request.lambda_id, version=version, source=request.source,
            event_id=request.event_id, attempt=request.attempt, outcome=outcome,
            result=result.result, error=error, started_ms=started_ms, finished_ms=finished_ms,
            duration_ms=duration_ms, cold_start=cold, invoker=self.instance,
            trace_id=request.trace_id,
            hops_ms={k: round(v, 3) for k, v in hops.items()} or None)
        log.info("invocation finished", extra={
            "activation_id": request.activation_id, "account_id": request.account_id,
            "lambda_id": request.lambda_id, "outcome": outcome.value, "cold": cold,
            "duration_ms": duration_ms, "trace_id": request.trace_id})
        return result, record, logs

    @staticmethod
    def _result_bytes(run: RunResult) -> int:
        try:
            return len(json.dumps(run.value, ensure_ascii=False, separators=(",", ":")).encode())
        except (TypeError, ValueError):
            return 0  # it came from JSON; pydantic serialises it for the reply

    @staticmethod
    def _input(request: InvocationRequest) -> dict[str, Any]:
        """What the lambda receives: the original platform's ``{headers, payload}`` shape."""
        return {"headers": [h.model_dump() for h in request.headers], "payload": request.payload}

    # -- publishing ------------------------------------------------------------------------
    async def publish(self, request: InvocationRequest, result: InvocationResult,
                      record: ActivationRecord, logs: list[LogEntry],
                      delivered: set[str] | None = None) -> None:
        """Publish the parts of an outcome that are not in ``delivered`` yet, and add to
        it each part the broker acknowledged ("reply", "activation", "log:<seq>"), also
        when another part failed: a retry then sends only what is missing (rule 7)."""
        delivered = set() if delivered is None else delivered
        # A small reply is queued together with the activation record and the log lines:
        # they leave in one produce request (one broker round trip per invocation instead
        # of two; the reply is not delayed by it). A large one is sent, and acknowledged,
        # first: a broker may refuse it for its size (a topic's max.message.bytes), and
        # the activation record then published must be the failure that replaces it, not
        # a second record of the same activation.
        pending: list[tuple[str, asyncio.Future[Any]]] = []
        try:
            if request.reply_to and "reply" not in delivered:
                reply = result.to_bytes()
                if len(reply) <= ONE_TURN_REPLY_BYTES:
                    pending.append(("reply", await self.producer.send_nowait(
                        request.reply_to, reply, key=request.activation_id, bulk=False)))
                else:
                    await self.producer.send(request.reply_to, reply, key=request.activation_id)
                    delivered.add("reply")
            if "activation" not in delivered:
                pending.append(("activation", await self.producer.send_nowait(
                    self.topics.activations, record.to_bytes(), key=request.activation_id,
                    headers=[(SOURCE_HEADER, request.source.value.encode())])))
            for seq, entry in enumerate(logs):
                if f"log:{seq}" in delivered:
                    continue
                line = LogLine(activation_id=request.activation_id, account_id=request.account_id,
                               lambda_id=request.lambda_id, seq=seq,
                               level=LogLevel(entry.level.value), message=entry.message,
                               ts_ms=entry.ts_ms, trace_id=request.trace_id)
                pending.append((f"log:{seq}", await self.producer.send_nowait(
                    self.topics.logs, line.to_bytes(), key=request.activation_id)))
        finally:
            # Also when queueing a later part raised: what was queued before may be out.
            outcomes = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
            failures = []
            for (part, _), outcome in zip(pending, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    failures.append(outcome)
                else:
                    delivered.add(part)
        if failures:
            raise failures[0]
