"""services/invoker/app.py helpers for a quick return after a crash: sync first, join once warm."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import ConsumerRecord

from services.invoker.app import _first_prewarmed, _is_sync


def record(value: bytes) -> ConsumerRecord:
    return ConsumerRecord(topic="t", partition=0, offset=0, timestamp=0, timestamp_type=0,
                          key=b"k", value=value, checksum=None, serialized_key_size=1,
                          serialized_value_size=len(value), headers=())


def test_a_request_with_a_reply_topic_is_a_waiting_caller() -> None:
    assert _is_sync(record(json.dumps({"account_id": "a", "reply_to": "fnbus.replies.gw-1"}).encode()))
    assert not _is_sync(record(json.dumps({"account_id": "a", "reply_to": None}).encode()))
    assert not _is_sync(record(json.dumps({"account_id": "a"}).encode()))
    assert not _is_sync(record(b"not json"))
    assert not _is_sync(record(b"[1, 2]"))


class Pool:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def stats(self) -> dict[str, int]:
        return self.counts


async def test_joining_waits_for_the_first_pre_warmed_runner() -> None:
    pool: Any = Pool()
    waiting = asyncio.create_task(_first_prewarmed(pool, 5))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    pool.counts["prewarmed"] = 1
    assert await asyncio.wait_for(waiting, 1) is True


async def test_joining_does_not_wait_forever() -> None:
    pool: Any = Pool()
    assert await _first_prewarmed(pool, 0.2) is False
