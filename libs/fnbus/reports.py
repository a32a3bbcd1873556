"""Email reports: settings, composition, rendering, sending and the periodic runner.

A report is one mail per account with a per-function table (invocations by state,
failure rate, cold starts, retries, dead letters) and an inline PNG chart of the
account's invocations over time; every figure comes from log-ingest's metrics API
(``GET /internal/metrics``), so the mail says what ``GET …/metrics`` says. An alert is
a shorter mail when one function's failure rate over a window passes a threshold.

Contract of :class:`ReportRunner` (run by every scheduler instance):

1. Each tick reads the accounts whose reports or alerts are on and have recipients.
2. A daily report covers the UTC day that ended, a weekly one the ISO week that ended;
   it is due once its period has ended, and only for periods that ended after the
   settings were last saved (turning reports on does not mail yesterday at once).
3. Before composing, the runner claims ``(account, period)`` with
   ``INSERT … ON CONFLICT DO NOTHING``; only the instance whose insert made the row
   sends. A period is mailed at most once across restarts and failover; a send that
   fails after its claim is recorded (``error``) and not retried.
4. An alert is claimed per (account, function, window): at most one per window.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from enum import Enum
from typing import Any, Protocol

import aiosmtplib
import asyncpg
import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fnbus.config import Settings

log = logging.getLogger(__name__)

MAX_RECIPIENTS = 20
MAX_FUNCTIONS = 200  # rows in one report's table
TICK_S = 30.0
OUTCOMES = ("SUCCEEDED", "CODING_FAILURE", "PLATFORM_FAILURE", "TIMEOUT", "UNKNOWN")
FAILED = OUTCOMES[1:]
CHART_WIDTH = 480
CHART_HEIGHT = 160
CHART_CID = "invocations-chart"

# A practical address check (RFC 5322's dot-atom local part, an LDH domain); no
# display names, quotes, comments, spaces or line breaks that could reach a header.
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


class ReportError(Exception):
    """Root of this module's errors.

    ReportError
     ├── NoRecipients   the account has no recipients to mail
     └── SendFailed     the SMTP server refused or could not be reached
    """


class NoRecipients(ReportError):
    pass


class SendFailed(ReportError):
    pass


# --- settings -------------------------------------------------------------------------


class Frequency(str, Enum):
    DAILY = "daily"
    WEEKLY = "weekly"
    OFF = "off"


class AlertSettings(BaseModel):
    """Mail the recipients when a function's failure rate over a window passes a threshold."""

    model_config = ConfigDict(extra="forbid")

    failure_rate: float = Field(ge=0, le=1, description="threshold, 0–1 (0.2 = 20% failed)")
    window_minutes: int = Field(default=60, ge=1, le=1440, description="look-back window")
    min_invocations: int = Field(default=10, ge=1, le=1_000_000,
                                 description="fewer invocations in the window never alert")


class ReportSettings(BaseModel):
    """``GET``/``PUT /api/v1/accounts/{account}/reports/settings``."""

    model_config = ConfigDict(extra="forbid")

    recipients: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS,
                                  description=f"email addresses, at most {MAX_RECIPIENTS}")
    frequency: Frequency = Field(default=Frequency.OFF, description="daily, weekly or off")
    alert: AlertSettings | None = Field(default=None, description="null: no alert")

    @field_validator("recipients")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        out = []
        for raw in value:
            address = raw.strip()
            if len(address) > 254 or not _EMAIL.match(address):
                raise ValueError(f"not an email address: {raw!r}")
            if address.lower() in seen:
                raise ValueError(f"listed twice: {address}")
            seen.add(address.lower())
            out.append(address)
        return out


@dataclass(frozen=True)
class StoredSettings:
    account_id: str
    settings: ReportSettings
    updated_at: datetime


def _from_row(row: Mapping[str, Any]) -> ReportSettings:
    alert = None
    if row["alert_failure_rate"] is not None:
        alert = AlertSettings(failure_rate=row["alert_failure_rate"],
                              window_minutes=row["alert_window_minutes"],
                              min_invocations=row["alert_min_invocations"])
    return ReportSettings(recipients=list(row["recipients"]), frequency=row["frequency"],
                          alert=alert)


async def load_settings(pool: asyncpg.Pool, account_id: str) -> ReportSettings:
    row = await pool.fetchrow("SELECT * FROM report_settings WHERE account_id = $1", account_id)
    return _from_row(row) if row else ReportSettings()


