"""Scheduler service: cron schedules → invocation requests (one leader at a time).

Every instance serves the internal API, follows lambda changes (deleting the
schedules of undeployed lambdas) and records results; only the instance that
holds the lease in PostgreSQL fires. See docs/scheduler.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from fnbus import reports, resources
from fnbus.config import Settings
from fnbus.lambda_cache import LambdaCache
from fnbus.service import TaskGroup, create_service_app
from fnbus.topics import Topics, ensure_topics
from services.scheduler import api
from services.scheduler.clock import Clock, SystemClock, clock_for
from services.scheduler.firer import Firer
from services.scheduler.lease import Lease
from services.scheduler.options import SchedulerOptions
from services.scheduler.store import Schedules
from services.scheduler.watch import ResultHandler, UndeployWatcher


def create_app(settings: Settings, options: SchedulerOptions | None = None,
               clock: Clock | None = None, lease_clock: Clock | None = None) -> FastAPI:
    opts = options or SchedulerOptions()
    schedule_clock = clock or clock_for(opts.seconds_per_minute)
    topics = Topics(settings.topic_prefix)
    instance = settings.resolved_instance_id("scheduler")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        health = app.state.health
        await ensure_topics(settings.kafka_bootstrap, topics.specs())
        async with contextlib.AsyncExitStack() as stack:
            pool = await stack.enter_async_context(resources.database(settings, health))
            producer = await stack.enter_async_context(
                resources.producer(settings, health, "fnbus-scheduler"))
            cache = LambdaCache(settings.kafka_bootstrap, topics.lambda_changes)
            schedules = Schedules(pool, cache, schedule_clock, opts,
                                  max_per_lambda=settings.max_schedules_per_lambda)
            watcher = UndeployWatcher(cache, schedules)
            watcher.attach()
            stack.callback(watcher.detach)
            await cache.start()
            stack.push_async_callback(cache.stop)
            health.add("lambda_cache", cache.check)
            await watcher.reconcile()
            results = await stack.enter_async_context(resources.consumer(
                settings, health, [topics.activations],
                group_id=Topics(settings.topic_prefix).group("scheduler"), client_id="fnbus-scheduler",
                check_name="activations_consumer", batched=True))
            loops = TaskGroup()
            stopping = asyncio.Event()
            stack.push_async_callback(loops.stop, 5.0)
            stack.callback(stopping.set)
            stack.callback(results.request_stop)
            loops.spawn(results.run(ResultHandler(schedules)), "scheduler-results")
            loops.spawn(watcher.run(stopping), "scheduler-undeploy")
            loops.spawn(reports.ReportRunner(pool, settings).run(stopping), "reports")
            health.add("loops", loops.check)
            lease = Lease(pool, instance, lease_clock or SystemClock(),
                          ttl_ms=opts.lease_ttl_ms, renew_ms=opts.lease_renew_ms)
            firer = Firer(schedules, producer, lease, schedule_clock, opts, topics.invocations)
            firer.start()
            stack.push_async_callback(firer.stop)
            health.add("firer", firer.check)
            app.state.schedules = schedules
            app.state.clock = schedule_clock
            app.state.firer = firer
            app.state.lease = lease
            yield

    app = create_service_app("scheduler", settings, lifespan)
    app.include_router(api.router)
    return app
