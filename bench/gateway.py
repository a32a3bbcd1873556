"""The public API through the gateway, as the harness uses it (httpx, async).

Only documented endpoints (docs/api.md): create/patch/read/delete a lambda,
deploy/undeploy it, invoke it synchronously, read an activation record.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

NODE_ECHO = "function lambda(input, callback) { callback(null, input.payload); }"
DEPLOY_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.02


class BenchError(Exception):
    """The platform answered something the harness cannot measure through."""


@dataclass(frozen=True)
class Credentials:
    gateway_url: str
    account_id: str
    api_key: str

    @property
    def authorization(self) -> str:
        return f"Bearer {self.api_key}"


def fnbus_home(repo: Path) -> Path:
    return Path(os.environ.get("FNBUS_HOME") or repo / ".fnbus")


def load_credentials(home: Path) -> Credentials:
    path = home / "credentials.json"
    try:
        data = json.loads(path.read_text())
        return Credentials(data["gateway_url"].rstrip("/"), data["account_id"], data["api_key"])
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"no usable credentials in {path} ({exc}); run `make up` or "
                         "`python -m fnbus.demo` first") from exc


def unique_name(prefix: str = "bench") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def node_code(marker: str) -> str:
    """The echo lambda; ``marker`` (a trailing comment) makes every save a new version."""
    return f"{NODE_ECHO} // bench {marker}"


@dataclass
class Invocation:
    status: int
    latency_ms: float
    cold_start: bool | None
    duration_ms: float | None
    activation_id: str | None
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class DeployTiming:
    """``save`` is the POST/PATCH that stored the code; ``productive`` when GET first showed it."""

    version: int
    save_ms: float  # the save request's own latency
    deploy_post_ms: float  # the POST …/deployments latency
    total_s: float  # save started → Productive + Deployed observed
    polls: int


class Gateway:
    def __init__(self, creds: Credentials, *, max_connections: int = 64) -> None:
        self.creds = creds
        self.base = f"/api/v1/accounts/{creds.account_id}"
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.client = httpx.AsyncClient(base_url=creds.gateway_url, limits=limits, timeout=60.0,
                                        headers={"Authorization": creds.authorization})
        self.created: list[str] = []

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _json(self, method: str, path: str, expect: tuple[int, ...], **kw: Any) -> Any:
        r = await self.client.request(method, self.base + path, **kw)
        if r.status_code not in expect:
            raise BenchError(f"{method} {path} answered {r.status_code}: {r.text[:300]}")
        return r.json() if r.content else None

    # -- lifecycle ---------------------------------------------------------------------
    async def create_lambda(self, name: str, code: str) -> tuple[dict[str, Any], float]:
        t0 = time.perf_counter()
        body = await self._json("POST", "/lambdas", (201,), json={
            "name": name, "runtime": "nodejs", "description": "fnbus bench (deleted at the end of the run)",
            "code": code})
        self.created.append(body["id"])
        return body, time.perf_counter() - t0

    async def patch_code(self, lambda_id: str, code: str) -> tuple[dict[str, Any], float]:
        t0 = time.perf_counter()
        body = await self._json("PATCH", f"/lambdas/{lambda_id}", (200,), json={"code": code})
        return body, time.perf_counter() - t0

    async def get_lambda(self, lambda_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/lambdas/{lambda_id}", (200,))
        return result

    async def deploy_and_wait(self, lambda_id: str, version: int, saved_at: float, save_s: float,
                              timeout_s: float = DEPLOY_TIMEOUT_S) -> DeployTiming:
        """POST a deployment, poll until Productive/Deployed at ``version``; time from ``saved_at``."""
        t0 = time.perf_counter()
        await self._json("POST", f"/lambdas/{lambda_id}/deployments", (202,))
        post_s = time.perf_counter() - t0
        polls = 0
        while True:
            state = await self.get_lambda(lambda_id)
            polls += 1
            if state.get("deployment_state") == "Failed":
                raise BenchError(f"deployment of {lambda_id} v{version} failed: {state.get('deployment_cause')}")
            if (state.get("state") == "Productive" and state.get("deployment_state") == "Deployed"
                    and state.get("deployed_version") == version):
                done = time.perf_counter()
                return DeployTiming(version=version, save_ms=save_s * 1000, deploy_post_ms=post_s * 1000,
                                    total_s=done - saved_at, polls=polls)
            if time.perf_counter() - t0 > timeout_s:
                raise BenchError(f"{lambda_id} v{version} not Productive after {timeout_s:.0f} s: "
                                 f"state={state.get('state')} deployment_state={state.get('deployment_state')}")
            await asyncio.sleep(POLL_INTERVAL_S)

    async def create_schedule(self, lambda_id: str, cron: str, payload: Any) -> str:
        """A schedule for ``lambda_id``; returns its id."""
        body = await self._json("POST", "/schedules", (201,),
                                json={"lambda_id": lambda_id, "cron": cron, "payload": payload})
        return str(body["id"])

    async def cleanup(self, lambda_id: str, timeout_s: float = 30.0) -> str | None:
        """Undeploy and delete; returns a problem description, or None when gone."""
        deadline = time.monotonic() + timeout_s
        r = await self.client.delete(f"{self.base}/lambdas/{lambda_id}/deployments")
        if r.status_code not in (200, 202, 204, 404, 409):
            return f"undeploy answered {r.status_code}: {r.text[:200]}"
        while time.monotonic() < deadline:
            r = await self.client.delete(f"{self.base}/lambdas/{lambda_id}")
            if r.status_code in (204, 404):
                return None
            if r.status_code != 409:
                return f"delete answered {r.status_code}: {r.text[:200]}"
            await asyncio.sleep(0.2)  # still deployed: the undeploy has not landed yet
        return f"still not deletable after {timeout_s:.0f} s"

    # -- invoking ------------------------------------------------------------------------
    async def invoke(self, lambda_id: str, payload: Any) -> Invocation:
        t0 = time.perf_counter()
        r = await self.client.post(f"{self.base}/lambdas/{lambda_id}/invoke",
                                   json={"headers": [], "payload": payload})
        latency = (time.perf_counter() - t0) * 1000
        try:
            body = r.json()
        except ValueError:
            body = {"raw": r.text[:300]}
        if not isinstance(body, dict):
            body = {"raw": body}
        duration = body.get("duration_ms")
        return Invocation(status=r.status_code, latency_ms=latency, cold_start=body.get("cold_start"),
                          duration_ms=float(duration) if isinstance(duration, int | float) else None,
                          activation_id=body.get("activation_id"), body=body)

    async def activation_version(self, activation_id: str, timeout_s: float = 5.0) -> int | None:
        """The version an activation ran, from its record (log-ingest writes it a moment later)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            r = await self.client.get(f"{self.base}/activations/{activation_id}")
            if r.status_code == 200:
                version = r.json().get("version")
                return int(version) if isinstance(version, int) else None
            await asyncio.sleep(0.2)
        return None