async def save_settings(pool: asyncpg.Pool, account_id: str, s: ReportSettings) -> ReportSettings:
    a = s.alert
    await pool.execute(
        """INSERT INTO report_settings (account_id, recipients, frequency, alert_failure_rate,
                                        alert_window_minutes, alert_min_invocations, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, now())
           ON CONFLICT (account_id) DO UPDATE SET
             recipients = EXCLUDED.recipients, frequency = EXCLUDED.frequency,
             alert_failure_rate = EXCLUDED.alert_failure_rate,
             alert_window_minutes = EXCLUDED.alert_window_minutes,
             alert_min_invocations = EXCLUDED.alert_min_invocations, updated_at = now()""",
        account_id, s.recipients, s.frequency.value, a.failure_rate if a else None,
        a.window_minutes if a else None, a.min_invocations if a else None)
    return s


async def active_settings(pool: asyncpg.Pool) -> list[StoredSettings]:
    rows = await pool.fetch(
        """SELECT * FROM report_settings
           WHERE cardinality(recipients) > 0
             AND (frequency <> 'off' OR alert_failure_rate IS NOT NULL)
           ORDER BY account_id""")
    return [StoredSettings(r["account_id"], _from_row(r), r["updated_at"]) for r in rows]


# --- periods and claims -----------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    key: str  # 'daily:2026-12-03', 'weekly:2026-W49'
    label: str  # for people: '2026-12-03', 'week 49 of 2026'
    end: datetime
    last: str  # the metrics API's `last=` for it
    bucket: str  # and its `bucket=`


def last_period(frequency: Frequency, now: datetime) -> Period | None:
    """The most recent period of ``frequency`` that has ended by ``now`` (UTC)."""
    today = now.astimezone(UTC).date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
    if frequency is Frequency.DAILY:
        day = today - timedelta(days=1)
        return Period(f"daily:{day.isoformat()}", day.isoformat(), midnight, "24h", "hour")
    if frequency is Frequency.WEEKLY:
        monday = midnight - timedelta(days=today.weekday())
        year, week, _ = (monday - timedelta(days=1)).isocalendar()
        return Period(f"weekly:{year}-W{week:02d}", f"week {week} of {year}", monday, "7d", "day")
    return None


def due_period(frequency: Frequency, updated_at: datetime, now: datetime) -> Period | None:
    """The period to mail at ``now``, if any: the last one that ended, provided it ended
    after the settings were saved (turning reports on does not mail yesterday at once)."""
    period = last_period(frequency, now)
    if period is None or period.end <= updated_at or period.end > now:
        return None
    return period


def manual_period(frequency: Frequency, now: datetime) -> Period:
    """What ``send-now`` reports: the last day (or week, for weekly reports) up to now."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if frequency is Frequency.WEEKLY:
        return Period(f"manual:{stamp}", f"the 7 days up to {stamp}", now, "7d", "day")
    return Period(f"manual:{stamp}", f"the 24 hours up to {stamp}", now, "24h", "hour")


async def claim(pool: asyncpg.Pool, account_id: str, period: str, recipients: Sequence[str]
                ) -> bool:
    """True for the one caller whose insert created the (account, period) row."""
    row = await pool.fetchrow(
        """INSERT INTO report_sends (account_id, period, recipients) VALUES ($1, $2, $3)
           ON CONFLICT (account_id, period) DO NOTHING RETURNING period""",
        account_id, period, list(recipients))
    return row is not None


async def mark(pool: asyncpg.Pool, account_id: str, period: str, error: str | None) -> None:
    await pool.execute(
        """UPDATE report_sends SET sent_at = CASE WHEN $3::text IS NULL THEN now() END,
                                   error = $3
           WHERE account_id = $1 AND period = $2""", account_id, period, error)


# --- figures ------------------------------------------------------------------------------


class MetricsSource(Protocol):
    """The metrics API: the body of ``GET /internal/metrics`` for these parameters."""

    async def series(self, account_id: str, lambda_id: str | None, last: str, bucket: str
                     ) -> dict[str, Any]: ...


class HttpMetrics:
    """log-ingest's metrics API over HTTP with the service token."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        self._url = settings.log_ingest_url.rstrip("/") + "/internal/metrics"
        self._headers = {"Authorization": f"Bearer {settings.service_token}"}
        self._client = client

    async def series(self, account_id: str, lambda_id: str | None, last: str, bucket: str
                     ) -> dict[str, Any]:
        params = {"account_id": account_id, "last": last, "bucket": bucket}
        if lambda_id:
            params["lambda_id"] = lambda_id
        if self._client is not None:
            r = await self._client.get(self._url, params=params, headers=self._headers)
        else:
            async with httpx.AsyncClient(timeout=30) as client:
                r = await client.get(self._url, params=params, headers=self._headers)
        r.raise_for_status()
        return dict(r.json())


