"""W3C Trace Context and per-hop timing of one invocation.

One trace id follows an invocation from the gateway through Kafka (a field of
:class:`fnbus.schemas.InvocationRequest`, so retry and dead-letter copies keep it)
to the invoker, which stamps it on the activation record and every log line.
The gateway answers a synchronous caller with a ``traceparent`` (same trace id,
the gateway's own span id) and a ``Server-Timing`` header of six hops:

====================  ===================================================================
``total``             gateway: request taken by the route → response ready
``produce``           gateway: send of the request record → broker ack
``queue``             gateway's broker ack → invoker took the record
``dispatch``          invoker took the record → request written to the runner
``runner``            request written to the runner → result read back
``reply``             result read back (invoker) → reply record read (gateway)
====================  ===================================================================

Cross-process hops subtract wall clocks (``time.time_ns``) of two services; on
one host they share a clock, across hosts they include the clocks' skew. A hop
whose ends are not both known, or that comes out negative (only a clock step or
skew can do that), is left out rather than made up.

Everything here is plain string work and integer arithmetic: it runs on the hot
path of every invocation.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

TRACEPARENT = "traceparent"
SERVER_TIMING = "Server-Timing"

#: Hop names of the Server-Timing header, in the order of the path (a contract: the
#: bench harness reads them by name).
HOPS = ("total", "produce", "queue", "dispatch", "runner", "reply")

_HEX = "0123456789abcdef"
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_TRACEPARENT_LEN = 55  # "00-" + 32 + "-" + 16 + "-" + 2
DEFAULT_FLAGS = "01"  # sampled: we keep every invocation's logs and record


def _is_hex(text: str) -> bool:
    # Lower-case hex only (the spec refuses upper case); strip() runs in C.
    return not text.strip(_HEX)


# Ids need to be unique, not secret: the process's PRNG (as OpenTelemetry's default id
# generator) instead of os.urandom, a system call that costs several µs per id here.
def new_trace_id() -> str:
    """32 lower-case hex digits, never all zero."""
    while True:
        bits = random.getrandbits(128)
        if bits:
            return f"{bits:032x}"


def new_span_id() -> str:
    """16 lower-case hex digits, never all zero."""
    while True:
        bits = random.getrandbits(64)
        if bits:
            return f"{bits:016x}"


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A valid ``traceparent``: who called us, in which trace."""

    trace_id: str  # 32 hex, not all zero
    parent_id: str  # 16 hex, not all zero: the caller's span
    flags: str  # 2 hex, e.g. "01" sampled


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The caller's ``traceparent``, or None when it is missing or invalid.

    Rules of W3C Trace Context level 1: ``version-traceid-parentid-flags``, all
    lower-case hex; version ``ff`` is invalid; version ``00`` is exactly 55
    characters; a later version may append fields after a ``-`` at position 55
    (they are ignored); trace id and parent id must not be all zero. An invalid
    header is ignored, never an error: the caller then starts a new trace.
    """
    if not value:
        return None
    value = value.strip(" \t")
    if len(value) < _TRACEPARENT_LEN:
        return None
    version = value[:2]
    if version == "00":
        if len(value) != _TRACEPARENT_LEN:
            return None
    elif version == "ff" or (len(value) > _TRACEPARENT_LEN and value[_TRACEPARENT_LEN] != "-"):
        return None
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    trace_id = value[3:35]
    parent_id = value[36:52]
    flags = value[53:55]
    if not _is_hex(version + trace_id + parent_id + flags):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, flags)


def format_traceparent(trace_id: str, span_id: str, flags: str = DEFAULT_FLAGS) -> str:
    """The version-00 header for ``span_id`` in ``trace_id``."""
    return f"00-{trace_id}-{span_id}-{flags}"


class HopClock:
    """The gateway's wall-clock stamps (``time.time_ns``) of one synchronous call.

    Filled in as the call goes: ``received_ns`` by the route, ``produce_ns`` and
    ``acked_ns`` around the send of the request record, ``reply_ns`` when the
    reply record was read. 0 means not (yet) known.
    """

    __slots__ = ("received_ns", "produce_ns", "acked_ns", "reply_ns")

    def __init__(self, received_ns: int = 0) -> None:
        self.received_ns = received_ns
        self.produce_ns = 0
        self.acked_ns = 0
        self.reply_ns = 0


def hops_ms(*, received_ns: int = 0, produce_ns: int = 0, acked_ns: int = 0,
            consumed_ns: int | None = None, runner_sent_ns: int | None = None,
            runner_received_ns: int | None = None, reply_ns: int = 0,
            ready_ns: int = 0) -> dict[str, float]:
    """The hops (ms) whose two ends are known, in :data:`HOPS` order.

    0 or None marks an unknown stamp; a hop with an unknown end, or a negative one,
    is left out.
    """
    # Spelled out rather than looped: this runs for every synchronous call.
    out: dict[str, float] = {}
    if received_ns and ready_ns >= received_ns:
        out["total"] = (ready_ns - received_ns) / 1e6
    if produce_ns and acked_ns >= produce_ns:
        out["produce"] = (acked_ns - produce_ns) / 1e6
    if acked_ns and consumed_ns and consumed_ns >= acked_ns:
        out["queue"] = (consumed_ns - acked_ns) / 1e6
    if consumed_ns and runner_sent_ns and runner_sent_ns >= consumed_ns:
        out["dispatch"] = (runner_sent_ns - consumed_ns) / 1e6
    if runner_sent_ns and runner_received_ns and runner_received_ns >= runner_sent_ns:
        out["runner"] = (runner_received_ns - runner_sent_ns) / 1e6
    if runner_received_ns and reply_ns >= runner_received_ns:
        out["reply"] = (reply_ns - runner_received_ns) / 1e6
    return out


def server_timing(hops: dict[str, float]) -> str:
    """``Server-Timing`` header value: ``name;dur=1.23`` per hop, ms with 2 decimals."""
    return ", ".join([f"{name};dur={ms:.2f}" for name, ms in hops.items()])


def parse_server_timing(value: str) -> dict[str, float]:
    """The ``name → dur`` pairs of a ``Server-Timing`` value (entries without dur skipped)."""
    out: dict[str, float] = {}
    for entry in _split(value, ","):
        name, _, params = entry.partition(";")
        for param in _split(params, ";"):
            key, _, dur = param.partition("=")
            if key.strip().lower() == "dur":
                try:
                    out[name.strip()] = float(dur.strip().strip('"'))
                except ValueError:
                    pass
    return out


def _split(text: str, sep: str) -> Iterable[str]:
    return (part for part in text.split(sep) if part.strip())
