"""Settings from the environment (prefix ``FNBUS_``) with defaults that work locally.

One :class:`Settings` object is built in ``main()``/``create_app()`` and handed
down; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]

SERVICE_NAMES = ("gateway", "registry", "deployer", "invoker", "scheduler", "log_ingest")

DEFAULT_PORTS = {
    "gateway": 8080,
    "registry": 8081,
    "deployer": 8082,
    "invoker": 8083,
    "scheduler": 8084,
    "log_ingest": 8085,
}

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_DATABASE_URL = "postgresql://fnbus:fnbus@127.0.0.1:5432/fnbus"
# Development-only secrets: `make up` writes real random values into .fnbus/secrets.env.
DEFAULT_DEV_SECRET = "fnbus-development-secret-change-me-in-production"


# `make up` writes random secrets here; real environment variables win over it.
SECRETS_ENV_FILE = Path(os.environ.get("FNBUS_HOME", REPO_ROOT / ".fnbus")) / "secrets.env"


class Settings(BaseSettings):
    """Everything a service needs to find its peers. Units are in the names."""

    model_config = SettingsConfigDict(
        env_prefix="FNBUS_", extra="ignore", env_file=SECRETS_ENV_FILE, env_file_encoding="utf-8"
    )

    home: Path = Field(default=REPO_ROOT / ".fnbus", description="state directory")
    instance_id: str = Field(default="", description="unique per process; defaults to host-pid")

    bind_host: str = "127.0.0.1"
    gateway_port: int = DEFAULT_PORTS["gateway"]
    registry_port: int = DEFAULT_PORTS["registry"]
    deployer_port: int = DEFAULT_PORTS["deployer"]
    invoker_port: int = DEFAULT_PORTS["invoker"]
    scheduler_port: int = DEFAULT_PORTS["scheduler"]
    log_ingest_port: int = DEFAULT_PORTS["log_ingest"]

    registry_url: str = "http://127.0.0.1:8081"
    log_ingest_url: str = "http://127.0.0.1:8085"
    scheduler_url: str = "http://127.0.0.1:8084"
    public_url: str = "http://127.0.0.1:8080"

    kafka_bootstrap: str = DEFAULT_KAFKA_BOOTSTRAP
    topic_prefix: str = "fnbus"
    kafka_request_timeout_ms: int = 30_000

    database_url: str = DEFAULT_DATABASE_URL
    db_pool_min: int = 1
    db_pool_max: int = 10

    docker_host: str = "unix:///var/run/docker.sock"
    # Host directory for the runner sockets; containers get a subdirectory
    # bind-mounted at /run/fnbus. Empty = <home>/sockets.
    socket_dir: str = ""
    # Sandbox of every lambda container (the original platform's limits).
    lambda_memory_mb: int = 256
    lambda_cpus: float = 0.5
    lambda_pids_limit: int = 64
    lambda_tmpfs_mb: int = 64
    lambda_timeout_ms: int = 30_000
    # Invoker pool.
    prewarm_per_runtime: int = 2
    max_containers: int = 32
    # New containers of one lambda version started at once; further calls of that version
    # wait for one of its containers to free up (0: no limit; docs/architecture notes).
    max_starting_per_version: int = Field(default=2, ge=0)
    max_concurrent_per_account: int = 16
    idle_container_ttl_s: int = 300
    runtime_image_node: str = "fnbus/runtime-node:latest"
    runtime_image_python: str = "fnbus/runtime-python:latest"

    service_token: str = DEFAULT_DEV_SECRET
    jwt_secret: str = DEFAULT_DEV_SECRET
    secrets_key: str = DEFAULT_DEV_SECRET
    jwt_ttl_s: int = 3600

    # CPU priority of the invoker, log-ingest and the deployer against the gateway on a
    # shared machine (fnbus.priority, docs/scaling.md): their nice value; 0 turns it off.
    background_nice: int = Field(default=10, ge=0, le=19)

    log_level: str = "INFO"
    log_json: bool = True

    # "development" (the default) or "production": production refuses built-in secrets.
    env: str = "development"

    # -- toolbelt egress (docs/toolbelt.md) -------------------------------------------
    # CIDRs exempt from the private-address policy (development: `make up` sets
    # 127.0.0.0/8). The platform's own ports stay refused whatever this says.
    egress_exempt_cidrs: list[str] = Field(default_factory=list)
    egress_requests_per_s: float = 20.0  # per function, the original's limit
    egress_max_response_bytes: int = 10 * 1024 * 1024
    egress_max_redirects: int = 10
    # A PEM bundle trusted for lambdas' HTTPS in addition to the system store (private CAs).
    egress_ca_file: str = ""
    # Where LpClient resolves LivePerson service domains (empty = not available).
    csds_url: str = ""

    # -- hardening (docs/security.md) ---------------------------------------------------
    max_result_bytes: int = 1024 * 1024  # a larger result fails with its own error code
    deploy_concurrency: int = 2  # deploys of different accounts run side by side
    deploy_init_timeout_ms: int = 10_000  # smoke init of a new version
    max_dependencies_bytes: int = 50 * 1024 * 1024
    keep_deployments: int = 5  # images of older deployments are removed
    max_schedules_per_lambda: int = 10
    # Quotas and retention.
    account_invocations_per_s: float = 100.0  # per account at the gateway, then 429 + Retry-After
    account_invocations_burst: int = 200
    account_async_backlog_max: int = 10_000  # accepted, not yet finished async invocations
    retention_days: int = 7  # activations and log lines; the original's log window
    # Retired secrets keys, still able to open values sealed with them (rotation).
    secrets_old_keys: list[str] = Field(default_factory=list)

    # Email reports over SMTP (`make up` runs a local sink that keeps .eml files).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = "fnbus@localhost"
    prometheus_port: int = 9090

    # /metrics answers any client when true; otherwise loopback clients or the service token.
    metrics_public: bool = False

    # -- scale-out of the local stack (docs/scaling.md) ----------------------------------
    # `make up INVOKERS=3 GATEWAYS=2`: invoker processes in one consumer group, gateway
    # processes sharing gateway_port (SO_REUSEPORT). Replica n of the invoker serves its
    # own HTTP on invoker_port + (n-1) * replica_port_step; with several gateways,
    # replica n answers /healthz and /metrics for itself on gateway_port + n * step.
    invokers: int = Field(default=1, ge=1, le=9)
    gateways: int = Field(default=1, ge=1, le=9)
    replica_port_step: int = Field(default=100, ge=1)

    # -- Kafka producer tuning (bench/README.md, "Kafka tuning": the figures behind each) --
    # Records a caller waits for (invocation requests, replies, state changes): linger 0.
    kafka_linger_ms: int = Field(default=0, ge=0)
    # Records queued and acknowledged in bulk (activation records, log lines, scheduler
    # fires: Producer.send_nowait) through a second client with their own linger and
    # batch size; None = one client for everything, as before.
    kafka_bulk_linger_ms: int | None = Field(default=None, ge=0)
    kafka_bulk_batch_bytes: int = Field(default=16384, ge=1024)

    # -- invoker recovery (docs/containers.md, "Restarts and static membership") ---------
    # The invoker's consumer-group session: a member that stops heartbeating and does not
    # come back loses its partitions after this long (one relaunched with the same
    # instance id takes them back at once).
    invoker_session_timeout_ms: int = Field(default=10_000, ge=6_000, le=300_000)
    # Container starts in flight at once (0 = the host's CPU count): a burst of cold
    # starts all at once is slower for each of them than a few at a time.
    invoker_container_starts: int = Field(default=0, ge=0)

    def sockets_path(self) -> Path:
        return Path(self.socket_dir) if self.socket_dir else self.home / "sockets"

    def port_of(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))

    def url_of(self, service: str) -> str:
        return f"http://{self.bind_host}:{self.port_of(service)}"

    def resolved_instance_id(self, service: str) -> str:
        if self.instance_id:
            return self.instance_id
        import socket

        return f"{service}-{socket.gethostname()}-{os.getpid()}"
