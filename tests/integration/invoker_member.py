"""A dispatcher in a process of its own, for tests that kill it with SIGKILL.

    python -m tests.integration.invoker_member BOOTSTRAP TOPIC GROUP INSTANCE_ID

Prints ``assigned <partitions>`` after each assignment and ``ran <value>`` for
each record it handles, one line each, flushed.
"""

from __future__ import annotations

import asyncio
import sys

from aiokafka import ConsumerRecord

from services.invoker.dispatch import Dispatcher


class _Printing(Dispatcher):
    async def on_partitions_assigned(self, assigned: list) -> None:  # type: ignore[type-arg]
        await super().on_partitions_assigned(assigned)
        print("assigned", sorted(tp.partition for tp in assigned), flush=True)


async def main(bootstrap: str, topic: str, group: str, instance: str) -> None:
    async def handler(record: ConsumerRecord) -> None:
        print("ran", record.value.decode(), flush=True)

    dispatcher = _Printing(bootstrap, [topic], group_id=group, handler=handler,
                           group_instance_id=instance, client_id=instance)
    await dispatcher.start()
    try:
        await dispatcher.run()
    finally:
        await dispatcher.stop()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
