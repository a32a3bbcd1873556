"""CloudEvents from Kafka records: both content modes, and the reasons for refusing."""

from __future__ import annotations

import json

import pytest

from fnbus import cloud_events as ce


def _parse(message: ce.ce_kafka.KafkaMessage) -> ce.PlatformEvent:
    key = message.key.encode() if isinstance(message.key, str) else message.key
    return ce.parse(message.value, list(message.headers.items()), key)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "structured"])
def test_both_modes_give_the_same_event(binary: bool) -> None:
    message = ce.make("controllerbot_messaging_new_conversation", "acc1",
                      {"conversationId": "c-9", "text": "hi"}, event_id="e-1", skill_id="42",
                      binary=binary)
    event = _parse(message)
    assert (event.id, event.type, event.account_id, event.skill_id) == (
        "e-1", "controllerbot_messaging_new_conversation", "acc1", "42")
    assert event.data == {"conversationId": "c-9", "text": "hi"}
    assert event.partition_key == "c-9"  # from the conversation id
    assert event.mode == ("binary" if binary else "structured")
    assert event.time_ms is not None


def test_partition_key_attribute_wins_over_the_conversation_id() -> None:
    message = ce.make("t", "a", {"conversationId": "c"}, event_id="e", partition_key="pk")
    assert _parse(message).partition_key == "pk"


@pytest.mark.parametrize("value,headers,reason", [
    (b"hello", [], "not a CloudEvent"),
    (b"\xff\xfe", [], "not a CloudEvent"),
    (b"[1, 2]", [], "not a CloudEvent"),
    (json.dumps({"specversion": "1.0", "type": "t", "source": "/s", "accountid": "a"}).encode(),
     [], "missing id"),
    (json.dumps({"specversion": "1.0", "id": "1", "source": "/s", "accountid": "a"}).encode(),
     [], "not a CloudEvent"),
    (json.dumps({"specversion": "1.0", "id": "1", "type": "t", "source": "/s"}).encode(),
     [], "accountid"),
    (b"{}", [("ce_type", b"t"), ("ce_source", b"/s")], "without ce_id"),
    (b"x" * (ce.MAX_EVENT_BYTES + 1), [], "oversized"),
])
def test_invalid_records_name_their_reason(value: bytes, headers: list, reason: str) -> None:
    with pytest.raises(ce.InvalidEvent) as info:
        ce.parse(value, headers)
    assert reason in info.value.reason
