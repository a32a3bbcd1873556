"""The one place that names Kafka topics and knows how to create them.

Names take a prefix (``FNBUS_TOPIC_PREFIX``) so tests can run against a shared
broker without seeing each other's messages.

Message sizes, one number everywhere (:data:`MAX_MESSAGE_BYTES`, 2 MiB): every
topic is created with ``max.message.bytes`` of that size, the producer's
``max_request_size`` is the same (a bigger record is refused before it is
queued), and the local broker's ``message.max.bytes`` matches
(deploy/local/infra.sh). What travels fits with room to spare: a lambda's
result is capped at ``FNBUS_MAX_RESULT_BYTES`` (1 MiB; a bigger one becomes the
error ``…handler.result-too-large``), request bodies at 1 MiB by the gateway,
logs at 6,000 characters per invocation and error texts at a few KiB.
Topics created before this setting keep the broker's default (1 MiB); raise
theirs with ``kafka-configs.sh --alter --entity-type topics --entity-name <topic>
--add-config max.message.bytes=2097152``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)

# Delays of the non-blocking retry topics, in seconds. A retry goes to the
# smallest delay topic that is >= the backoff the policy asks for.
RETRY_DELAYS_S = (1, 10, 60, 300)

#: Largest record on any of our topics, in bytes (see the module docstring).
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
#: Header of every activation record: its source (an ``EventSource`` value), so that a
#: reader interested in one source skips the others without parsing them.
SOURCE_HEADER = "fnbus-source"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None
    configs: dict[str, str] = field(default_factory=dict)

    def new_topic(self) -> NewTopic:
        configs = {"max.message.bytes": str(MAX_MESSAGE_BYTES), **self.configs}
        if self.compacted:
            configs["cleanup.policy"] = "compact"
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return NewTopic(self.name, self.partitions, 1, topic_configs=configs)


class Topics:
    """Topic names for one prefix. ``Topics("fnbus").invocations == "fnbus.invocations"``."""

    def __init__(self, prefix: str = "fnbus") -> None:
        self.prefix = prefix

    def _n(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    @property
    def invocations(self) -> str:
        return self._n("invocations")

    def retry(self, delay_s: int) -> str:
        return self._n(f"invocations.retry.{delay_s}s")

    @property
    def dlq(self) -> str:
        return self._n("invocations.dlq")

    def replies(self, gateway_instance: str) -> str:
        """Each gateway instance reads only its own reply topic."""
        return self._n(f"replies.{gateway_instance}")

    @property
    def activations(self) -> str:
        return self._n("activations")

    @property
    def logs(self) -> str:
        return self._n("logs")

    @property
    def deploy_requests(self) -> str:
        return self._n("deploy-requests")

    @property
    def deployments(self) -> str:
        return self._n("deployments")

    @property
    def lambda_changes(self) -> str:
        return self._n("lambda-changes")

    @property
    def platform_events(self) -> str:
        return self._n("platform-events")

    @property
    def quarantine(self) -> str:
        return self._n("platform-events.quarantine")

    def group(self, role: str) -> str:
        """Consumer group id of ``role``; the prefix keeps stacks sharing a broker apart."""
        return f"{self.prefix}.{role}"

    def specs(self) -> list[TopicSpec]:
        """Every shared topic with its partition count and cleanup policy."""
        week_ms = 7 * 24 * 3600 * 1000
        specs = [
            # Keyed by lambda id: a lambda's requests meet the same invoker's warm pool.
            TopicSpec(self.invocations, 8),
            TopicSpec(self.dlq, 1, retention_ms=2 * week_ms),
            TopicSpec(self.activations, 4),
            TopicSpec(self.logs, 4),
            TopicSpec(self.deploy_requests, 2),
            TopicSpec(self.deployments, 2),
            # Full current state per lambda id; readers rebuild caches from it.
            TopicSpec(self.lambda_changes, 4, compacted=True),
            TopicSpec(self.platform_events, 4),
            TopicSpec(self.quarantine, 1, retention_ms=2 * week_ms),
        ]
        specs += [TopicSpec(self.retry(d), 4) for d in RETRY_DELAYS_S]
        return specs

    def reply_spec(self, gateway_instance: str) -> TopicSpec:
        # Replies matter only while the caller waits: keep them an hour.
        return TopicSpec(self.replies(gateway_instance), 1, retention_ms=3600 * 1000)


async def ensure_topics(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; return the names that were created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        try:
            await admin.create_topics([s.new_topic() for s in missing])
        except TopicAlreadyExistsError:
            # Another process created one between our list and create: fine.
            pass
        # Creation is asynchronous in the broker: wait until the metadata shows them,
        # so a caller can use them at once.
        names = {s.name for s in missing}
        for _ in range(100):
            if names <= set(await admin.list_topics()):
                break
            await asyncio.sleep(0.1)
        log.info("created topics", extra={"topics": sorted(names)})
        return [s.name for s in missing]
    finally:
        await admin.close()
