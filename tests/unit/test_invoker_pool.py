"""Placement and eviction of the invoker's container pool (pure functions)."""

from __future__ import annotations

from services.invoker.pool import (
    Placement,
    Slot,
    VersionKey,
    pick_evictions,
    place,
    prewarm_deficit,
    reap_idle,
    stale_versions,
)

K1 = VersionKey("acc1", "lam1", 1)
K2 = VersionKey("acc2", "lam2", 1)


def slot(id: str, key: VersionKey | None, busy: bool = False, used: float = 0.0,
         runtime: str = "nodejs") -> Slot:
    return Slot(id, runtime, key, busy, used)


def test_prefers_most_recent_free_warm_container_of_same_version() -> None:
    slots = [slot("a", K1, used=1), slot("b", K1, used=5), slot("c", K1, busy=True, used=9),
             slot("p", None)]
    d = place(slots, K1, "nodejs", can_use_prewarmed=True, max_containers=10)
    assert (d.placement, d.slot_id) == (Placement.WARM, "b")


def test_never_uses_another_versions_or_accounts_container() -> None:
    slots = [slot("x", K2), slot("y", VersionKey("acc1", "lam1", 2))]
    d = place(slots, K1, "nodejs", can_use_prewarmed=False, max_containers=10)
    assert d.placement is Placement.COLD and d.slot_id is None


def test_prewarmed_only_for_the_same_runtime_and_when_allowed() -> None:
    slots = [slot("p-py", None, runtime="python"), slot("p-node", None)]
    d = place(slots, K1, "nodejs", can_use_prewarmed=True, max_containers=10)
    assert (d.placement, d.slot_id) == (Placement.PREWARMED, "p-node")
    d = place(slots, K1, "nodejs", can_use_prewarmed=False, max_containers=10)
    assert d.placement is Placement.COLD


def test_at_cap_evicts_least_recently_used_free_container() -> None:
    slots = [slot("old", K2, used=1), slot("new", K2, used=8), slot("busy", K2, busy=True)]
    d = place(slots, K1, "nodejs", can_use_prewarmed=False, max_containers=3)
    assert d.placement is Placement.COLD and d.evict == ("old",)


def test_at_cap_with_everything_busy_waits() -> None:
    slots = [slot("a", K2, busy=True), slot("b", K2, busy=True)]
    d = place(slots, K1, "nodejs", can_use_prewarmed=True, max_containers=2)
    assert d.placement is Placement.FULL


def test_enough_starts_of_a_version_make_further_calls_queue() -> None:
    # Two of K1's containers run, two more are starting: the next call waits for one.
    slots = [slot("a", K1, busy=True), slot("b", K1, busy=True), slot("s1", None, busy=True),
             slot("s2", None, busy=True)]
    d = place(slots, K1, "nodejs", can_use_prewarmed=False, max_containers=10, starting=2, max_starting=2)
    assert d.placement is Placement.QUEUE
    # Below the limit (or without one) it starts another.
    d = place(slots, K1, "nodejs", can_use_prewarmed=False, max_containers=10, starting=1, max_starting=2)
    assert d.placement is Placement.COLD
    d = place(slots, K1, "nodejs", can_use_prewarmed=False, max_containers=10, starting=5, max_starting=0)
    assert d.placement is Placement.COLD
    # A free warm container or a pre-warmed runner is taken whatever is starting.
    d = place([*slots, slot("p", None)], K1, "nodejs", can_use_prewarmed=True, max_containers=10,
              starting=2, max_starting=2)
    assert (d.placement, d.slot_id) == (Placement.PREWARMED, "p")
    d = place([*slots, slot("w", K1)], K1, "nodejs", can_use_prewarmed=True, max_containers=10,
              starting=2, max_starting=2)
    assert (d.placement, d.slot_id) == (Placement.WARM, "w")


def test_evictions_prefer_warm_over_prewarmed() -> None:
    slots = [slot("pre", None, used=0), slot("warm", K2, used=5)]
    assert pick_evictions(slots, 1) == ["warm"]
    assert pick_evictions(slots, 3) == []


def test_reaps_only_idle_warm_containers() -> None:
    slots = [slot("idle", K1, used=0), slot("fresh", K1, used=95), slot("busy", K2, busy=True),
             slot("pre", None, used=0)]
    assert reap_idle(slots, now=100, idle_ttl_s=30) == ["idle"]


def test_stale_versions_after_redeploy() -> None:
    slots = [slot("v1", K1), slot("v2", VersionKey("acc1", "lam1", 2)), slot("other", K2)]
    assert stale_versions(slots, "lam1", keep_version=2) == ["v1"]
    assert sorted(stale_versions(slots, "lam1", keep_version=None)) == ["v1", "v2"]


def test_prewarm_deficit_counts_starting_ones() -> None:
    slots = [slot("p", None), slot("w", K1)]
    assert prewarm_deficit(slots, "nodejs", target=3, starting=1) == 1
    assert prewarm_deficit(slots, "python", target=2, starting=0) == 2
