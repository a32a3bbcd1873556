"""Helpers made cheaper for the invoke path: same answers as the code they replace."""

from __future__ import annotations

import os
import sys
import unicodedata
import uuid

from aiokafka.partitioner import DefaultPartitioner

from fnbus.kafka import KeyPartitioner
from fnbus.schemas import new_id
from fnbus.service import has_control_characters


def test_control_characters_are_exactly_unicodes_category_cc() -> None:
    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        assert has_control_characters(f"a{ch}b") == (unicodedata.category(ch) == "Cc"), hex(code)
    assert not has_control_characters("/api/v1/accounts/a/lambdas/ü-λ/invoke")


def test_activation_ids_are_distinct_version_4_uuids() -> None:
    ids = [new_id() for _ in range(3 * 4096 // 16 + 7)]  # across several pool refills
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_id()  # the parent holds a pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, ",".join(new_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = set(os.read(read, 4096).decode().split(","))
    os.close(read)
    parent = {new_id() for _ in range(4)}
    assert len(child) == 4 and not child & parent


def test_records_land_where_aiokafkas_default_partitioner_puts_them() -> None:
    ours, theirs = KeyPartitioner(remember=8), DefaultPartitioner()
    partitions = list(range(8))
    keys = [new_id().encode() for _ in range(50)] + [b"lambda-1", b"", b"x" * 7]
    for key in keys * 2:  # the second pass is answered from memory (and past its size)
        assert ours(key, partitions, partitions) == theirs(key, partitions, partitions)
    assert ours(b"anything", [0], [0]) == 0
    assert ours(None, partitions, [3]) == 3  # no key: one of the available partitions
