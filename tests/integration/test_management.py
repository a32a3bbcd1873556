"""Accounts, users, credentials and the lambda lifecycle through the gateway (real PostgreSQL, Kafka)."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import httpx
import jwt
import pytest

from fnbus.config import Settings
from fnbus.identity import JWT_ALGORITHM
from fnbus.kafka import Producer
from fnbus.schemas import DeploymentState, DeploymentStatus, DeployRequest
from fnbus.topics import Topics
from tests.integration.mgmt_support import HELLO, Account, create_account, user_key
from tests.support import eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def acme(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"acme{run_id}")


@pytest.fixture(scope="module")
async def globex(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"globex{run_id}")


async def _create(c: httpx.AsyncClient, name: str, **extra: object) -> httpx.Response:
    return await c.post("/lambdas", json={"name": name, "code": HELLO, **extra})


# -- provisioning --------------------------------------------------------------------------
async def test_terms_of_use_gate_and_provisioning(settings: Settings, gateway_url: str,
                                                  run_id: str) -> None:
    account = await create_account(settings, gateway_url, f"fresh{run_id}", provision=False)
    async with account.client() as c:
        r = await c.get("/lambdas")
        assert r.status_code == 403, r.text
        error = r.json()["error"]
        assert error["code"] == "account_not_provisioned"
        assert "terms-of-use" in error["message"]
        info = await c.get(f"{gateway_url}/api/v1/accounts/{account.id}")
        assert info.status_code == 200 and info.json()["provisioned"] is False

        r = await c.post("/terms-of-use", json={"accept": False})
        assert r.status_code == 422 and r.json()["error"]["code"] == "terms_not_accepted"

        r = await c.post("/terms-of-use", json={"accept": True})
        assert r.status_code == 200 and r.json()["provisioned"] is True
        assert (await c.get("/lambdas")).status_code == 200

        # Default secrets are installed but hidden unless asked for, values obfuscated.
        assert (await c.get("/secrets")).json() == []
        defaults = (await c.get("/secrets", params={"include_default": "true"})).json()
        assert {s["key"] for s in defaults} == {"lp-faas-default-app-key",
                                                "lp-faas-orchestrator-app-key"}
        assert all(s["is_default"] and set(s["value"]) == {"*"} for s in defaults)
        # The platform's own API domain is allowlisted.
        domains = [d["domain"] for d in (await c.get("/domains")).json()]
        assert domains == ["127.0.0.1"]

        # Accepting twice changes nothing.
        r = await c.post("/terms-of-use", json={"accept": True})
        assert r.status_code == 200, r.text
        again = (await c.get("/secrets", params={"include_default": "true"})).json()
        assert [s["key"] for s in again] == [s["key"] for s in defaults]


async def test_only_admin_accepts_terms(settings: Settings, gateway_url: str, run_id: str) -> None:
    account = await create_account(settings, gateway_url, f"devonly{run_id}", provision=False,
                                   roles=["FaaS-Developer"])
    async with account.client() as c:
        r = await c.post("/terms-of-use", json={"accept": True})
        assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"


# -- authentication --------------------------------------------------------------------------
async def test_missing_and_bad_credentials(acme: Account, gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as c:
        r = await c.get(f"/api/v1/accounts/{acme.id}/lambdas")
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_credentials"
        r = await c.get(f"/api/v1/accounts/{acme.id}/lambdas",
                        headers={"Authorization": "Bearer fnb_not-a-real-key"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
        r = await c.get(f"/api/v1/accounts/{acme.id}/lambdas",
                        headers={"Authorization": "Basic Zm9vOmJhcg=="})
        assert r.status_code == 401, r.text


async def test_revoked_key_is_refused(acme: Account) -> None:
    key = await user_key(acme, "temp-dev", ["FaaS-Developer"])
    async with acme.client(key) as c:
        assert (await c.get("/lambdas")).status_code == 200
    async with acme.client() as admin:
        users = (await admin.get("/users")).json()
        user = next(u for u in users if u["name"] == "temp-dev")
        creds = (await admin.get(f"/users/{user['id']}/credentials")).json()
        assert len(creds) == 1 and creds[0]["secret"] is None  # never shown again
        r = await admin.delete(f"/credentials/{creds[0]['id']}")
        assert r.status_code == 200 and r.json()["revoked_ms"] is not None
    async with acme.client(key) as c:
        r = await c.get("/lambdas")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"


async def test_nobody_reaches_another_account(acme: Account, globex: Account) -> None:
    async with acme.client() as c:
        r = await _create(c, "acme-private")
        assert r.status_code == 201, r.text
        lambda_id = r.json()["id"]
    # Globex's admin key on Acme's paths.
    async with acme.client(globex.admin_key) as c:
        for method, path in [("GET", "/lambdas"), ("GET", f"/lambdas/{lambda_id}"),
                             ("DELETE", f"/lambdas/{lambda_id}"), ("GET", "/secrets"),
                             ("GET", "/users")]:
            r = await c.request(method, path)
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["error"]["code"] == "wrong_account"
    # Acme's lambda id under Globex's own account is simply not there.
    async with globex.client() as c:
        r = await c.get(f"/lambdas/{lambda_id}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "lambda_not_found"
        assert (await c.delete(f"/lambdas/{lambda_id}")).status_code == 404
    async with acme.client() as c:
        assert (await c.get(f"/lambdas/{lambda_id}")).status_code == 200


async def _oauth_client(account: Account, name: str, roles: list[str]) -> tuple[str, str]:
    async with account.client() as c:
        r = await c.post("/users", json={"name": name, "roles": roles})
        r = await c.post(f"/users/{r.json()['id']}/oauth-clients")
        assert r.status_code == 201, r.text
        body = r.json()
        return body["prefix"], body["secret"]


async def test_oauth_client_credentials_and_jwt(acme: Account, gateway_url: str,
                                                settings: Settings) -> None:
    client_id, secret = await _oauth_client(acme, "external-system", ["FaaS-Invocation"])
    async with httpx.AsyncClient(base_url=gateway_url) as c:
        form = {"grant_type": "client_credentials", "client_id": client_id,
                "client_secret": secret, "scope": "faas.lambda.invoke"}
        r = await c.post("/oauth/token", data=form)
        assert r.status_code == 200, r.text
        token = r.json()
        assert token["token_type"] == "Bearer" and token["scope"] == "faas.lambda.invoke"
        assert 0 < token["expires_in"] <= 3600
        # The original platform's token path, as its clients call it.
        r = await c.post(f"/sentinel/api/account/{acme.id}/app/token", params={"v": "2.0"},
                         data=form)
        assert r.status_code == 200, r.text
        # Wrong secret, wrong account in the path, wrong scope, wrong grant.
        bad = await c.post("/oauth/token", data={**form, "client_secret": "nope"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_client"
        bad = await c.post("/sentinel/api/account/someoneelse/app/token", data=form)
        assert bad.status_code == 401, bad.text
        bad = await c.post("/oauth/token", data={**form, "scope": "admin"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_scope"
        bad = await c.post("/oauth/token", data={**form, "grant_type": "password"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "unsupported_grant_type"

    jwt_token = token["access_token"]
    async with acme.client(jwt_token) as c:
        assert (await c.get("/lambdas")).status_code == 200
        r = await _create(c, "via-jwt")
        assert r.status_code == 403  # invocation users never create lambdas

    # Expired, forged (other secret), tampered, and alg=none tokens are refused with 401.
    now = int(time.time())
    claims = jwt.decode(jwt_token, settings.jwt_secret, algorithms=[JWT_ALGORITHM],
                        options={"verify_exp": False}, issuer="fnbus", audience="fnbus")
    expired = jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, settings.jwt_secret,
                         algorithm=JWT_ALGORITHM, headers=jwt.get_unverified_header(jwt_token))
    forged = jwt.encode({**claims, "roles": ["FaaS-Admin", "FaaS-Developer"]},
                        "a-guessed-secret-that-is-long-enough-1234", algorithm=JWT_ALGORITHM)
    head, payload, sig = jwt_token.split(".")
    tampered = f"{head}.{payload[:-2]}xx.{sig}"
    unsigned = jwt.encode(claims, key=None, algorithm="none")  # type: ignore[arg-type]
    for bad_token, reason in [(expired, "expired"), (forged, "invalid"), (tampered, "invalid"),
                              (unsigned, "invalid")]:
        async with acme.client(bad_token) as c:
            r = await c.get("/lambdas")
            assert r.status_code == 401, (reason, r.text)
            assert reason in r.json()["error"]["message"]
    # A valid token of Acme on another account's path.
    async with httpx.AsyncClient(base_url=gateway_url,
                                 headers={"Authorization": f"Bearer {jwt_token}"}) as c:
        r = await c.get("/api/v1/accounts/otheraccount/lambdas")
        assert r.status_code == 403, r.text


# -- lambdas ---------------------------------------------------------------------------------
async def test_lambda_crud_and_validation(acme: Account, settings: Settings) -> None:
    async with acme.client() as c:
        r = await _create(c, "greeter", description="says hello", env={"GREETING": "hi"})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["state"] == "Draft" and created["version"] == 1
        assert created["env"] == {"GREETING": "hi"}
        lid = created["id"]

        dup = await _create(c, "greeter")
        assert dup.status_code == 409 and dup.json()["error"]["code"] == "name_taken"

        r = await c.get(f"/lambdas/{lid}")
        assert r.status_code == 200 and r.json()["code"] == HELLO

        r = await c.patch(f"/lambdas/{lid}", json={"description": "new words"})
        assert r.status_code == 200 and r.json()["version"] == 1  # metadata only
        r = await c.patch(f"/lambdas/{lid}", json={"code": HELLO.replace("Hello", "Hi")})
        assert r.status_code == 200 and r.json()["version"] == 2
        versions = (await c.get(f"/lambdas/{lid}/versions")).json()
        assert [v["version"] for v in versions] == [2, 1]
        assert "Hello" in versions[1]["code"] and "Hi" in versions[0]["code"]

        listed = (await c.get("/lambdas", params={"state": "Draft"})).json()
        assert lid in [x["id"] for x in listed]
        assert (await c.get("/lambdas", params={"state": "Productive"})).json() == [] or all(
            x["state"] == "Productive" for x in (await c.get("/lambdas",
                                                             params={"state": "Productive"})).json())
        r = await c.get("/lambdas", params={"state": "Bogus"})
        assert r.status_code == 422, r.text

        assert (await c.delete(f"/lambdas/{lid}")).status_code == 204
        assert (await c.get(f"/lambdas/{lid}")).status_code == 404


@pytest.mark.parametrize("code,fragment", [
    ("const x = 1;\nfunction lambda(input, callback) { callback(null, 1); }", "line 1"),
    ("function handler(input, callback) { callback(null, 1); }", "lambda"),
    ("", "lambda"),
])
async def test_first_line_rule(acme: Account, code: str, fragment: str) -> None:
    async with acme.client() as c:
        r = await c.post("/lambdas", json={"name": f"bad-{abs(hash(code))}", "code": code})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_first_line"
        assert fragment in error["message"].lower()
        assert not [x for x in (await c.get("/lambdas")).json()
                    if x["name"] == f"bad-{abs(hash(code))}"]


async def test_async_first_line_and_python_runtime(acme: Account) -> None:
    async with acme.client() as c:
        r = await c.post("/lambdas", json={
            "name": "async-one",
            "code": "async function lambda(input, callback) {\n  return 42;\n}\n"})
        assert r.status_code == 201, r.text
        r = await c.post("/lambdas", json={"name": "py-one", "runtime": "python",
                                           "template_id": "hello-world-python"})
        assert r.status_code == 201, r.text
        assert r.json()["runtime"] == "python"
        r = await c.post("/lambdas", json={"name": "py-bad", "runtime": "python",
                                           "code": "print('no handler')\n"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_first_line"


async def test_bad_input_changes_nothing(acme: Account, gateway_url: str) -> None:
    async with acme.client() as c:
        before = (await c.get("/lambdas")).json()
        cases = [
            (await c.post("/lambdas", content=b"{not json", headers={"content-type":
                                                                    "application/json"}),
             400, "malformed_json"),
            (await c.post("/lambdas", json={"code": HELLO}), 422, "invalid_request"),
            (await c.post("/lambdas", json={"name": "x", "code": HELLO, "colour": "red"}), 422,
             "invalid_request"),
            (await c.post("/lambdas", json={"name": "big", "code": HELLO + "//" + "x" * 100_000}),
             422, "code_too_large"),
            (await c.post("/lambdas", content=b'{"name": "huge", "code": "' + b"x" * 1_100_000
                          + b'"}', headers={"content-type": "application/json"}),
             413, "payload_too_large"),
            (await c.post("/lambdas", json={"name": "x'; DROP TABLE lambdas;--", "code": HELLO}),
             422, "invalid_request"),
            (await c.post("/lambdas", json={"name": "ok", "code": HELLO, "env": {"BRAND_ID": "x"}}),
             422, "invalid_request"),
            (await c.post("/lambdas", json={"name": "ok", "code": HELLO, "event_id": "nope"}),
             422, "unknown_event"),
            (await c.post("/lambdas", json={"name": "ok", "code": HELLO, "template_id": "nope"}),
             422, "unknown_template"),
            (await c.get("/lambdas/00000000-0000-0000-0000-000000000000"), 404, "lambda_not_found"),
            (await c.get("/lambdas/not-a-uuid"), 404, "lambda_not_found"),
            (await c.patch("/lambdas/not-a-uuid", json={"description": "x"}), 404,
             "lambda_not_found"),
        ]
        for response, status, code in cases:
            assert response.status_code == status, (status, code, response.text[:300])
            assert response.json()["error"]["code"] == code, response.text[:300]
            assert response.json()["error"]["message"]
        assert (await c.get("/lambdas")).json() == before


async def test_unicode_names_round_trip(acme: Account) -> None:
    async with acme.client() as c:
        for name in ["Größe λ-Funktion", "日本語の関数", "emoji-free_name.v2"]:
            r = await _create(c, name)
            assert r.status_code == 201, r.text
            got = (await c.get(f"/lambdas/{r.json()['id']}")).json()
            assert got["name"] == name
        r = await _create(c, "bad/name")
        assert r.status_code == 422, r.text


async def test_event_limits_and_catalogue(acme: Account) -> None:
    async with acme.client() as c:
        events = {e["id"]: e for e in (await c.get("/events")).json()}
        assert events["controllerbot_messaging_new_conversation"]["limit"] == 1
        assert events["conversational_command"]["limit"] == 30
        assert events["bot_connectors_error_hook"]["limit"] == 15
        assert events["denver_post_survey_email_transcript"]["limit"] == 10
        assert len(events) == 15

        r = await c.post("/lambdas", json={
            "name": "on-new-conv", "template_id": "controllerbot_messaging_new_conversation",
            "skills": ["123"]})
        assert r.status_code == 201, r.text
        assert r.json()["event_id"] == "controllerbot_messaging_new_conversation"
        r = await _create(c, "second-new-conv", event_id="controllerbot_messaging_new_conversation")
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "event_limit_reached"
        assert "1" in r.json()["error"]["message"]
        r = await _create(c, "skills-on-command", event_id="conversational_command",
                          skills=["1"])
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_skills"

        templates = (await c.get("/templates")).json()
        bound = {t["event_id"] for t in templates if t["event_id"]}
        assert bound == set(events)  # a runnable template for every event
        assert all(t["sample_payload"] is not None for t in templates)
        assert (await c.get("/templates/nope")).status_code == 404


async def test_deploy_states_and_delete_guard(acme: Account, settings: Settings,
                                              database_url: str) -> None:
    """Draft → (deploy) → Productive → (edit) → Modified → (redeploy) → Productive.

    The deployer's answers arrive over the real deployments topic.
    """
    topics = Topics(settings.topic_prefix)
    async with acme.client() as c, Producer(settings.kafka_bootstrap) as producer:
        lid = (await _create(c, "lifecycle")).json()["id"]

        async def deploy_and_confirm(expected_version: int) -> None:
            r = await c.post(f"/lambdas/{lid}/deployments")
            assert r.status_code == 202, r.text
            dep = r.json()
            assert dep["state"] == "Deploying" and dep["version"] == expected_version
            again = await c.post(f"/lambdas/{lid}/deployments")
            assert again.status_code == 409, again.text
            status = DeploymentStatus(deployment_id=dep["id"], account_id=acme.id,
                                      lambda_id=lid, version=expected_version,
                                      state=DeploymentState.DEPLOYED, image="img:1")
            await producer.send(topics.deployments, status.to_bytes(), key=lid)

        await deploy_and_confirm(1)

        async def state() -> str | None:
            body = (await c.get(f"/lambdas/{lid}")).json()
            return body["state"] if body["deployment_state"] == "Deployed" else None

        assert await eventually(state, what="Productive") == "Productive"
        got = (await c.get(f"/lambdas/{lid}")).json()
        assert got["deployed_version"] == 1

        r = await c.delete(f"/lambdas/{lid}")
        assert r.status_code == 409 and r.json()["error"]["code"] == "lambda_deployed"

        await c.patch(f"/lambdas/{lid}", json={"code": HELLO.replace("World", "there")})
        assert (await c.get(f"/lambdas/{lid}")).json()["state"] == "Modified"

        await deploy_and_confirm(2)

        async def productive_v2() -> bool:
            body = (await c.get(f"/lambdas/{lid}")).json()
            return body["state"] == "Productive" and body["deployed_version"] == 2

        await eventually(productive_v2, what="Productive at version 2")
        history = (await c.get(f"/lambdas/{lid}/deployments")).json()
        assert [d["version"] for d in history] == [2, 1]

        r = await c.delete(f"/lambdas/{lid}/deployments")
        assert r.status_code == 200 and r.json()["action"] == "undeploy"
        assert (await c.get(f"/lambdas/{lid}")).json()["state"] == "Draft"
        assert (await c.delete(f"/lambdas/{lid}")).status_code == 204

    # A deploy request reached the deployer's topic with the code of the version.
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval("SELECT count(*) FROM lambdas WHERE id = $1::uuid", lid)
        assert count == 0
    finally:
        await conn.close()


async def test_deploy_request_carries_code(acme: Account, settings: Settings) -> None:
    from aiokafka import AIOKafkaConsumer

    topics = Topics(settings.topic_prefix)
    consumer = AIOKafkaConsumer(topics.deploy_requests, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        async with acme.client() as c:
            lid = (await _create(c, "carried", env={"A": "1"})).json()["id"]
            dep = (await c.post(f"/lambdas/{lid}/deployments")).json()
        deadline = time.monotonic() + 20
        found = None
        while found is None and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    req = DeployRequest.from_bytes(rec.value)
                    if req.deployment_id == dep["id"]:
                        found = req
        assert found is not None
        assert found.code == HELLO and found.env == {"A": "1"} and found.version == 1
        assert found.account_id == acme.id and found.lambda_id == lid
    finally:
        await consumer.stop()


async def test_secrets_and_domains(acme: Account) -> None:
    async with acme.client() as c:
        r = await c.post("/secrets", json={"key": "api-token", "value": "s3cr3t-value"})
        assert r.status_code == 201 and "s3cr3t" not in json.dumps(r.json())
        assert (await c.post("/secrets", json={"key": "api-token", "value": "x"})).status_code == 409
        assert (await c.post("/secrets", json={"key": "bad key!", "value": "x"})).status_code == 422
        assert (await c.put("/secrets/api-token", json={"value": "other"})).status_code == 200
        assert (await c.get("/secrets/api-token")).json()["value"].startswith("*")
        assert (await c.delete("/secrets/api-token")).status_code == 204
        assert (await c.get("/secrets/api-token")).status_code == 404

        assert (await c.post("/domains", json={"domain": "*.Example.com"})).json()["domain"] == \
            "*.example.com"
        for bad in ["*.*.example.com", "http://example.com", "exa mple.com", "example.com/path"]:
            r = await c.post("/domains", json={"domain": bad})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_domain", bad
        assert (await c.post("/domains", json={"domain": "*.example.com"})).status_code == 409
        assert (await c.delete("/domains/*.example.com")).status_code == 204


async def test_concurrent_creates_respect_the_limit(acme: Account) -> None:
    async with acme.client() as c:
        results = await asyncio.gather(*[
            _create(c, f"ttr-{i}", event_id="controllerbot_messaging_ttr") for i in range(5)])
        assert sorted(r.status_code for r in results) == [201, 409, 409, 409, 409]


async def test_operator_cli_creates_an_account(settings: Settings, gateway_url: str,
                                               run_id: str) -> None:
    import argparse

    from fnbus import admin

    args = argparse.Namespace(admin_command="create-account", account_id=f"cli{run_id}",
                              name=None, admin_name="ops", roles="FaaS-Admin,FaaS-Developer",
                              accept_terms=True)
    created = await admin.run(args, settings)
    assert created["api_key"].startswith("fnb_") and created["provisioned"] is True
    assert created["roles"] == ["FaaS-Admin", "FaaS-Developer"]
    account = Account(f"cli{run_id}", created["api_key"], created["user_id"], gateway_url)
    async with account.client() as c:
        assert (await c.get("/lambdas")).status_code == 200
    with pytest.raises(SystemExit, match="account_exists"):
        await admin.run(args, settings)
