"""The shipped Grafana dashboard cannot rot: load goes through the real stack, a private
Prometheus scrapes this session's six services, and every panel query of
deploy/grafana/dashboards/fnbus.json is evaluated against its HTTP API the way Grafana
would (a range query, Grafana's variables substituted). A query that errors or returns
no data fails the test; so does a dashboard whose JSON Grafana could not provision.

Grafana itself is not installable on these machines; its provisioning files are checked
here and in tests/unit/test_compose.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fnbus.config import SERVICE_NAMES, Settings
from tests.integration.invoke_support import deploy, invoke
from tests.integration.mgmt_support import Account, create_account
from tests.support import eventually, free_port

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "fnbus.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"

SCRAPE_INTERVAL_S = 1
STEP_S = 2
# Grafana: $__rate_interval = max($__interval + scrape interval, 4 x scrape interval).
RATE_INTERVAL = f"{max(STEP_S + SCRAPE_INTERVAL_S, 4 * SCRAPE_INTERVAL_S)}s"

OK = "function lambda(input, callback) {\n  callback(null, { n: input.payload.n });\n}\n"
FAILS = "function lambda(input, callback) {\n  callback(new Error('no ' + input.payload.n));\n}\n"


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every target of every panel, rows' panels included."""
    out = []
    panels = list(dashboard["panels"])
    for panel in panels:
        panels.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
        for target in panel.get("targets", []):
            out.append((panel["title"], target["refId"], target["expr"]))
    return out


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variables as it would expand them for one range query."""
    values = {"__rate_interval": RATE_INTERVAL, "__interval": f"{STEP_S}s",
              "__range": "5m", **variables}
    # longest names first: $__rate_interval before $__range
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    assert "$" not in expr, f"unknown variable in {expr}"
    return expr


# --- the dashboard's JSON (no services needed) ----------------------------------------


def test_substitute_expands_grafana_variables() -> None:
    expr = 'rate(x{service=~"$service"}[$__rate_interval]) + y[${__interval}]'
    assert substitute(expr, {"service": ".*"}) == \
        f'rate(x{{service=~".*"}}[{RATE_INTERVAL}]) + y[{STEP_S}s]'


def test_dashboard_json_is_what_grafana_provisions() -> None:
    dashboard = load_dashboard()
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uid = source["uid"]
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40  # Grafana's limit
    assert dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    assert "id" not in dashboard or dashboard["id"] is None  # a provisioned file has no db id
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["type"] in {"row", "timeseries", "stat", "gauge", "table", "bargauge"}
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid, variable["name"]


def test_every_variable_the_queries_use_is_defined() -> None:
    dashboard = load_dashboard()
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    for title, _, expr in panel_queries(dashboard):
        used = set(re.findall(r"\$\{?(\w+)", expr)) - {"__rate_interval", "__interval", "__range"}
        assert used <= defined, (title, used - defined)


# --- a private Prometheus in front of this session's services -----------------------------


class PrivatePrometheus:
    """Debian's prometheus on a free loopback port, scraping the given targets every second."""

    def __init__(self, workdir: Path, targets: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = workdir
        self._targets = targets
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("prometheus")
        assert exe, "prometheus not found: run deploy/local/install.sh"
        config = {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                       "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
            "rule_files": [str(ROOT / "deploy" / "prometheus" / "rules.yml")],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                               for job, target in self._targets.items()],
        }
        (self._dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._log = open(self._dir / "prometheus.log", "wb")  # noqa: SIM115 - the child's
        self._proc = subprocess.Popen(
            [exe, f"--config.file={self._dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self._dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            assert self._proc.poll() is None, (self._dir / "prometheus.log").read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready after 30 s"
            time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
            self._log.close()


@pytest.fixture(scope="module")
def prometheus(settings: Settings, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[PrivatePrometheus]:
    targets = {name: f"127.0.0.1:{getattr(settings, f'{name}_port')}" for name in SERVICE_NAMES}
    prom = PrivatePrometheus(tmp_path_factory.mktemp("prometheus"), targets)
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()


async def instant(prom: PrivatePrometheus, query: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"{prom.url}/api/v1/query", params={"query": query})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (query, r.text)
    return list(body["data"]["result"])


@pytest.fixture(scope="module")
async def tenant(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"dash{run_id}")


@pytest.mark.integration
async def test_every_panel_query_returns_data_after_load(
        settings: Settings, platform: dict[str, str], scheduler_url: str,
        prometheus: PrivatePrometheus, tenant: Account) -> None:
    started = time.time()

    # every service is scraped before the load: a rate needs a sample from before it (a
    # burst finished before the first scrape would leave only flat counters)
    async def all_up() -> bool:
        up = await instant(prometheus, "up")
        return {s["metric"]["job"] for s in up if s["value"][1] == "1"} == set(SERVICE_NAMES)

    await eventually(all_up, timeout_s=30, what="all six services up in Prometheus")
    ok = await deploy(tenant, "dash-ok", OK)
    fails = await deploy(tenant, "dash-fails", FAILS)
    await asyncio.sleep(2 * SCRAPE_INTERVAL_S)  # the counters' values before the load, scraped
    # the load: successes and the lambda's own failures, one by one and in parallel
    outcomes = await asyncio.gather(*(invoke(tenant, ok, {"n": i}) for i in range(12)),
                                    *(invoke(tenant, fails, {"n": i}) for i in range(4)))
    assert [r.status_code for r in outcomes[:12]] == [200] * 12
    # and calls spread over several scrapes: a burst that started series and finished
    # between two scrapes would show no increase in any rate window
    for i in range(4 * SCRAPE_INTERVAL_S):
        assert (await invoke(tenant, ok, {"late": i})).status_code == 200
        await asyncio.sleep(SCRAPE_INTERVAL_S / 2)
    async with tenant.client() as c:
        for _ in range(10):
            assert (await c.get("/lambdas")).status_code == 200

    # the last invocation has been scraped too
    async def scraped_load() -> bool:
        got = await instant(prometheus, "sum(fnbus_invocations_total)")
        return bool(got) and float(got[0]["value"][1]) >= 16

    await eventually(scraped_load, timeout_s=30, what="the invocations in Prometheus")
    await asyncio.sleep(2 * STEP_S)  # one more rate window past the last sample

    dashboard = load_dashboard()
    # the $service variable: its values as Grafana's label_values() query finds them
    for variable in dashboard["templating"]["list"]:
        metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)",
                                     variable["query"]["query"]).groups()  # type: ignore[union-attr]
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(f"{prometheus.url}/api/v1/label/{label}/values",
                                 params={"match[]": metric})
        values = r.json()["data"]
        assert set(SERVICE_NAMES) <= set(values), (variable["name"], values)
    variables = {v["name"]: v.get("allValue") or ".*" for v in dashboard["templating"]["list"]}

    failures = []
    async with httpx.AsyncClient(timeout=20) as client:
        for title, ref_id, expr in panel_queries(dashboard):
            query = substitute(expr, variables)
            r = await client.get(f"{prometheus.url}/api/v1/query_range", params={
                "query": query, "start": started - 30, "end": time.time(), "step": STEP_S})
            body = r.json()
            if r.status_code != 200 or body.get("status") != "success":
                failures.append(f"{title} [{ref_id}]: error {body.get('error')}: {query}")
                continue
            finite = [v for series in body["data"]["result"] for _, v in series["values"]
                      if math.isfinite(float(v))]
            if not finite:
                failures.append(f"{title} [{ref_id}]: no data: {query}")
    assert not failures, "\n".join(failures)

    # the load is visible the way the panels show it: both outcomes, the http source
    outcomes_seen = {s["metric"]["outcome"] for s in await instant(
        prometheus, "sum by (outcome) (fnbus_invocations_total)")}
    assert {"SUCCEEDED", "CODING_FAILURE"} <= outcomes_seen
    # and the rules loaded next to the scrape: a live invoker is not "down"
    async with httpx.AsyncClient(timeout=10) as client:
        alerts = (await client.get(f"{prometheus.url}/api/v1/alerts")).json()["data"]["alerts"]
    assert not [a for a in alerts if a["labels"]["alertname"] == "FnbusInvokerDown"]
