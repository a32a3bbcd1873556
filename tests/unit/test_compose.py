"""The container deployment's files: docker-compose.yml, deploy/Dockerfile,
deploy/prometheus/ and deploy/grafana/.

No container registry is reachable on this workplace's machines, so the stack is
never started here. These tests read the files and check concrete values instead:
that every service is there, wired to the right peers, probed on the right port,
and that the names used (settings, CLI commands, metrics) exist in the code.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from fnbus.cli import build_parser
from fnbus.config import DEFAULT_PORTS, SERVICE_NAMES, Settings
from fnbus.service import HTTP_LATENCY, HTTP_REQUESTS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "fnbus.json"
DOCS_FILE = ROOT / "docs" / "containers.md"

IMAGE = "fnbus/server:latest"
DOCKER_SOCKET = "/var/run/docker.sock"


def host_name(service: str) -> str:
    """Compose service (and DNS) name of an fnbus service: no underscores in host names."""
    return service.replace("_", "-")


# compose name -> the name `fnbus serve` takes
FNBUS = {host_name(s): s for s in SERVICE_NAMES}
INFRA = {"kafka", "postgres"}
OBSERVABILITY = {"prometheus", "grafana"}
ONE_SHOTS = {"migrate": ["migrate"], "topics": ["topics"], "socket-dir": None}
DOCKER_USERS = {"deployer", "invoker"}

# Metrics the dashboard may use: those fnbus.service defines now, and those the
# invoker is to export (counter, histogram, gauge).
HTTP_METRICS = {"fnbus_http_requests_total", "fnbus_http_request_seconds_bucket"}
INVOKER_METRICS = {
    "fnbus_invocations_total",
    "fnbus_invocation_duration_seconds_bucket",
    "fnbus_pool_containers",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=value list form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume entry, short or long syntax."""
    mounts = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source, target = v["source"], v["target"]
        mounts.append((source, target))
    return mounts


