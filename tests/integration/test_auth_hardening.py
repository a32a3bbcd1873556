"""JWTs carry audience, key id and scope; revoking their client ends them at once, cheaply.

Also: the API docs and the console load nothing from elsewhere and send a strict
Content-Security-Policy.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import jwt
import pytest

from fnbus.config import Settings
from fnbus.identity import JWT_ALGORITHM, JWT_AUDIENCE, key_id
from services.gateway.auth import KEY_CACHE_TTL_S
from tests.integration.mgmt_support import Account, create_account

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def tenant(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"auth{run_id}")


async def _client(account: Account, name: str) -> dict[str, Any]:
    """An invocation user with an OAuth client: {user_id, id, client_id, secret}."""
    async with account.client() as c:
        r = await c.post("/users", json={"name": name, "roles": ["FaaS-Invocation"]})
        assert r.status_code == 201, r.text
        user_id = r.json()["id"]
        r = await c.post(f"/users/{user_id}/oauth-clients")
        assert r.status_code == 201, r.text
        body = r.json()
    return {"user_id": user_id, "id": body["id"], "client_id": body["prefix"],
            "secret": body["secret"]}


async def _token(gateway: str, client: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=gateway) as c:
        r = await c.post("/oauth/token", data={"grant_type": "client_credentials",
                                                "client_id": client["client_id"],
                                                "client_secret": client["secret"]})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


async def _lookups(gateway: str, kind: str) -> float:
    async with httpx.AsyncClient() as c:
        text = (await c.get(f"{gateway}/metrics")).text
    match = re.search(rf'^fnbus_gateway_credential_lookups_total{{kind="{kind}"}} (\S+)$', text,
                      re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_tokens_carry_audience_key_id_scope_and_client(
        tenant: Account, gateway_url: str, settings: Settings) -> None:
    client = await _client(tenant, "claims")
    token = await _token(gateway_url, client)
    header = jwt.get_unverified_header(token)
    assert header["kid"] == key_id(settings.jwt_secret)
    claims = jwt.decode(token, settings.jwt_secret, algorithms=[JWT_ALGORITHM],
                        audience=JWT_AUDIENCE, issuer="fnbus")
    assert claims["scope"] == "faas.lambda.invoke"
    assert claims["cid"] == client["id"]
    assert settings.jwt_secret not in header["kid"]


async def test_tokens_without_audience_key_id_or_scope_are_refused(
        tenant: Account, gateway_url: str, settings: Settings) -> None:
    client = await _client(tenant, "forger")
    token = await _token(gateway_url, client)
    claims = jwt.decode(token, settings.jwt_secret, algorithms=[JWT_ALGORITHM],
                        audience=JWT_AUDIENCE)
    kid = {"kid": key_id(settings.jwt_secret)}

    def signed(changes: dict[str, Any], headers: dict[str, Any] | None = kid) -> str:
        body = {k: v for k, v in {**claims, **changes}.items() if v is not None}
        return jwt.encode(body, settings.jwt_secret, algorithm=JWT_ALGORITHM, headers=headers)

    cases = {
        "no audience": signed({"aud": None}),
        "other audience": signed({"aud": "someone-else"}),
        "no key id": signed({}, headers=None),
        "unknown key id": signed({}, headers={"kid": "0123456789abcdef"}),
        "no scope": signed({"scope": None}),
        "empty scope": signed({"scope": ""}),
        "unknown scope": signed({"scope": "faas.admin"}),
        "no client": signed({"cid": None}),
    }
    async with httpx.AsyncClient(base_url=gateway_url) as c:
        ok = await c.get(f"/api/v1/accounts/{tenant.id}/lambdas",
                         headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200, ok.text
        for what, bad in cases.items():
            for path in (f"/api/v1/accounts/{tenant.id}/lambdas",
                         f"/api/account/{tenant.id}/lambdas/00000000-0000-0000-0000-000000000000/invoke"):
                r = await c.request("GET" if path.endswith("lambdas") else "POST", path,
                                    json={"payload": {}}, headers={"Authorization": f"Bearer {bad}"})
                assert r.status_code == 401, (what, path, r.text)
                assert r.json()["error"]["code"] == "invalid_token", (what, r.text)


async def test_the_scope_limits_a_token_to_invocation(tenant: Account, gateway_url: str) -> None:
    client = await _client(tenant, "scoped")
    token = await _token(gateway_url, client)
    async with tenant.client(token) as c:
        r = await c.post("/lambdas", json={"name": "by-token", "code": "x"})
        assert r.status_code == 403, r.text
        r = await c.get("/secrets")
        assert r.status_code == 403, r.text
    async with httpx.AsyncClient(base_url=gateway_url,
                                 headers={"Authorization": f"Bearer {token}"}) as c:
        # The original's invocation route accepts the token (the lambda does not exist).
        r = await c.post(f"/api/account/{tenant.id}/lambdas/"
                         "00000000-0000-0000-0000-000000000000/invoke", json={"payload": {}})
        assert r.status_code == 404, r.text
        assert r.json()["errorCode"]


async def test_revoking_the_client_ends_its_tokens_at_once(tenant: Account, gateway_url: str) -> None:
    client = await _client(tenant, "revoked")
    token = await _token(gateway_url, client)
    async with tenant.client(token) as as_client:
        assert (await as_client.get("/lambdas")).status_code == 200
        async with tenant.client() as admin:
            r = await admin.delete(f"/credentials/{client['id']}")
            assert r.status_code == 200, r.text
        r = await as_client.get("/lambdas")
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "token_revoked"
    # And no new token for it.
    async with httpx.AsyncClient(base_url=gateway_url) as c:
        r = await c.post("/oauth/token", data={"client_id": client["client_id"],
                                                "client_secret": client["secret"]})
        assert r.status_code == 401, r.text


async def test_deleting_the_user_ends_its_tokens_at_once(tenant: Account, gateway_url: str) -> None:
    client = await _client(tenant, "leaver")
    token = await _token(gateway_url, client)
    async with tenant.client(token) as as_client:
        assert (await as_client.get("/lambdas")).status_code == 200
        async with tenant.client() as admin:
            r = await admin.delete(f"/users/{client['user_id']}")
            assert r.status_code == 204, r.text
        r = await as_client.get("/lambdas")
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "token_revoked"


async def test_the_revocation_check_costs_at_most_one_lookup_per_ttl(
        tenant: Account, gateway_url: str) -> None:
    """200 requests with one token (and with one API key) hit the registry once per TTL."""
    client = await _client(tenant, "busy")
    token = await _token(gateway_url, client)
    for kind, credential in (("oauth_client", token), ("api_key", tenant.admin_key)):
        before = await _lookups(gateway_url, kind)
        started = time.monotonic()
        async with tenant.client(credential) as c:
            for _ in range(200):
                assert (await c.get("/lambdas")).status_code == 200
        elapsed_s = time.monotonic() - started
        lookups = await _lookups(gateway_url, kind) - before
        bound = 1 + elapsed_s / KEY_CACHE_TTL_S
        assert 0 <= lookups <= bound, (kind, lookups, elapsed_s)
        print(f"{kind}: 200 requests in {elapsed_s:.2f} s, {lookups:.0f} registry look-ups")


# -- docs and console --------------------------------------------------------------------------
async def test_docs_and_console_load_nothing_from_elsewhere(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as c:
        for path in ("/docs", "/console/"):
            r = await c.get(path)
            assert r.status_code == 200, (path, r.text[:200])
            csp = r.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert r.headers["x-frame-options"] == "DENY"
            assert not re.search(r"""(src|href)=["']?(https?:)?//""", r.text), path
        docs = (await c.get("/docs")).text
        assert "/openapi.json" in docs and "/api/v1/accounts/{account_id}/lambdas" in docs
        assert "<script" not in docs
        assert (await c.get("/redoc")).status_code == 404
        assert (await c.get("/openapi.json")).status_code == 200
