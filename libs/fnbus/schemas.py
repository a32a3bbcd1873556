"""Every message that crosses Kafka, as a pydantic model with a schema version.

Rules for all of them:
1. ``schema_version`` says which shape this is; readers refuse versions they do
   not know instead of guessing.
2. Each message carries the id that makes its effect idempotent
   (``activation_id``, ``event_id``, ``deployment_id``).
3. Times are epoch milliseconds (``*_ms``), UTC.
"""

from __future__ import annotations

import os
import threading
import time
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fnbus.tracing import new_trace_id

SCHEMA_VERSION = 1


def now_ms() -> int:
    return int(time.time() * 1000)


class _RandomIds:
    """Version-4 UUIDs (RFC 9562) as text, from the OS's random source as ``uuid4`` is,
    but read 4 KiB at a time instead of one system call per id (an activation id is
    made for every invocation). Safe across threads (a lock) and forks (a child
    discards the pool it inherited, or it would repeat its parent's ids)."""

    CHUNK = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._at, self._lock = b"", 0, threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            if self._at + 16 > len(self._pool):
                self._pool, self._at = os.urandom(self.CHUNK), 0
            raw = bytearray(self._pool[self._at:self._at + 16])
            self._at += 16
        raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
        raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC's variant
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


new_id = _RandomIds()


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = SCHEMA_VERSION  # shape of this message; bumped on breaking change

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Any:
        return cls.model_validate_json(data)


class Runtime(str, Enum):
    NODEJS = "nodejs"
    PYTHON = "python"


class EventSource(str, Enum):
    HTTP = "http"  # external invocation through the gateway
    EVENT = "event"  # platform event routed by the registry
    SCHEDULER = "scheduler"  # cron schedule
    TEST = "test"  # test invocation from console/CLI


class InvocationOutcome(str, Enum):
    """Final state of an activation (names of the original platform's reports)."""

    SUCCEEDED = "SUCCEEDED"
    CODING_FAILURE = "CODING_FAILURE"  # the lambda's own error (callback error or throw)
    PLATFORM_FAILURE = "PLATFORM_FAILURE"  # we failed: container, runner, broker
    TIMEOUT = "TIMEOUT"  # hard-killed at the execution limit
    UNKNOWN = "UNKNOWN"


class Header(BaseModel):
    model_config = ConfigDict(frozen=True)
    key: str
    value: str


class InvocationRequest(Message):
    """``fnbus.invocations`` (and retry topics), keyed by lambda id."""

    activation_id: str = Field(default_factory=new_id)  # idempotency key of this invocation
    account_id: str  # tenant that owns the lambda
    lambda_id: str  # lambda uuid
    version: int | None = None  # lambda version to run; None = the deployed one
    source: EventSource = EventSource.HTTP  # decides the retry policy
    event_id: str | None = None  # platform event id (source=event)
    headers: list[Header] = Field(default_factory=list)  # caller headers, LP style
    payload: Any = None  # the lambda's input payload
    reply_to: str | None = None  # reply topic of a synchronous caller; None = async
    attempt: int = 1  # 1 for the first try, +1 per retry
    not_before_ms: int = 0  # retry topics: do not run before this time
    created_ms: int = Field(default_factory=now_ms)  # when the caller asked
    timeout_ms: int | None = None  # execution limit; None = the platform default (30 s)
    partition_key: str | None = None  # ordering key (e.g. conversation id)
    # W3C trace id (32 hex) of the invocation; a producer that sets none (platform
    # events, schedules, an older gateway) starts a new trace. Retries and dead-letter
    # replays copy the request, so every attempt stays in the trace (fnbus.tracing).
    trace_id: str = Field(default_factory=new_trace_id)
    parent_id: str | None = None  # span id (16 hex) of the component that asked: the gateway's


class InvocationError(BaseModel):
    model_config = ConfigDict(frozen=True)
    code: str  # e.g. "com.liveperson.faas.handler.custom-failure"
    message: str  # human readable
    details: Any = None  # stack, line, … when known


class LogEntryOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    level: str  # debug, info, log, warn, error
    message: str
    ts_ms: int


class InvocationResult(Message):
    """``fnbus.replies.<gateway>``: the answer to a synchronous caller."""

    activation_id: str  # matches the request
    account_id: str
    lambda_id: str
    outcome: InvocationOutcome
    result: Any = None  # the lambda's result when SUCCEEDED
    error: InvocationError | None = None  # set unless SUCCEEDED
    duration_ms: int = 0  # time inside the runner
    cold_start: bool = False  # a container had to be initialised for this call
    logs: list[LogEntryOut] = Field(default_factory=list)  # the lambda's console lines
    logs_truncated: bool = False  # the per-invocation log limit dropped lines
    finished_ms: int = Field(default_factory=now_ms)
    # The invoker's wall clock (time.time_ns) for the gateway's Server-Timing hops
    # (fnbus.tracing); None when not measured (an older invoker, the code never ran).
    consumed_ns: int | None = None  # the invoker took the request record
    runner_sent_ns: int | None = None  # the run request was written to the runner
    runner_received_ns: int | None = None  # the runner's result was read back


