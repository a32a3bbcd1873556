"""Placement and eviction for the container pool, as pure functions over plain data.

The pool holds three kinds of containers (ARCHITECTURE.md):

1. *pre-warmed*: a runner of a runtime with no code yet, ready for any lambda of
   that runtime without declared dependencies;
2. *warm*: initialised with one lambda version's code, free for its next call;
3. *busy*: running one invocation (never shared).

:func:`place` decides where an invocation goes; :func:`pick_evictions` and
:func:`reap_idle` decide what to remove. Nothing here touches Docker or time:
the caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class VersionKey:
    """A lambda version: warm containers are kept per key, never shared across keys."""

    account_id: str
    lambda_id: str
    version: int


@dataclass(frozen=True)
class Slot:
    """What the placement logic needs to know about one container."""

    id: str
    runtime: str
    key: VersionKey | None  # None while pre-warmed
    busy: bool
    last_used: float


class Placement(str, Enum):
    WARM = "warm"  # reuse a free container of this version
    PREWARMED = "prewarmed"  # initialise a pre-warmed runner with the code
    COLD = "cold"  # start a new container from the version's image
    FULL = "full"  # at the cap and nothing evictable: wait
    QUEUE = "queue"  # enough of this version's containers are starting: wait for one to free up


@dataclass(frozen=True)
class Decision:
    placement: Placement
    slot_id: str | None = None  # the container to use (WARM, PREWARMED)
    evict: tuple[str, ...] = ()  # containers to remove first (COLD at the cap)


def place(slots: Iterable[Slot], key: VersionKey, runtime: str, *, can_use_prewarmed: bool,
          max_containers: int, starting: int = 0, max_starting: int = 0) -> Decision:
    """Where the next invocation of ``key`` runs.

    Preference: the most recently used free warm container of the same version
    (its caches are hottest), then a pre-warmed runner of the runtime, then a new
    container — evicting the least recently used free warm container of another
    version when the pool is at its cap.

    ``starting`` is how many new containers of ``key`` are being started for earlier
    calls. At ``max_starting`` (0: no limit) the call waits instead (QUEUE) for the
    first of this version's containers to free up: a burst of calls then grows the
    pool a few containers at a time, while calls that would each have waited for
    their own container start (hundreds of ms, all competing for the same cores)
    take the warm ones as soon as they finish.
    """
    slots = list(slots)
    warm = [s for s in slots if s.key == key and not s.busy]
    if warm:
        return Decision(Placement.WARM, max(warm, key=lambda s: s.last_used).id)
    if can_use_prewarmed:
        pre = [s for s in slots if s.key is None and s.runtime == runtime and not s.busy]
        if pre:
            return Decision(Placement.PREWARMED, pre[0].id)
    if max_starting and starting >= max_starting:
        return Decision(Placement.QUEUE)
    if len(slots) < max_containers:
        return Decision(Placement.COLD)
    victims = pick_evictions(slots, len(slots) - max_containers + 1)
    if victims:
        return Decision(Placement.COLD, evict=tuple(victims))
    return Decision(Placement.FULL)


def pick_evictions(slots: Iterable[Slot], count: int) -> list[str]:
    """Up to ``count`` free containers, least recently used first (warm before pre-warmed)."""
    free = [s for s in slots if not s.busy]
    free.sort(key=lambda s: (s.key is None, s.last_used))
    return [s.id for s in free[:count]] if len(free) >= count else []


def reap_idle(slots: Iterable[Slot], now: float, idle_ttl_s: float) -> list[str]:
    """Free warm containers unused for longer than ``idle_ttl_s`` (pre-warmed ones stay)."""
    return [s.id for s in slots
            if s.key is not None and not s.busy and now - s.last_used > idle_ttl_s]


def stale_versions(slots: Iterable[Slot], lambda_id: str, keep_version: int | None) -> list[str]:
    """Free containers of ``lambda_id`` whose version is no longer the deployed one."""
    return [s.id for s in slots
            if s.key is not None and s.key.lambda_id == lambda_id and not s.busy
            and s.key.version != keep_version]


def prewarm_deficit(slots: Iterable[Slot], runtime: str, target: int, starting: int) -> int:
    """How many pre-warmed runners of ``runtime`` to start to reach ``target``."""
    have = sum(1 for s in slots if s.key is None and s.runtime == runtime and not s.busy)
    return max(0, target - have - starting)