def published(service: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(host ip, host port, container port) of every published port."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), str(p.get("published", "")), int(p["target"])))
            continue
        parts = str(p).split(":")
        ip = parts[0] if len(parts) == 3 else ""
        out.append((ip, parts[-2] if len(parts) > 1 else "", int(parts[-1])))
    return out


def depends(service: dict[str, Any]) -> dict[str, str]:
    """depends_on as {service: condition}."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


# --- services, image, commands --------------------------------------------------


def test_every_expected_service_and_nothing_else(services: dict[str, Any]) -> None:
    assert set(services) == set(FNBUS) | INFRA | OBSERVABILITY | set(ONE_SHOTS)


@pytest.mark.parametrize("name", [*FNBUS, *ONE_SHOTS])
def test_fnbus_containers_share_one_build_and_image(
    services: dict[str, Any], name: str
) -> None:
    svc = services[name]
    assert svc["image"] == IMAGE
    assert svc["build"]["context"] == "."
    assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]) == DOCKERFILE
    # One build definition, not six that could drift apart.
    assert svc["build"] == services["gateway"]["build"]


@pytest.mark.parametrize("name", list(FNBUS))
def test_each_service_serves_its_own_name(services: dict[str, Any], name: str) -> None:
    command = services[name]["command"]
    assert command == ["serve", FNBUS[name]]
    # The image's entrypoint is `fnbus`: the real CLI must accept the command.
    args = build_parser().parse_args(command)
    assert args.service == FNBUS[name]
    assert args.port is None  # the port comes from the settings, as the probes assume


def test_one_shots_run_cli_commands_once(services: dict[str, Any]) -> None:
    for name, command in ONE_SHOTS.items():
        svc = services[name]
        assert svc["restart"] == "no", name
        if command is not None:
            assert svc["command"] == command
            assert build_parser().parse_args(command).command == command[0]
    assert depends(services["migrate"]) == {"postgres": "service_healthy"}
    assert depends(services["topics"]) == {"kafka": "service_healthy"}


@pytest.mark.parametrize("name", sorted(set(FNBUS) | INFRA | OBSERVABILITY))
def test_long_running_services_restart(services: dict[str, Any], name: str) -> None:
    assert services[name]["restart"] in {"unless-stopped", "always"}


# --- health checks and start order ------------------------------------------------


@pytest.mark.parametrize("name", list(FNBUS))
def test_healthcheck_probes_own_healthz(services: dict[str, Any], name: str) -> None:
    test = services[name]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    urls = re.findall(r"http://[^'\"]+", test[3])
    assert urls == [f"http://127.0.0.1:{DEFAULT_PORTS[FNBUS[name]]}/healthz"]


class _Healthz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def healthz_server() -> Iterator[tuple[int, type[_Healthz]]]:
    handler = type("Handler", (_Healthz,), {})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1], handler
        finally:
            server.shutdown()
            thread.join()


def test_healthcheck_command_fails_on_503(
    services: dict[str, Any], healthz_server: tuple[int, type[_Healthz]]
) -> None:
    """/healthz answers 503 while a check fails: the probe must exit non-zero then."""
    port, handler = healthz_server
    snippet = services["registry"]["healthcheck"]["test"][3]
    snippet = snippet.replace(":8081/", f":{port}/")

    def probe() -> int:
        return subprocess.run([sys.executable, "-c", snippet], capture_output=True,
                              timeout=30).returncode

    handler.status = 200
    assert probe() == 0
    handler.status = 503
    assert probe() != 0


@pytest.mark.parametrize("name", sorted(INFRA | OBSERVABILITY))
def test_infrastructure_has_healthchecks(services: dict[str, Any], name: str) -> None:
    test = services[name]["healthcheck"]["test"]
    assert test[0] == "CMD" and len(test) > 1


@pytest.mark.parametrize("name", list(FNBUS))
def test_services_start_after_kafka_and_postgres_are_healthy(
    services: dict[str, Any], name: str
) -> None:
    deps = depends(services[name])
    assert deps["kafka"] == "service_healthy"
    assert deps["postgres"] == "service_healthy"
    assert deps["migrate"] == "service_completed_successfully"
    assert deps["topics"] == "service_completed_successfully"


def test_gateway_and_invoker_wait_for_the_registry(services: dict[str, Any]) -> None:
    assert depends(services["gateway"])["registry"] == "service_healthy"
    assert depends(services["invoker"])["registry"] == "service_healthy"


def test_every_dependency_exists(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for dep in depends(svc):
            assert dep in services, f"{name} depends on unknown {dep}"


# --- environment ------------------------------------------------------------------


@pytest.mark.parametrize("name", [*FNBUS, "migrate", "topics"])
def test_environment_points_at_compose_hosts(services: dict[str, Any], name: str) -> None:
    env = env_of(services[name])
    assert env["FNBUS_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["FNBUS_DATABASE_URL"] == "postgresql://fnbus:fnbus@postgres:5432/fnbus"
    assert env["FNBUS_REGISTRY_URL"] == f"http://registry:{DEFAULT_PORTS['registry']}"
    assert env["FNBUS_LOG_INGEST_URL"] == f"http://log-ingest:{DEFAULT_PORTS['log_ingest']}"
    assert env["FNBUS_SCHEDULER_URL"] == f"http://scheduler:{DEFAULT_PORTS['scheduler']}"
    assert env["FNBUS_BIND_HOST"] == "0.0.0.0"
    for url_var in ("FNBUS_REGISTRY_URL", "FNBUS_LOG_INGEST_URL", "FNBUS_SCHEDULER_URL",
                    "FNBUS_DATABASE_URL"):
        host = urlsplit(env[url_var]).hostname
        assert host in services and "_" not in host, url_var


@pytest.mark.parametrize("name", [*FNBUS, "migrate", "topics"])
def test_secrets_must_be_supplied(services: dict[str, Any], name: str) -> None:
    env = env_of(services[name])
    for var in ("FNBUS_SERVICE_TOKEN", "FNBUS_JWT_SECRET", "FNBUS_SECRETS_KEY"):
        # `${VAR:?...}`: compose refuses to start without it; no default secret.
        assert re.fullmatch(rf"\$\{{{var}:\?[^}}]+\}}", env[var]), var


def test_environment_names_are_settings_fields(services: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name in [*FNBUS, "migrate", "topics"]:
        for var in env_of(services[name]):
            # Settings ignores unknown FNBUS_ names: a typo would pass silently.
            assert var.startswith("FNBUS_"), (name, var)
            assert var.removeprefix("FNBUS_").lower() in fields, (name, var)


def test_metrics_are_public_only_where_no_port_is_published(
        compose: dict[str, Any], services: dict[str, Any]) -> None:
    for name in FNBUS:
        public = env_of(services[name])["FNBUS_METRICS_PUBLIC"]
        assert public == ("false" if services[name].get("ports") else "true"), name
    # Prometheus scrapes the gateway with the service token, handed over as a compose secret.
    assert compose["secrets"]["fnbus_service_token"] == {"environment": "FNBUS_SERVICE_TOKEN"}
    assert "fnbus_service_token" in services["prometheus"]["secrets"]


# --- Docker access and the runner socket directory ----------------------------------


@pytest.mark.parametrize("name", sorted(DOCKER_USERS))
def test_docker_users_mount_the_engine_socket(services: dict[str, Any], name: str) -> None:
    svc = services[name]
    assert (DOCKER_SOCKET, DOCKER_SOCKET) in bind_mounts(svc)
    assert env_of(svc)["FNBUS_DOCKER_HOST"] == f"unix://{DOCKER_SOCKET}"
    # The image runs as a non-root user: it needs the socket's group.
    assert svc["group_add"] and "FNBUS_DOCKER_GID" in svc["group_add"][0]


def test_nothing_else_gets_the_engine_socket(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if name not in DOCKER_USERS:
            assert all(DOCKER_SOCKET not in m for m in bind_mounts(svc)), name
            assert "FNBUS_DOCKER_HOST" not in env_of(svc), name


@pytest.mark.parametrize("name", sorted(DOCKER_USERS))
def test_socket_dir_has_the_same_path_on_host_and_in_container(
    services: dict[str, Any], name: str
) -> None:
    svc = services[name]
    socket_dir = env_of(svc)["FNBUS_SOCKET_DIR"]
    # Never empty: the default, <FNBUS_HOME>/sockets, exists only inside the container.
    assert socket_dir.startswith("${FNBUS_SOCKET_DIR:-/")
    assert (socket_dir, socket_dir) in bind_mounts(svc)
    # The one-shot that hands the directory to the fnbus user prepares that same path.
    prepare = services["socket-dir"]
    assert (socket_dir, socket_dir) in bind_mounts(prepare)
    assert prepare["entrypoint"][-1] == socket_dir
    assert depends(svc)["socket-dir"] == "service_completed_successfully"


def test_invoker_has_a_stable_instance_id(services: dict[str, Any]) -> None:
    # The id survives restarts, so a restarted invoker reclaims its own leftovers.
    assert env_of(services["invoker"])["FNBUS_INSTANCE_ID"] == "invoker-1"


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return int(match.group(1))


def test_invoker_gets_time_to_drain(services: dict[str, Any]) -> None:
    # Running invocations may take the whole limit before the pool is removed.
    limit_s = Settings.model_fields["lambda_timeout_ms"].default / 1000
    assert _seconds(services["invoker"]["stop_grace_period"]) > limit_s + 10
    for name in FNBUS:
        assert _seconds(services[name]["stop_grace_period"]) >= 30, name


# --- published ports ----------------------------------------------------------------


def test_only_gateway_prometheus_and_grafana_publish_ports(services: dict[str, Any]) -> None:
    with_ports = {name for name, svc in services.items() if svc.get("ports")}
    assert with_ports == {"gateway", "prometheus", "grafana"}
    assert [p[2] for p in published(services["gateway"])] == [8080]
    assert published(services["prometheus"]) == [("127.0.0.1", "9090", 9090)]
    assert published(services["grafana"]) == [("127.0.0.1", "3000", 3000)]


# --- Kafka and PostgreSQL -------------------------------------------------------------


def test_kafka_is_single_node_kraft(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    assert node_id == "1"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:9093"
    assert set(env["KAFKA_LISTENERS"].split(",")) == {"PLAINTEXT://:9092", "CONTROLLER://:9093"}
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["CLUSTER_ID"]  # the image refuses KRaft without one
    # Clients are told to use what they bootstrapped from.
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].removeprefix("PLAINTEXT://")
    assert env_of(services["gateway"])["FNBUS_KAFKA_BOOTSTRAP"] == advertised
    assert kafka["healthcheck"]["test"][1].startswith("/opt/kafka/bin/")
    assert ("kafka-data", env["KAFKA_LOG_DIRS"]) in bind_mounts(kafka)


def test_postgres_matches_the_database_url(services: dict[str, Any]) -> None:
    pg = services["postgres"]
    assert pg["image"] == "postgres:15"
    env = env_of(pg)
    url = urlsplit(env_of(services["registry"])["FNBUS_DATABASE_URL"])
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert env["POSTGRES_USER"] == url.username == "fnbus"
    assert env["POSTGRES_PASSWORD"] == url.password
    assert env["POSTGRES_DB"] == url.path.lstrip("/")
    assert pg["healthcheck"]["test"][1] == "pg_isready"
    assert ("postgres-data", "/var/lib/postgresql/data") in bind_mounts(pg)


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {
        source
        for svc in compose["services"].values()
        for source, _ in bind_mounts(svc)
        if not source.startswith(("/", ".", "$"))
    }
    assert used == declared == {"kafka-data", "postgres-data", "prometheus-data", "grafana-data"}


# --- Prometheus -------------------------------------------------------------------------


def test_prometheus_scrapes_every_service_at_its_port(services: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    targets: dict[str, str] = {}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for static in job["static_configs"]:
            for target in static["targets"]:
                targets[target] = job["job_name"]
    for compose_name, service in FNBUS.items():
        target = f"{compose_name}:{DEFAULT_PORTS[service]}"
        # job named like the service's own `service` metric label
        assert targets.get(target) == service, target
    prom = services["prometheus"]
    mount = ("./deploy/prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml")
    assert mount in bind_mounts(prom)
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]


# --- Grafana ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def _datasource_uid() -> str:
    config = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    return str(source["uid"])


def test_grafana_is_provisioned_from_the_repository(services: dict[str, Any]) -> None:
    mounts = {target: source for source, target in bind_mounts(services["grafana"])}
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    providers = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "fnbus.yml").read_text()
    )["providers"]
    (provider,) = providers
    dashboards_path = provider["options"]["path"]
    assert mounts[dashboards_path] == "./deploy/grafana/dashboards"
    assert DASHBOARD_FILE.parent == ROOT / "deploy" / "grafana" / "dashboards"


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: the identifiers left once label
    matchers, ranges, strings and `by (...)` are gone, except function calls."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", expr)
    return set(re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()", expr))


def test_metric_names_finds_selectors_only() -> None:
    expr = ('histogram_quantile(0.99, sum by (service, le) '
            '(rate(fnbus_x_bucket{service=~"$service"}[$__rate_interval]))) / other_metric')
    assert metric_names(expr) == {"fnbus_x_bucket", "other_metric"}


def _queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_every_panel_queries_fnbus_metrics(dashboard: dict[str, Any]) -> None:
    uid = _datasource_uid()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 8
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            metrics = metric_names(target["expr"])
            assert metrics, (panel["title"], target["expr"])
            assert all(m.startswith("fnbus_") for m in metrics), target["expr"]
            assert metrics <= HTTP_METRICS | INVOKER_METRICS, target["expr"]


def test_dashboard_http_metrics_exist_in_the_code() -> None:
    # prometheus_client names a counter without `_total`; its samples carry it.
    (counter,) = HTTP_REQUESTS.describe()
    (histogram,) = HTTP_LATENCY.describe()
    assert (counter.type, histogram.type) == ("counter", "histogram")
    assert {counter.name + "_total", histogram.name + "_bucket"} == HTTP_METRICS


def test_dashboard_covers_rate_errors_latency_and_invocations(
    dashboard: dict[str, Any],
) -> None:
    queries = _queries(dashboard)
    joined = "\n".join(queries)
    assert any("fnbus_http_requests_total" in q and "5.." not in q and "by (service)" in q
               for q in queries)
    assert any('status=~"5.."' in q for q in queries)
    for quantile in ("0.5", "0.99"):
        assert any(q.startswith(f"histogram_quantile({quantile},")
                   and "fnbus_http_request_seconds_bucket" in q and "service" in q
                   for q in queries), quantile
    for metric in INVOKER_METRICS:
        assert metric in joined, metric
    assert "by (outcome)" in joined and "by (source)" in joined and "by (state)" in joined


# --- Dockerfile -------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_parameterised_on_the_python_image() -> None:
    instructions = _instructions()
    assert instructions[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim")
    froms = [args for word, args in instructions if word == "FROM"]
    assert froms and all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms)


def test_dockerfile_runs_fnbus_as_a_non_root_user() -> None:
    instructions = _instructions()
    assert ("ENTRYPOINT", '["fnbus"]') in instructions
    assert ("CMD", '["serve", "gateway"]') in instructions
    users = [args for word, args in instructions if word == "USER"]
    assert users and users[-1] not in {"root", "0"}
    env = " ".join(args for word, args in instructions if word == "ENV")
    assert "FNBUS_BIND_HOST=0.0.0.0" in env.split()
    # The `fnbus` entrypoint is the console script pyproject declares.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["fnbus"] == "fnbus.cli:main"


def test_dockerfile_installs_the_project_and_ships_the_runners() -> None:
    instructions = _instructions()
    copied = {args.split()[0] for word, args in instructions if word == "COPY"
              if not args.startswith("--from")}
    assert {"pyproject.toml", "libs/fnbus", "services", "libs/runtimes"} <= copied
    for path in copied:
        assert (ROOT / path).exists(), path
    installs = [args for word, args in instructions if word == "RUN" and "pip install" in args]
    assert any(re.search(r"pip install (--no-deps )?\.(\s|$)", i) for i in installs)
    assert not any(re.search(r"pip install .*\s(-e|--editable)\s", i) for i in installs)


# --- docs ---------------------------------------------------------------------------------


def test_docs_list_every_required_variable() -> None:
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE_FILE.read_text()))
    assert required >= {"FNBUS_SERVICE_TOKEN", "FNBUS_JWT_SECRET", "FNBUS_SECRETS_KEY"}
    docs = DOCS_FILE.read_text()
    for var in required:
        assert re.search(rf"^\s*{var}=", docs, re.MULTILINE), var