class ActivationRecord(Message):
    """``fnbus.activations``: one per finished attempt, for log-ingest."""

    activation_id: str
    account_id: str
    lambda_id: str
    version: int | None = None
    source: EventSource
    event_id: str | None = None
    attempt: int = 1
    outcome: InvocationOutcome
    result: Any = None
    error: InvocationError | None = None
    started_ms: int
    finished_ms: int
    duration_ms: int
    cold_start: bool = False
    invoker: str = ""  # instance that ran it
    trace_id: str | None = None  # W3C trace id of the invocation (None: older records)
    # Hops measured by the invoker, ms: "dispatch" (took the record → run request written
    # to the runner) and "runner" (written → result read back); absent when not measured.
    hops_ms: dict[str, float] | None = None


class LogLevel(str, Enum):
    DEBUG = "debug"
    INFO = "info"
    LOG = "log"
    WARN = "warn"
    ERROR = "error"


class LogLine(Message):
    """``fnbus.logs``: one console line of a lambda, keyed by activation id."""

    activation_id: str
    account_id: str
    lambda_id: str
    seq: int  # position within the activation; (activation_id, seq) is unique
    level: LogLevel
    message: str
    ts_ms: int
    trace_id: str | None = None  # W3C trace id of the invocation (None: older records)


class DeployRequest(Message):
    """``fnbus.deploy-requests``: build and smoke-init one lambda version."""

    deployment_id: str = Field(default_factory=new_id)
    account_id: str
    lambda_id: str
    version: int
    runtime: Runtime
    code: str
    env: dict[str, str] = Field(default_factory=dict)
    dependencies: dict[str, str] = Field(default_factory=dict)  # package -> version spec
    action: Literal["deploy", "undeploy"] = "deploy"
    requested_ms: int = Field(default_factory=now_ms)


class DeploymentState(str, Enum):
    DEPLOYING = "Deploying"
    DEPLOYED = "Deployed"
    FAILED = "Failed"
    UNDEPLOYED = "Undeployed"


class DeploymentStatus(Message):
    """``fnbus.deployments``: progress of one deployment."""

    deployment_id: str
    account_id: str
    lambda_id: str
    version: int
    state: DeploymentState
    image: str | None = None  # image tag when DEPLOYED
    cause: str | None = None  # why, when FAILED
    at_ms: int = Field(default_factory=now_ms)


class LambdaState(str, Enum):
    DRAFT = "Draft"
    PRODUCTIVE = "Productive"
    MODIFIED = "Modified"


class LambdaChange(Message):
    """``fnbus.lambda-changes`` (compacted, keyed by lambda id): full current state.

    A tombstone (deleted lambda) is a record with ``deleted=True``.
    """

    lambda_id: str
    account_id: str
    name: str
    runtime: Runtime
    state: LambdaState
    event_id: str | None = None
    skills: list[str] = Field(default_factory=list)
    deployed_version: int | None = None
    deployed_image: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    deleted: bool = False
    changed_ms: int = Field(default_factory=now_ms)


class DeadLetter(Message):
    """``fnbus.invocations.dlq``: an invocation that ran out of attempts."""

    request: InvocationRequest
    reason: str
    last_error: InvocationError | None = None
    dead_ms: int = Field(default_factory=now_ms)


class QuarantinedEvent(Message):
    """``fnbus.platform-events.quarantine``: an inbound event we could not route."""

    reason: str
    raw_value: str  # the original bytes, decoded leniently
    raw_headers: dict[str, str] = Field(default_factory=dict)
    at_ms: int = Field(default_factory=now_ms)


class ErrorCode:
    """Error codes of invocation results; the handler.* ones are the original platform's."""

    CUSTOM_FAILURE = "com.liveperson.faas.handler.custom-failure"  # error passed to callback
    RUNTIME_EXCEPTION = "com.liveperson.faas.handler.runtime-exception"  # thrown / crashed
    TIMEOUT = "com.liveperson.faas.handler.executiontime-exceeded"  # hard-killed at the limit
    LOG_LIMIT = "com.liveperson.faas.handler.log-limit-reached"
    # ours, in the same family: the result is over FNBUS_MAX_RESULT_BYTES (a lambda's own error)
    RESULT_TOO_LARGE = "com.liveperson.faas.handler.result-too-large"
    NOT_DEPLOYED = "fnbus.lambda.not-deployed"
    PLATFORM = "fnbus.platform.failure"  # our fault: engine, runner, broker
    OVERLOADED = "fnbus.platform.overloaded"

    @staticmethod
    def is_lambda_error(code: str) -> bool:
        return code.startswith("com.liveperson.faas.handler")
