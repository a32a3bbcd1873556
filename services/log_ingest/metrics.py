"""Prometheus metrics of log-ingest (served on /metrics by fnbus.service).

Every metric has a ``kind`` label: ``activation`` or ``log``.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from services.log_ingest.records import Kind

RECORDS_INGESTED = Counter(
    "fnbus_log_ingest_records_ingested_total",
    "Records written to PostgreSQL as new rows",
    ["kind"],
)
RECORDS_DUPLICATE = Counter(
    "fnbus_log_ingest_records_duplicate_total",
    "Records that were already stored (redelivery), so no row was added",
    ["kind"],
)
RECORDS_MALFORMED = Counter(
    "fnbus_log_ingest_records_malformed_total",
    "Records skipped because they can never be stored (bad JSON, schema or values)",
    ["kind"],
)
BATCH_SIZE = Histogram(
    "fnbus_log_ingest_batch_size",
    "Records per batch taken from Kafka",
    ["kind"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
BATCH_WRITE_SECONDS = Histogram(
    "fnbus_log_ingest_batch_write_seconds",
    "Time to make one batch durable in PostgreSQL, retries included",
    ["kind"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60),
)
WRITE_FAILURES = Counter(
    "fnbus_log_ingest_write_failures_total",
    "Failed attempts to write a batch (each is retried with backoff)",
    ["kind"],
)


def init_labels() -> None:
    """Create every kind's series at zero, so dashboards see them before the first record."""
    for kind in Kind:
        for metric in (RECORDS_INGESTED, RECORDS_DUPLICATE, RECORDS_MALFORMED, WRITE_FAILURES):
            metric.labels(kind.value)
        for histogram in (BATCH_SIZE, BATCH_WRITE_SECONDS):
            histogram.labels(kind.value)


init_labels()