@dataclass
class Totals:
    """Sums over a series' buckets, as the report's table shows them."""

    invocations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    cold_starts: int = 0
    retries: int = 0
    dead_letters: int = 0

    @property
    def total(self) -> int:
        return sum(self.invocations.values())

    @property
    def failed(self) -> int:
        return sum(self.invocations[o] for o in FAILED)

    @property
    def failure_rate(self) -> float:
        return self.failed / self.total if self.total else 0.0

    def add(self, item: Mapping[str, Any]) -> None:
        for outcome in OUTCOMES:
            self.invocations[outcome] += int(item["invocations"].get(outcome, 0))
        self.cold_starts += int(item.get("cold_starts", 0))
        self.retries += int(item.get("retries", 0))
        self.dead_letters += int(item.get("dead_letters") or 0)


def totals(items: Sequence[Mapping[str, Any]]) -> Totals:
    out = Totals()
    for item in items:
        out.add(item)
    return out


@dataclass(frozen=True)
class FunctionRow:
    lambda_id: str
    name: str
    totals: Totals


@dataclass(frozen=True)
class Report:
    account_id: str
    period: Period
    rows: list[FunctionRow]
    # (bucket start, invocations, failed) of the whole account, oldest first
    chart: list[tuple[str, int, int]]


async def account_functions(pool: asyncpg.Pool, account_id: str) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT id::text AS id, name FROM lambdas WHERE account_id = $1 ORDER BY name LIMIT $2",
        account_id, MAX_FUNCTIONS)
    return [(r["id"], r["name"]) for r in rows]


async def compose(pool: asyncpg.Pool, metrics: MetricsSource, account_id: str, period: Period
                  ) -> Report:
    functions = await account_functions(pool, account_id)
    account = await metrics.series(account_id, None, period.last, period.bucket)
    rows = []
    for lambda_id, name in functions:
        body = await metrics.series(account_id, lambda_id, period.last, period.bucket)
        rows.append(FunctionRow(lambda_id, name, totals(body["items"])))
    # busiest first; equal ones by name
    rows.sort(key=lambda r: (-r.totals.total, r.name))
    chart = [(it["bucket_start"], int(it["total"]),
              sum(int(it["invocations"].get(o, 0)) for o in FAILED)) for it in account["items"]]
    return Report(account_id, period, rows, chart)


# --- rendering ---------------------------------------------------------------------------


