"""Prometheus: the alerting rules (promtool check + unit tests), the compose scrape config,
the local Prometheus of `make up` (deploy/local/infra.sh), and the metric names every
service exports (`promtool check metrics` on each live /metrics).

Needs Debian's `prometheus` package (deploy/local/install.sh installs it) for `promtool`
and `prometheus`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from fnbus.config import DEFAULT_PORTS, SERVICE_NAMES, Settings
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
INFRA = ROOT / "deploy" / "local" / "infra.sh"

# Label names whose values grow with use: never on a metric (one series per activation).
UNBOUNDED_LABELS = {"activation_id", "lambda_id", "account", "account_id", "request_id",
                    "trace_id", "traceparent", "path", "url", "user_id"}


def promtool(*args: str, cwd: Path | None = None, stdin: bytes | None = None
             ) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: run deploy/local/install.sh (Debian package prometheus)"
    return subprocess.run([exe, *args], cwd=cwd, input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, timeout=60)


def test_rules_check() -> None:
    out = promtool("check", "rules", str(PROM_DIR / "rules.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 11 rules found" in out.stdout


def test_rules_unit_tests_pass() -> None:
    out = promtool("test", "rules", "rules_test.yml", cwd=PROM_DIR)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_is_unit_tested() -> None:
    rules = yaml.safe_load((PROM_DIR / "rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {"FnbusInvokerDown", "FnbusConsumerLag", "FnbusDeadLettersGrowing",
            "FnbusErrorBudgetFastBurn"} <= alerts
    tests = yaml.safe_load((PROM_DIR / "rules_test.yml").read_text())["tests"]
    fired = {t["alertname"] for case in tests for t in case.get("alert_rule_test", [])
             if t["exp_alerts"]}
    assert fired == alerts  # each alert is seen firing at least once


def test_rules_use_only_metrics_the_services_define() -> None:
    text = (PROM_DIR / "rules.yml").read_text()
    used = set(re.findall(r"\b(fnbus_[a-z_]+?)(?:_bucket|_count|_sum)?\b(?=[{\[ ])", text))
    defined = set()
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("libs/fnbus/*.py")]:
        defined |= set(re.findall(r"(?:Counter|Gauge|Histogram)\(\s*\"(fnbus_[a-z_]+)\"",
                                  path.read_text()))
    assert used and used <= defined, used - defined


def test_compose_config_checks(tmp_path: Path) -> None:
    """The compose file as Prometheus would load it, with its secret and rules in place."""
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    token = tmp_path / "fnbus_service_token"
    token.write_text("a-token\n")
    (tmp_path / "rules").mkdir()
    shutil.copy(PROM_DIR / "rules.yml", tmp_path / "rules" / "fnbus.yml")
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(tmp_path / "rules" / "*.yml")]
    (gateway,) = [j for j in config["scrape_configs"] if j["job_name"] == "gateway"]
    # the gateway publishes a port, so its /metrics wants the service token
    assert gateway["authorization"]["credentials_file"] == "/run/secrets/fnbus_service_token"
    gateway["authorization"]["credentials_file"] = str(token)
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    out = promtool("check", "config", str(checked))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 11 rules found" in out.stdout


@pytest.mark.integration
def test_local_prometheus_from_infra_sh(tmp_path: Path) -> None:
    """`infra.sh start prometheus` (what `make up` runs): ready, rules loaded, the six
    services as targets on the ports the settings name; stop is clean and idempotent."""
    port = free_port()
    service_ports = {name: free_port() for name in SERVICE_NAMES}
    env = {**os.environ, "FNBUS_HOME": str(tmp_path / "home"),
           "FNBUS_PROMETHEUS_PORT": str(port),
           **{f"FNBUS_{name.upper()}_PORT": str(p) for name, p in service_ports.items()}}

    def infra(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(INFRA), *args], env=env, capture_output=True,
                              text=True, timeout=120)

    started = infra("start", "prometheus")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"ready on http://127.0.0.1:{port}" in started.stdout
        again = infra("start", "prometheus")  # idempotent: only checks
        assert again.returncode == 0 and "running" in again.stdout, again.stdout + again.stderr
        status = infra("status", "prometheus")
        assert status.returncode == 0, status.stdout

        api = f"http://127.0.0.1:{port}/api/v1"
        groups = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
        names = {r["name"] for g in groups for r in g["rules"]}
        assert "FnbusInvokerDown" in names and "FnbusErrorBudgetFastBurn" in names
        scraped: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while len(scraped) < 7 and time.monotonic() < deadline:  # discovery takes a moment
            time.sleep(0.2)
            targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
            scraped = {t["labels"]["job"]: t["scrapeUrl"] for t in targets}
        for name, p in service_ports.items():
            assert scraped[name] == f"http://127.0.0.1:{p}/metrics"
        assert set(scraped) == {*SERVICE_NAMES, "prometheus"}
    finally:
        stopped = infra("stop", "prometheus")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert infra("status", "prometheus").returncode == 3
    assert infra("stop", "prometheus").returncode == 0  # stopping twice is fine


def test_local_defaults_match_the_settings() -> None:
    """infra.sh's fallback ports are the ones fnbus.config uses."""
    text = INFRA.read_text()
    for name, port in DEFAULT_PORTS.items():
        assert f"{name}:{port}" in text, name
    assert f"FNBUS_PROMETHEUS_PORT:-{Settings.model_fields['prometheus_port'].default}" in text


@pytest.mark.integration
async def test_every_service_exports_conventional_metrics(
        settings: Settings, platform: dict[str, str], scheduler_url: str) -> None:
    """`promtool check metrics` on each service's live /metrics, plus bounded labels."""
    urls = {**platform, "scheduler": scheduler_url}
    assert set(urls) == set(SERVICE_NAMES)
    async with httpx.AsyncClient(timeout=10) as client:
        for name, url in urls.items():
            await client.get(f"{url}/healthz")  # at least one request counted
            # any token is a method to the HTTP parser; each must not become a series
            # (httptools refuses most made-up tokens itself; WebDAV's are valid HTTP)
            await client.request(f"BREW{name.upper().replace('_', '')}", f"{url}/healthz")
            await client.request("PROPFIND", f"{url}/healthz")
            r = await client.get(f"{url}/metrics")
            assert r.status_code == 200, (name, r.text)
            out = promtool("check", "metrics", stdin=r.content)
            assert out.returncode == 0, (name, out.stdout + out.stderr)
            labels = set(re.findall(r"[{,]([a-zA-Z_][a-zA-Z0-9_]*)=\"", r.text))
            assert not labels & UNBOUNDED_LABELS, (name, labels & UNBOUNDED_LABELS)
            assert "BREW" not in r.text, name
            assert re.search(rf'method="other",service="{name}",status="405"', r.text), name
            # every service labels its own requests (one registry per process)
            assert re.search(rf'fnbus_http_requests_total{{[^}}]*service="{name}"', r.text), name
