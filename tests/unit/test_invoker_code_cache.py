"""The invoker's cache of version code: bounded, least recently used dropped first."""

from __future__ import annotations

from services.invoker.manager import Code, CodeCache


def code(n: int) -> Code:
    return Code(code=f"// v{n}", env={}, can_use_prewarmed=True)


def test_least_recently_used_versions_are_dropped_beyond_the_bound() -> None:
    cache = CodeCache(max_entries=2)
    cache.put(("a", 1), code(1))
    cache.put(("a", 2), code(2))
    assert cache.get(("a", 1)) == code(1)  # used: now the most recent
    cache.put(("b", 1), code(3))
    assert len(cache) == 2
    assert cache.get(("a", 2)) is None  # the least recently used went
    assert cache.get(("a", 1)) == code(1)
    assert cache.get(("b", 1)) == code(3)
    cache.put(("b", 1), code(4))  # replacing keeps one entry
    assert len(cache) == 2 and cache.get(("b", 1)) == code(4)
