"""Log-ingest service: activation records and log lines from Kafka into PostgreSQL.

A faust-streaming app consumes ``<prefix>.activations`` and ``<prefix>.logs`` in
batches and writes them idempotently (see :mod:`.stream`, :mod:`.ingest`,
:mod:`.store`); an internal HTTP API reads them back for the gateway (:mod:`.api`).

faust shares uvicorn's event loop: the lifespan below builds the faust app while
that loop runs and starts/stops it like any other resource, so ``fnbus serve
log_ingest`` needs no special case.

Lifespan, in order: create the shared topics (before faust subscribes, so they
get the platform's partitions and settings) → open the pool (migrations) →
maintain the daily partitions (:mod:`.partitions`) → start faust. Shutdown
(SIGTERM via uvicorn) reverses it: drain and stop faust, which commits only
what is in the database, stop the maintainer, then close the pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from fnbus import resources
from fnbus.config import Settings
from fnbus.service import create_service_app
from fnbus.topics import Topics, ensure_topics
from services.log_ingest import search_api
from services.log_ingest.api import router
from services.log_ingest.ingest import BatchIngestor
from services.log_ingest.partitions import PartitionMaintainer
from services.log_ingest.search import SearchStore
from services.log_ingest.store import IngestStore
from services.log_ingest.stream import IngestStream


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        health = app.state.health
        await ensure_topics(settings.kafka_bootstrap, Topics(settings.topic_prefix).specs())
        async with contextlib.AsyncExitStack() as stack:
            pool = await stack.enter_async_context(resources.database(settings, health))
            app.state.store = store = IngestStore(pool, retention_days=settings.retention_days)
            app.state.search_store = SearchStore(pool, retention_days=settings.retention_days)
            # Partitions for today and the next days exist before the first batch lands.
            maintainer = PartitionMaintainer(pool, retention_days=settings.retention_days)
            await maintainer.run_once()
            app.state.partitions = await stack.enter_async_context(maintainer)
            stream = IngestStream(
                settings,
                BatchIngestor(store),
                client_id=settings.resolved_instance_id("log_ingest"),
            )
            app.state.ingest_stream = stream
            # Registered before start so a consumer that never came up reads as failing.
            health.add("faust_consumer", stream.check)
            await stack.enter_async_context(stream)
            yield

    app = create_service_app("log_ingest", settings, lifespan)
    app.include_router(router)
    app.include_router(search_api.router)
    return app
