"""Server-side means from the services' Prometheus ``/metrics`` during a measurement window.

Read before and after a run, the counters say how much of a call's latency the
gateway (``fnbus_http_request_seconds``) and the invoker
(``fnbus_invocation_duration_seconds``: pick-up to result) spent, and how many
cold starts happened meanwhile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of the text exposition format keyed by (name, labels); comments skipped."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            continue
    return out


def metric_sum(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
               **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels`` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@dataclass(frozen=True)
class Snapshot:
    gateway_seconds: float
    gateway_requests: float
    invoker_warm_seconds: float
    invoker_warm_count: float
    invoker_cold_seconds: float
    invoker_cold_count: float
    ok: bool


def snapshot_from(gateway_text: str | list[str | None] | None, invoker_text: str | None) -> Snapshot:
    """``gateway_text``: one gateway's exposition, or one per replica (summed)."""
    gateway_texts = gateway_text if isinstance(gateway_text, list) else [gateway_text]
    gs = [parse_prometheus(text or "") for text in gateway_texts]
    i = parse_prometheus(invoker_text or "")
    return Snapshot(
        gateway_seconds=sum(metric_sum(g, "fnbus_http_request_seconds_sum") for g in gs),
        gateway_requests=sum(metric_sum(g, "fnbus_http_request_seconds_count") for g in gs),
        invoker_warm_seconds=metric_sum(i, "fnbus_invocation_duration_seconds_sum", cold="false"),
        invoker_warm_count=metric_sum(i, "fnbus_invocation_duration_seconds_count", cold="false"),
        invoker_cold_seconds=metric_sum(i, "fnbus_invocation_duration_seconds_sum", cold="true"),
        invoker_cold_count=metric_sum(i, "fnbus_invocation_duration_seconds_count", cold="true"),
        ok=all(text is not None for text in gateway_texts) and invoker_text is not None)


def window(before: Snapshot, after: Snapshot) -> dict[str, float | None]:
    """Per-request means (ms) and counts between two snapshots."""
    if not (before.ok and after.ok):
        return {}
    g_n = after.gateway_requests - before.gateway_requests
    w_n = after.invoker_warm_count - before.invoker_warm_count
    c_n = after.invoker_cold_count - before.invoker_cold_count
    return {
        "gateway_requests": g_n,
        "gateway_mean_ms": round((after.gateway_seconds - before.gateway_seconds) / g_n * 1000, 3) if g_n else None,
        "invoker_warm_invocations": w_n,
        "invoker_warm_mean_ms": round((after.invoker_warm_seconds - before.invoker_warm_seconds) / w_n * 1000, 3)
        if w_n else None,
        "invoker_cold_invocations": c_n,
    }


async def snapshot(client: httpx.AsyncClient, gateway_urls: list[str], invoker_url: str) -> Snapshot:
    """``gateway_urls``: every gateway replica on its own port (a port they share would
    answer for whichever replica the kernel picks)."""
    texts: list[str | None] = []
    for url in (*gateway_urls, invoker_url):
        try:
            r = await client.get(f"{url}/metrics", timeout=5)
            texts.append(r.text if r.status_code == 200 else None)
        except httpx.HTTPError:
            texts.append(None)
    return snapshot_from(texts[:-1], texts[-1])
