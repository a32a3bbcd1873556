"""Platform events as CloudEvents on Kafka (protocol binding, both content modes).

A platform event is a CloudEvent 1.0 whose

- ``id`` identifies it (a redelivery carries the same id; duplicates are dropped),
- ``type`` is an event id of the catalogue (``controllerbot_messaging_new_conversation``…),
- extension ``accountid`` names the tenant, ``skillid`` the skill (optional),
- extension ``partitionkey`` (or the Kafka key, or ``data.conversationId``)
  orders events: the same key reaches a lambda in order,
- ``data`` is the lambda's payload.

Binary mode carries the attributes in ``ce_*`` headers and the data as the
value; structured mode carries everything as ``application/cloudevents+json``.
:func:`parse` accepts either and raises :class:`InvalidEvent` with a short
reason for anything else: such records go to the quarantine topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent

MAX_EVENT_BYTES = 1024 * 1024  # larger records are quarantined unread
ACCOUNT_ATTR = "accountid"
SKILL_ATTR = "skillid"
PARTITION_ATTR = "partitionkey"


class InvalidEvent(Exception):
    """The record is not a platform event we can route; ``reason`` says why (one line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PlatformEvent:
    id: str  # CloudEvent id: the idempotency key per account
    type: str  # catalogue event id
    source: str  # CloudEvent source (who emitted it)
    account_id: str
    skill_id: str | None
    partition_key: str | None  # ordering key, e.g. the conversation id
    time_ms: int | None  # when it happened, if the producer said
    data: Any  # the lambda's payload
    mode: str  # "binary" or "structured"
    attributes: dict[str, str] = field(default_factory=dict)


def record_size(value: bytes | None, headers: list[tuple[str, bytes]] | None) -> int:
    return len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers or ())


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse(value: bytes | None, headers: list[tuple[str, bytes]] | None,
          key: bytes | None = None) -> PlatformEvent:
    """A Kafka record's parts → :class:`PlatformEvent`, or :class:`InvalidEvent`.

    Checks only the shape; whether the type and account exist is the router's call.
    """
    if record_size(value, headers) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"oversized: more than {MAX_EVENT_BYTES} bytes")
    header_map: dict[str, bytes] = {}
    for name, raw in headers or ():
        header_map[name] = raw or b""
    binary = any(name.lower().startswith("ce_") for name in header_map)
    if binary:
        if "ce_id" not in {n.lower() for n in header_map}:
            raise InvalidEvent("not a CloudEvent: binary mode without ce_id")
    else:
        try:
            body = json.loads(value or b"")
        except (ValueError, UnicodeDecodeError):
            raise InvalidEvent("not a CloudEvent: neither ce_* headers nor a JSON body") from None
        if not isinstance(body, dict) or "specversion" not in body:
            raise InvalidEvent("not a CloudEvent: structured body without specversion")
        if not _str(body.get("id")):
            raise InvalidEvent("not a CloudEvent: missing id")
    message = ce_kafka.KafkaMessage(headers=header_map, key=key, value=value or b"")
    try:
        event = ce_kafka.from_kafka_event(message)
    except Exception as exc:  # noqa: BLE001 - the SDK raises many kinds; all mean "invalid"
        raise InvalidEvent(f"not a CloudEvent: {type(exc).__name__}: {str(exc)[:200]}") from None
    if event.get_specversion() != "1.0":
        raise InvalidEvent(f"unsupported specversion {event.get_specversion()!r}")
    account_id = _str(event.get_extension(ACCOUNT_ATTR))
    if account_id is None:
        raise InvalidEvent(f"missing extension attribute {ACCOUNT_ATTR!r}")
    data = event.get_data()
    if isinstance(data, bytes):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise InvalidEvent("data is neither JSON nor text") from None
    partition_key = _str(event.get_extension(PARTITION_ATTR))
    if partition_key is None and isinstance(data, dict):
        partition_key = _str(data.get("conversationId"))
    when = event.get_time()
    attributes = {k: str(v) for k, v in event.get_attributes().items()}
    return PlatformEvent(
        id=event.get_id(), type=event.get_type(), source=event.get_source(),
        account_id=account_id, skill_id=_str(event.get_extension(SKILL_ATTR)),
        partition_key=partition_key,
        time_ms=int(when.timestamp() * 1000) if when is not None else None,
        data=data, mode="binary" if binary else "structured", attributes=attributes)


def make(event_type: str, account_id: str, data: Any, *, event_id: str | None = None,
         skill_id: str | None = None, partition_key: str | None = None,
         source: str = "/fnbus/test", binary: bool = True) -> ce_kafka.KafkaMessage:
    """Build a platform event as a Kafka message (for producers, tools and tests)."""
    attributes: dict[str, Any] = {"type": event_type, "source": source, ACCOUNT_ATTR: account_id}
    if event_id is not None:
        attributes["id"] = event_id
    if skill_id is not None:
        attributes[SKILL_ATTR] = skill_id
    if partition_key is not None:
        attributes[PARTITION_ATTR] = partition_key
    event = CloudEvent(attributes=attributes, data=data)
    return ce_kafka.to_binary_event(event) if binary else ce_kafka.to_structured_event(event)
