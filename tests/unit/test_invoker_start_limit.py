"""StartLimited (services/invoker/app.py): bounded container starts, calls' starts first."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fnbus.sandbox import LABEL_LAMBDA, ContainerHandle
from services.invoker.app import StartLimited


class SlowStarts:
    """Records starts; each takes until the test releases it."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.running = 0
        self.peak = 0
        self.gates: dict[str, asyncio.Event] = {}

    async def start(self, image: str, labels: dict[str, str]) -> ContainerHandle:
        name = labels["name"]
        self.started.append(name)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.gates.setdefault(name, asyncio.Event()).wait()
        finally:
            self.running -= 1
        return ContainerHandle(id=name, name=name, image=image, socket_dir=Path("/nonexistent"))

    def finish(self, name: str) -> None:
        self.gates.setdefault(name, asyncio.Event()).set()

    async def kill(self, handle: ContainerHandle) -> None: ...
    async def remove(self, handle: ContainerHandle) -> None: ...
    async def exit_reason(self, handle: ContainerHandle) -> str | None: return None
    async def seal(self, handle: ContainerHandle) -> None: ...
    async def process_count(self, handle: ContainerHandle) -> int | None: return 1


def prewarm(name: str) -> dict[str, str]:
    return {"name": name, "fnbus.prewarmed": "true"}


def for_call(name: str) -> dict[str, str]:
    return {"name": name, LABEL_LAMBDA: "lambda-1"}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_at_most_limit_starts_run_at_once() -> None:
    engine = SlowStarts()
    limited = StartLimited(engine, 2)
    tasks = [asyncio.create_task(limited.start("img", for_call(f"c{n}"))) for n in range(5)]
    await settle()
    assert engine.started == ["c0", "c1"]
    for n in range(5):
        engine.finish(f"c{n}")
    handles = await asyncio.gather(*tasks)
    assert [h.name for h in handles] == [f"c{n}" for n in range(5)]
    assert engine.peak == 2


async def test_a_start_a_call_waits_for_goes_before_pre_warming() -> None:
    engine = SlowStarts()
    limited = StartLimited(engine, 1)
    first = asyncio.create_task(limited.start("img", prewarm("p0")))
    await settle()
    queued = [asyncio.create_task(limited.start("img", prewarm("p1"))),
              asyncio.create_task(limited.start("img", for_call("c0"))),
              asyncio.create_task(limited.start("img", for_call("c1")))]
    await settle()
    for name in ("p0", "c0", "c1", "p1"):
        engine.finish(name)
    await asyncio.gather(first, *queued)
    # Calls' containers in their order, the pre-warm last.
    assert engine.started == ["p0", "c0", "c1", "p1"]


async def test_a_cancelled_wait_does_not_lose_the_slot() -> None:
    engine = SlowStarts()
    limited = StartLimited(engine, 1)
    first = asyncio.create_task(limited.start("img", for_call("c0")))
    await settle()
    gone = asyncio.create_task(limited.start("img", for_call("c1")))
    later = asyncio.create_task(limited.start("img", for_call("c2")))
    await settle()
    gone.cancel()
    engine.finish("c0")
    engine.finish("c2")
    await asyncio.gather(first, later)
    assert gone.cancelled()
    assert engine.started == ["c0", "c2"]
    # The slot came back: another start runs at once.
    engine.finish("c3")
    assert (await asyncio.wait_for(limited.start("img", for_call("c3")), 1)).name == "c3"


async def test_pre_warming_leaves_a_slot_for_calls() -> None:
    engine = SlowStarts()
    limited = StartLimited(engine, 2)
    warm = [asyncio.create_task(limited.start("img", prewarm(f"p{n}"))) for n in range(2)]
    await settle()
    assert engine.started == ["p0"]  # the second slot stays free for a call
    call = asyncio.create_task(limited.start("img", for_call("c0")))
    await settle()
    assert engine.started == ["p0", "c0"]
    for name in ("p0", "p1", "c0"):
        engine.finish(name)
    await asyncio.gather(call, *warm)
    assert engine.started == ["p0", "c0", "p1"]