def _png(width: int, height: int, rows: Sequence[bytes]) -> bytes:
    """An 8-bit RGB PNG from ``height`` rows of ``3 * width`` bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 on every scanline
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def bar_chart(values: Sequence[tuple[int, int]], width: int = CHART_WIDTH,
              height: int = CHART_HEIGHT) -> bytes:
    """Bars of (total, failed) per bucket: the total in blue, its failed part in red."""
    white, blue, red, axis = b"\xff\xff\xff", b"\x3b\x82\xf6", b"\xef\x44\x44", b"\x6b\x72\x80"
    pixels = [bytearray(white * width) for _ in range(height)]
    top, bottom, left = 4, height - 2, 2
    for x in range(left, width):  # the baseline
        pixels[bottom][3 * x:3 * x + 3] = axis
    peak = max((t for t, _ in values), default=0)
    if values and peak:
        slot = (width - left) / len(values)
        bar = max(1, int(slot * 0.8))
        for i, (total, failed) in enumerate(values):
            x0 = left + int(i * slot + (slot - bar) / 2)
            h_total = round((bottom - top) * total / peak)
            h_failed = round((bottom - top) * min(failed, total) / peak)
            for y in range(bottom - h_total, bottom):
                color = red if y >= bottom - h_failed else blue
                for x in range(x0, min(x0 + bar, width)):
                    pixels[y][3 * x:3 * x + 3] = color
    return _png(width, height, [bytes(row) for row in pixels])


def _pct(rate: float) -> str:
    return f"{rate * 100:.1f}%"


TABLE_COLUMNS = ("function", "invocations", "succeeded", "coding failures", "platform failures",
                 "timeouts", "failure rate", "cold starts", "retries", "dead letters")


def table_rows(report: Report) -> list[list[str]]:
    out = []
    for row in report.rows:
        t = row.totals
        out.append([row.name, str(t.total), str(t.invocations["SUCCEEDED"]),
                    str(t.invocations["CODING_FAILURE"]), str(t.invocations["PLATFORM_FAILURE"]),
                    str(t.invocations["TIMEOUT"]), _pct(t.failure_rate), str(t.cold_starts),
                    str(t.retries), str(t.dead_letters)])
    return out


def render_text(report: Report) -> str:
    rows = [list(TABLE_COLUMNS), *table_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_COLUMNS))]
    lines = [f"fnbus report for account {report.account_id}: {report.period.label}", ""]
    if not report.rows:
        lines.append("This account has no functions.")
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    total = sum(t for _, t, _ in report.chart)
    lines += ["", f"{total} invocations in all."]
    return "\n".join(lines) + "\n"


def render_html(report: Report) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in TABLE_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(c)}</td>" if i == 0 else f'<td align="right">{e(c)}</td>'
                         for i, c in enumerate(row)) + "</tr>"
        for row in table_rows(report))
    if not report.rows:
        body = f'<tr><td colspan="{len(TABLE_COLUMNS)}">This account has no functions.</td></tr>'
    first = report.chart[0][0] if report.chart else ""
    last = report.chart[-1][0] if report.chart else ""
    return (
        "<!doctype html><html><body style=\"font-family:sans-serif\">"
        f"<h2>fnbus report for account {e(report.account_id)}</h2>"
        f"<p>{e(report.period.label)}</p>"
        f'<table border="1" cellspacing="0" cellpadding="4"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
        f"<h3>Invocations per {e(report.period.bucket)}</h3>"
        f'<p><img src="cid:{CHART_CID}" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" '
        f'alt="invocations per {e(report.period.bucket)}: blue all, red failed"></p>'
        f"<p><small>{e(first)} – {e(last)}; blue: all invocations, red: failed.</small></p>"
        "</body></html>")


def build_message(report: Report, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """multipart/alternative: text, and HTML with the chart inline (multipart/related)."""
    msg = EmailMessage()
    msg["Subject"] = f"fnbus report for {report.account_id}: {report.period.label}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "fnbus")
    msg["X-Fnbus-Period"] = report.period.key
    msg.set_content(render_text(report))
    msg.add_alternative(render_html(report), subtype="html")
    html_part = next(p for p in msg.iter_parts() if p.get_content_type() == "text/html")
    html_part.add_related(bar_chart([(t, f) for _, t, f in report.chart]), "image", "png",
                          cid=f"<{CHART_CID}>", filename="invocations.png")
    return msg


def build_alert(account_id: str, name: str, lambda_id: str, t: Totals, alert: AlertSettings,
                sender: str, recipients: Sequence[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = (f"fnbus alert for {account_id}: {name} failed {_pct(t.failure_rate)} "
                      f"in {alert.window_minutes} min")
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "fnbus")
    msg.set_content(
        f"Function {name} ({lambda_id}) of account {account_id}: {t.failed} of {t.total} "
        f"invocations failed in the last {alert.window_minutes} minutes "
        f"({_pct(t.failure_rate)}; threshold {_pct(alert.failure_rate)}).\n"
        f"coding failures {t.invocations['CODING_FAILURE']}, platform failures "
        f"{t.invocations['PLATFORM_FAILURE']}, timeouts {t.invocations['TIMEOUT']}.\n")
    return msg


# --- sending ------------------------------------------------------------------------------


class MailSender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class SmtpSender:
    """aiosmtplib with the operator's host, port, STARTTLS and credentials."""

    def __init__(self, settings: Settings, timeout_s: float = 30.0) -> None:
        self._settings = settings
        self._timeout_s = timeout_s

    async def send(self, message: EmailMessage) -> None:
        s = self._settings
        try:
            await aiosmtplib.send(
                message, hostname=s.smtp_host, port=s.smtp_port, start_tls=s.smtp_starttls,
                username=s.smtp_username or None, password=s.smtp_password or None,
                timeout=self._timeout_s)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SendFailed(f"{s.smtp_host}:{s.smtp_port}: {exc}") from exc


