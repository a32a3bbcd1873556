"""A thin typed client of the public API (docs/api.md) — the only way the CLI talks to fnbus."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from fnbus.devcli.config import Profile
from fnbus.devcli.errors import CliError, Exit, exit_for_status

TIMEOUT_S = 60.0
SSE = "text/event-stream"


def api_error(response: httpx.Response) -> CliError:
    """The API's error shape ``{"error": {"code", "message"}}`` as a CliError."""
    try:
        err = response.json()["error"]
        message = f"{err['code']}: {err['message']}"
    except (ValueError, KeyError, TypeError):
        message = response.text[:500] or response.reason_phrase
    return CliError(f"the API answered {response.status_code} — {message}",
                    exit_for_status(response.status_code))


def fetch_token(url: str, client_id: str, client_secret: str) -> tuple[str, float]:
    """The client-credentials grant: (access token, expiry as epoch seconds)."""
    try:
        r = httpx.post(f"{url.rstrip('/')}/oauth/token", timeout=TIMEOUT_S, data={
            "grant_type": "client_credentials", "client_id": client_id,
            "client_secret": client_secret, "scope": "faas.lambda.invoke"})
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc}", Exit.SERVER) from None
    if r.status_code != 200:
        raise api_error(r)
    body = r.json()
    return str(body["access_token"]), time.time() + float(body.get("expires_in", 3600))


class Api:
    """Calls under ``/api/v1/accounts/{account}`` with the profile's credentials."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        token = profile.api_key
        if token is None:
            if not (profile.client_id and profile.client_secret):
                raise CliError("the profile has neither an API key nor an OAuth client", Exit.AUTH)
            if profile.token and (profile.token_expires_at or 0) > time.time() + 30:
                token = profile.token
            else:
                token, profile.token_expires_at = fetch_token(
                    profile.url, profile.client_id, profile.client_secret)
                profile.token = token
        self.http = httpx.Client(
            base_url=f"{profile.url.rstrip('/')}/api/v1/accounts/{profile.account}",
            headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT_S)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------
    def send(self, method: str, path: str, *, ok: tuple[int, ...] = (), **kwargs: Any
             ) -> httpx.Response:
        """One request; statuses >= 400 not in ``ok`` raise a CliError with its exit code."""
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.profile.url}: {exc}", Exit.SERVER) from None
        if r.status_code >= 400 and r.status_code not in ok:
            raise api_error(r)
        return r

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.send(method, path, **kwargs)
        return None if r.status_code == 204 or not r.content else r.json()

    # -- account and catalogue ------------------------------------------------------------
    def account(self) -> dict[str, Any]:
        # an absolute URL: httpx would add a slash to an empty path under base_url
        return dict(self.json("GET", str(self.http.base_url).rstrip("/")))

    def events(self) -> list[dict[str, Any]]:
        return list(self.json("GET", "/events"))

    # -- lambdas --------------------------------------------------------------------------
    def lambdas(self, state: str | None = None) -> list[dict[str, Any]]:
        params = {"state": state} if state else None
        return list(self.json("GET", "/lambdas", params=params))

    def lambda_by_name(self, name: str, *, required: bool = True) -> dict[str, Any] | None:
        """The lambda called ``name`` with its code (404 → exit 3 when required)."""
        for item in self.lambdas():
            if item["name"] == name:
                return self.get_lambda(item["id"])
        if required:
            raise CliError(f"no function named {name!r} in account {self.profile.account}",
                           Exit.NOT_FOUND)
        return None

    def get_lambda(self, lambda_id: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/lambdas/{lambda_id}"))

    def create_lambda(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.json("POST", "/lambdas", json=body))

    def update_lambda(self, lambda_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.json("PATCH", f"/lambdas/{lambda_id}", json=body))

    def deployments(self, lambda_id: str) -> list[dict[str, Any]]:
        return list(self.json("GET", f"/lambdas/{lambda_id}/deployments"))

    def deploy(self, lambda_id: str) -> dict[str, Any]:
        return dict(self.json("POST", f"/lambdas/{lambda_id}/deployments"))

    def undeploy(self, lambda_id: str) -> Any:
        return self.json("DELETE", f"/lambdas/{lambda_id}/deployments")

    def invoke(self, lambda_id: str, payload: Any, headers: list[dict[str, str]]
               ) -> tuple[int, dict[str, Any]]:
        """(status, body): a failed function (502/504) is an answer, not an exception."""
        r = self.send("POST", f"/lambdas/{lambda_id}/invoke", ok=(502, 504),
                      json={"headers": headers, "payload": payload})
        return r.status_code, dict(r.json())

    # -- observability --------------------------------------------------------------------
    def logs(self, params: dict[str, Any]) -> dict[str, Any]:
        return dict(self.json("GET", "/logs", params=params))

    def tail(self, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Log lines from the live tail (SSE) as they come; heartbeats are skipped."""
        request = self.http.build_request("GET", "/logs/stream", params=params,
                                          headers={"Accept": SSE},
                                          timeout=httpx.Timeout(TIMEOUT_S, read=None))
        try:
            r = self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.profile.url}: {exc}", Exit.SERVER) from None
        try:
            if r.status_code != 200:
                r.read()
                raise api_error(r)
            data: list[str] = []
            for line in r.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif line == "" and data:
                    yield json.loads("\n".join(data))
                    data = []
        finally:
            r.close()

    def metrics(self, last: str, *, csv: bool = False, lambda_id: str | None = None) -> Any:
        params = {"last": last, **({"lambda_id": lambda_id} if lambda_id else {})}
        if csv:
            return self.send("GET", "/metrics", params=params, headers={"Accept": "text/csv"}).text
        return self.json("GET", "/metrics", params=params)

    # -- schedules and domains ------------------------------------------------------------
    def schedules(self) -> list[dict[str, Any]]:
        return list(self.json("GET", "/schedules"))

    def create_schedule(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.json("POST", "/schedules", json=body))

    def add_domain(self, domain: str) -> dict[str, Any]:
        return dict(self.json("POST", "/domains", json={"domain": domain}))
