"""Email reports end to end: settings through the gateway (validation, permissions), a
report delivered over real SMTP to an aiosmtpd sink and parsed back (recipients, the
table's figures equal to the metrics API's, the inline chart), at-most-once periodic sends
by two runners at once, and a failure-rate alert.
"""

from __future__ import annotations

import asyncio
import email
import html
import os
import re
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from fnbus.config import Settings
from fnbus.mailsink import serve
from fnbus.reports import FAILED, OUTCOMES, ReportRunner, SmtpSender
from tests.integration.invoke_support import deploy, invoke
from tests.integration.mgmt_support import Account, create_account, user_key
from tests.support import eventually, free_port

INFRA = Path(__file__).resolve().parents[2] / "deploy" / "local" / "infra.sh"

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

OK = "function lambda(input, callback) {\n  callback(null, { n: input.payload.n });\n}\n"
FAILS = "function lambda(input, callback) {\n  callback(new Error('no ' + input.payload.n));\n}\n"


class Sink:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port

    def mails(self) -> list[EmailMessage]:
        return [email.message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
                for p in sorted(self.directory.glob("*.eml"))]


@pytest.fixture
async def sink(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
               ) -> AsyncIterator[Sink]:
    """A real SMTP server (fnbus.mailsink) on a free port, and the services pointed at it."""
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve("127.0.0.1", port, tmp_path / "mail", stop))
    await asyncio.sleep(0.2)
    monkeypatch.setattr(settings, "smtp_host", "127.0.0.1")
    monkeypatch.setattr(settings, "smtp_port", port)
    monkeypatch.setattr(settings, "smtp_from", "fnbus@reports.test")
    try:
        yield Sink(tmp_path / "mail", port)
    finally:
        stop.set()
        await task


@pytest.fixture(scope="module")
async def tenant(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"rep{run_id}")


@pytest.fixture(scope="module", autouse=True)
async def reports_off_afterwards(tenant: Account) -> AsyncIterator[None]:
    """A scheduler of this session must find nothing to mail once these tests are done."""
    yield
    async with tenant.client() as c:
        await c.put("/reports/settings", json={"recipients": [], "frequency": "off"})


@pytest.fixture(scope="module")
async def functions(tenant: Account) -> dict[str, str]:
    ok = await deploy(tenant, "report-ok", OK)
    fails = await deploy(tenant, "report-fails", FAILS)
    for i in range(5):
        assert (await invoke(tenant, ok, {"n": i})).status_code == 200
    for i in range(3):
        await invoke(tenant, fails, {"n": i})
    # the rollups are kept as records arrive: wait until the metrics API sees all eight
    async with tenant.client() as c:
        async def counted() -> bool:
            r = await c.get("/metrics", params={"last": "24h", "bucket": "hour"})
            return r.status_code == 200 and sum(i["total"] for i in r.json()["items"]) >= 8

        await eventually(counted, timeout_s=60, interval_s=0.5, what="8 invocations in metrics")
    return {"report-ok": ok, "report-fails": fails}


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


async def metrics_totals(tenant: Account, lambda_id: str) -> dict[str, int]:
    async with tenant.client() as c:
        r = await c.get("/metrics", params={"lambda_id": lambda_id, "last": "24h",
                                            "bucket": "hour"})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    out = {o: sum(i["invocations"][o] for i in items) for o in OUTCOMES}
    out["total"] = sum(i["total"] for i in items)
    out["cold_starts"] = sum(i["cold_starts"] for i in items)
    out["retries"] = sum(i["retries"] for i in items)
    out["dead_letters"] = sum(i["dead_letters"] for i in items)
    return out


def html_table(body: str) -> dict[str, list[str]]:
    """function name → its row's cells, from the report's HTML."""
    rows = {}
    for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        if cells:
            rows[cells[0]] = cells[1:]
    return rows


# --- settings ------------------------------------------------------------------------------


async def test_settings_default_then_saved(tenant: Account) -> None:
    async with tenant.client() as c:
        r = await c.get("/reports/settings")
        assert r.status_code == 200, r.text
        assert r.json() == {"recipients": [], "frequency": "off", "alert": None}
        want = {"recipients": ["ops@example.com"], "frequency": "weekly",
                "alert": {"failure_rate": 0.2, "window_minutes": 30, "min_invocations": 4}}
        r = await c.put("/reports/settings", json=want)
        assert r.status_code == 200, r.text
        assert (await c.get("/reports/settings")).json() == want
        r = await c.put("/reports/settings", json={"recipients": [], "frequency": "off"})
        assert r.json() == {"recipients": [], "frequency": "off", "alert": None}
        assert (await c.get("/reports/settings")).json()["alert"] is None