@dataclass
class LoadResult:
    latencies_ms: list[float]
    statuses: dict[int, int]
    cold_starts: int
    durations_ms: list[float]
    elapsed_s: float
    errors: list[str]

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)


async def closed_loop(gw: Gateway, lambda_id: str, *, concurrency: int, total: int | None = None,
                      duration_s: float | None = None) -> LoadResult:
    """``concurrency`` workers, each invoking back to back, until ``total`` calls or ``duration_s``."""
    if total is None and duration_s is None:
        raise ValueError("give total or duration_s")
    latencies: list[float] = []
    durations: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    cold = 0
    issued = 0
    t0 = time.perf_counter()
    stop_at = None if duration_s is None else t0 + duration_s

    async def worker(w: int) -> None:
        nonlocal issued, cold
        while True:
            if total is not None and issued >= total:
                return
            if stop_at is not None and time.perf_counter() >= stop_at:
                return
            issued += 1
            try:
                inv = await gw.invoke(lambda_id, {"n": issued, "w": w})
            except httpx.HTTPError as exc:
                statuses[0] = statuses.get(0, 0) + 1
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            statuses[inv.status] = statuses.get(inv.status, 0) + 1
            if inv.ok:
                latencies.append(inv.latency_ms)
                if inv.duration_ms is not None:
                    durations.append(inv.duration_ms)
                if inv.cold_start:
                    cold += 1
            elif len(errors) < 5:
                errors.append(f"{inv.status}: {json.dumps(inv.body)[:200]}")

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return LoadResult(latencies, statuses, cold, durations, time.perf_counter() - t0, errors)