@dataclass(frozen=True)
class Sent:
    period: str
    recipients: list[str]
    message_id: str
    functions: int


async def send_report(pool: asyncpg.Pool, settings: Settings, metrics: MetricsSource,
                      sender: MailSender, account_id: str, period: Period,
                      recipients: Sequence[str]) -> Sent:
    if not recipients:
        raise NoRecipients(f"account {account_id} has no report recipients")
    report = await compose(pool, metrics, account_id, period)
    message = build_message(report, settings.smtp_from, recipients)
    await sender.send(message)
    log.info("report sent", extra={"account": account_id, "period": period.key,
                                   "recipients": len(recipients)})
    return Sent(period.key, list(recipients), str(message["Message-ID"]), len(report.rows))


async def send_now(pool: asyncpg.Pool, settings: Settings, metrics: MetricsSource,
                   sender: MailSender, account_id: str, now: datetime | None = None) -> Sent:
    """``POST …/reports/send-now``: the report at once, outside the periodic claims."""
    s = await load_settings(pool, account_id)
    return await send_report(pool, settings, metrics, sender, account_id,
                             manual_period(s.frequency, now or datetime.now(UTC)), s.recipients)


# --- the periodic runner ----------------------------------------------------------------------


class ReportRunner:
    """Periodic reports and failure-rate alerts; see the module's contract."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, *,
                 metrics: MetricsSource | None = None, sender: MailSender | None = None,
                 tick_s: float = TICK_S) -> None:
        self._pool = pool
        self._settings = settings
        self._metrics = metrics or HttpMetrics(settings)
        self._sender = sender or SmtpSender(settings)
        self._tick_s = tick_s

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        stopping = stopping or asyncio.Event()
        while not stopping.is_set():
            try:
                await self.tick(datetime.now(UTC))
            except Exception:  # noqa: BLE001 - the next tick tries again
                log.exception("report tick failed")
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self._tick_s)
            except TimeoutError:
                pass

    async def tick(self, now: datetime) -> list[str]:
        """Send what is due at ``now``; return the claimed period keys that were mailed."""
        mailed = []
        for stored in await active_settings(self._pool):
            try:
                mailed += await self._reports(stored, now)
                mailed += await self._alerts(stored, now)
            except Exception:  # noqa: BLE001 - one account's failure is not another's
                log.exception("reports for an account failed",
                              extra={"account": stored.account_id})
        return mailed

    async def _reports(self, stored: StoredSettings, now: datetime) -> list[str]:
        period = due_period(stored.settings.frequency, stored.updated_at, now)
        if period is None:
            return []
        return await self._claimed_send(stored, period.key, lambda: send_report(
            self._pool, self._settings, self._metrics, self._sender, stored.account_id, period,
            stored.settings.recipients))

    async def _alerts(self, stored: StoredSettings, now: datetime) -> list[str]:
        alert = stored.settings.alert
        if alert is None:
            return []
        last, bucket = ("1h", "minute") if alert.window_minutes <= 60 else ("24h", "hour")
        since = now - timedelta(minutes=alert.window_minutes)
        window_no = int(now.timestamp()) // (alert.window_minutes * 60)
        mailed = []
        for lambda_id, name in await account_functions(self._pool, stored.account_id):
            body = await self._metrics.series(stored.account_id, lambda_id, last, bucket)
            t = totals([it for it in body["items"]
                        if it["bucket_start_ms"] >= since.timestamp() * 1000])
            if t.total < alert.min_invocations or t.failure_rate < alert.failure_rate:
                continue
            message = build_alert(stored.account_id, name, lambda_id, t, alert,
                                  self._settings.smtp_from, stored.settings.recipients)

            async def send(message: EmailMessage = message) -> None:
                await self._sender.send(message)

            mailed += await self._claimed_send(
                stored, f"alert:{lambda_id}:{window_no * alert.window_minutes * 60}", send)
        return mailed

    async def _claimed_send(self, stored: StoredSettings, key: str, send: Any) -> list[str]:
        if not await claim(self._pool, stored.account_id, key, stored.settings.recipients):
            return []
        try:
            await send()
        except Exception as exc:  # noqa: BLE001 - recorded; at most once means no retry
            await mark(self._pool, stored.account_id, key, str(exc)[:500])
            log.warning("report send failed", extra={"account": stored.account_id,
                                                     "period": key, "error": str(exc)[:200]})
            return []
        await mark(self._pool, stored.account_id, key, None)
        return [key]