@pytest.mark.parametrize("body", [
    {"recipients": ["nope"]},
    {"recipients": ["ops@example.com\r\nBcc: all@example.com"]},
    {"recipients": [f"u{i}@example.com" for i in range(21)]},
    {"frequency": "hourly"},
    {"alert": {"failure_rate": 2}},
    {"alert": {"failure_rate": 0.5, "window_minutes": 0}},
    {"recipients": "ops@example.com"},
])
async def test_invalid_settings_are_422_and_change_nothing(tenant: Account, body: dict[str, Any]
                                                           ) -> None:
    async with tenant.client() as c:
        before = (await c.get("/reports/settings")).json()
        r = await c.put("/reports/settings", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_request"
        assert (await c.get("/reports/settings")).json() == before


async def test_permissions(tenant: Account) -> None:
    invocation = await user_key(tenant, "report-invoker", ["FaaS-Invocation"])
    developer = await user_key(tenant, "report-dev", ["FaaS-Developer"])
    body = {"recipients": ["x@example.com"], "frequency": "daily"}
    for key in (invocation, developer):
        async with tenant.client(key) as c:
            assert (await c.get("/reports/settings")).status_code == 200
            r = await c.put("/reports/settings", json=body)
            assert r.status_code == 403, r.text
            assert (await c.post("/reports/send-now")).status_code == 403
    async with httpx.AsyncClient(base_url=tenant.gateway) as anonymous:
        r = await anonymous.get(f"/api/v1/accounts/{tenant.id}/reports/settings")
        assert r.status_code == 401


async def test_another_accounts_key_is_refused(settings: Settings, gateway_url: str,
                                               tenant: Account, run_id: str) -> None:
    other = await create_account(settings, gateway_url, f"rpo{run_id}")
    async with httpx.AsyncClient(base_url=gateway_url,
                                 headers={"Authorization": f"Bearer {other.admin_key}"}) as c:
        r = await c.get(f"/api/v1/accounts/{tenant.id}/reports/settings")
        assert r.status_code in (403, 404), r.text
        r = await c.post(f"/api/v1/accounts/{tenant.id}/reports/send-now")
        assert r.status_code in (403, 404), r.text


# --- sending ---------------------------------------------------------------------------------


async def test_send_now_without_recipients_is_409(tenant: Account, sink: Sink) -> None:
    async with tenant.client() as c:
        await c.put("/reports/settings", json={"recipients": [], "frequency": "off"})
        r = await c.post("/reports/send-now")
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_recipients", r.text
    assert sink.mails() == []


async def test_send_now_delivers_the_report(tenant: Account, functions: dict[str, str],
                                            sink: Sink) -> None:
    recipients = ["ops@example.com", "lead+fnbus@example.org"]
    async with tenant.client() as c:
        r = await c.put("/reports/settings", json={"recipients": recipients,
                                                   "frequency": "daily"})
        assert r.status_code == 200, r.text
        r = await c.post("/reports/send-now")
    assert r.status_code == 200, r.text
    sent = r.json()
    assert sent["recipients"] == recipients and sent["functions"] == 2

    (mail,) = sink.mails()
    assert mail["X-Envelope-To"] == ", ".join(recipients)  # what the SMTP server was told
    assert mail["To"] == ", ".join(recipients)
    assert mail["From"] == "fnbus@reports.test"
    assert mail["Message-ID"] == sent["message_id"]
    assert tenant.id in mail["Subject"]
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    body = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    table = html_table(body)
    assert set(table) == set(functions)
    for name, lambda_id in functions.items():
        want = await metrics_totals(tenant, lambda_id)
        cells = table[name]
        assert [int(x) for x in cells[:5]] == [
            want["total"], want["SUCCEEDED"], want["CODING_FAILURE"], want["PLATFORM_FAILURE"],
            want["TIMEOUT"]], name
        failed = sum(want[o] for o in FAILED)
        assert cells[5] == f"{failed / want['total'] * 100:.1f}%"
        assert [int(x) for x in cells[6:]] == [want["cold_starts"], want["retries"],
                                              want["dead_letters"]], name
        assert name in text
    assert table["report-ok"][:2] == ["5", "5"]
    assert table["report-fails"][2] == "3"  # coding failures
    # the chart, inline: the HTML names it by Content-ID, the PNG is attached to it
    (image,) = [p for p in mail.walk() if p.get_content_type() == "image/png"]
    cid = image["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in body
    assert image.get_content()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_smtp_down_is_503(tenant: Account, settings: Settings,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    async with tenant.client() as c:
        await c.put("/reports/settings", json={"recipients": ["ops@example.com"]})
        monkeypatch.setattr(settings, "smtp_port", free_port())  # nothing listens there
        r = await c.post("/reports/send-now")
    assert r.status_code == 503 and r.json()["error"]["code"] == "smtp_unavailable", r.text


async def test_periodic_report_is_sent_once_by_two_runners(
        tenant: Account, functions: dict[str, str], settings: Settings, sink: Sink,
        pool: asyncpg.Pool) -> None:
    """Two schedulers (say, before and after a failover) tick at once: one mail, one claim."""
    async with tenant.client() as c:
        r = await c.put("/reports/settings", json={"recipients": ["ops@example.com"],
                                                   "frequency": "daily"})
        assert r.status_code == 200
    # saved two days ago: yesterday's report is due
    await pool.execute("UPDATE report_settings SET updated_at = now() - interval '2 days' "
                       "WHERE account_id = $1", tenant.id)
    await pool.execute("DELETE FROM report_sends WHERE account_id = $1", tenant.id)
    now = datetime.now(UTC)
    runners = [ReportRunner(pool, settings, sender=SmtpSender(settings)) for _ in range(2)]
    first = await asyncio.gather(*(r.tick(now) for r in runners))
    yesterday = f"daily:{(now - timedelta(days=1)).date().isoformat()}"
    mine = [[k for k in keys if k == yesterday] for keys in first]
    # one of the two sent it (or, rarely, this session's own scheduler got there first)
    assert sum(len(m) for m in mine) <= 1
    # a restarted runner later on: still nothing more
    again = await ReportRunner(pool, settings, sender=SmtpSender(settings)).tick(
        now + timedelta(minutes=5))
    assert yesterday not in again
    mails = [m for m in sink.mails() if m["X-Fnbus-Period"] == yesterday]
    assert len(mails) == 1 and mails[0]["To"] == "ops@example.com"
    row = await pool.fetchrow("SELECT sent_at, error FROM report_sends "
                              "WHERE account_id = $1 AND period = $2", tenant.id, yesterday)
    assert row["sent_at"] is not None and row["error"] is None


async def test_failure_rate_alert(tenant: Account, functions: dict[str, str],
                                  settings: Settings, sink: Sink, pool: asyncpg.Pool) -> None:
    async with tenant.client() as c:
        r = await c.put("/reports/settings", json={
            "recipients": ["oncall@example.com"], "frequency": "off",
            "alert": {"failure_rate": 0.5, "window_minutes": 60, "min_invocations": 3}})
        assert r.status_code == 200
    await pool.execute("DELETE FROM report_sends WHERE account_id = $1", tenant.id)
    runner = ReportRunner(pool, settings, sender=SmtpSender(settings))
    mailed = await runner.tick(datetime.now(UTC))
    assert [k.split(":")[1] for k in mailed if k.startswith("alert:")] == [
        functions["report-fails"]]  # 3 of 3 failed; report-ok never fails
    assert await runner.tick(datetime.now(UTC)) == []  # once per window
    (mail,) = [m for m in sink.mails() if "alert" in m["Subject"]]
    assert mail["To"] == "oncall@example.com"
    assert "report-fails" in mail["Subject"] and "100.0%" in mail["Subject"]


async def test_make_up_sink_keeps_mail_as_eml(settings: Settings, tmp_path: Path) -> None:
    """`infra.sh start mail` (what `make up` runs): a real sink writing .eml files."""
    infra = INFRA
    port = free_port()
    env = {**os.environ, "FNBUS_HOME": str(tmp_path / "home"), "FNBUS_SMTP_PORT": str(port)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(infra), *args, "mail"], env=env, text=True,
                              capture_output=True, timeout=60)

    started = run("start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"ready on smtp://127.0.0.1:{port}" in started.stdout
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "fnbus@localhost", "ops@example.com", "hello"
        msg.set_content("kept")
        await SmtpSender(settings.model_copy(update={"smtp_port": port})).send(msg)
        (kept,) = (tmp_path / "home" / "mail").glob("*.eml")
        parsed = email.message_from_bytes(kept.read_bytes(), policy=policy.default)
        assert parsed["Subject"] == "hello" and parsed["X-Envelope-To"] == "ops@example.com"
        assert "1 mail(s) kept" in run("status").stdout
    finally:
        assert run("stop").returncode == 0
    assert run("status").returncode == 3
