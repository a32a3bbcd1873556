"""The scheduler's own knobs (environment prefix ``FNBUS_SCHEDULER_``), with their defaults.

Shared settings (database, Kafka, ports) stay in :class:`fnbus.config.Settings`.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_PAYLOAD_CHARS = 8_000  # the original platform's limit on a schedule's payload
MAX_SCHEDULED_LAMBDAS = 10  # distinct lambdas with schedules, per account
MAX_SCHEDULES_PER_LAMBDA = 10  # schedules of one lambda (Settings.max_schedules_per_lambda)


class SchedulerOptions(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FNBUS_SCHEDULER_", extra="ignore")

    # Test/dev knob: real seconds per scheduler minute (60 = real time). With 3,
    # "* * * * *" fires every 3 s; lease and catch-up keep their meaning in
    # scheduler minutes, so keep lease_ttl_ms well under one scaled minute.
    seconds_per_minute: float = 60.0
    lease_ttl_ms: int = 10_000  # real ms a leader holds the lease without renewing
    lease_renew_ms: int = 3_000  # real ms between renewals (and standby attempts)
    catch_up_ms: int = 60_000  # scheduler ms a due minute may be late and still fire
    # Scheduler ms before a minute boundary at which the leader records the coming
    # minute's fires, so that at the boundary it only has to produce them.
    prepare_ahead_ms: int = 5_000
    fire_batch: int = 1_000  # schedules locked, fired and advanced per transaction
    reproduce_after_ms: int = 5_000  # real ms before an unacknowledged fire is produced again
    fires_retention_ms: int = 2 * 3600 * 1000  # scheduler ms of fire history kept
