"""The toolbelt end to end: Node and Python lambdas in real containers call the host.

Real Kafka, PostgreSQL and Docker; local HTTP and mTLS servers on 127.0.0.1 are the
outside world (the session's settings exempt 127.0.0.0/8 from the address policy,
never the platform's own ports). Every provisioned account starts with the
platform's host — 127.0.0.1 in tests — on its allowlist; ``localhost`` is not on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fnbus.config import Settings
from fnbus.permissions import Role
from tests.egress_support import CertificateAuthority, LocalServer
from tests.integration.invoke_support import deploy, invoke
from tests.integration.mgmt_support import Account, create_account, user_key

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

RUNTIMES = ["nodejs", "python"]

# Both lambdas run the calls listed in the payload, in order, and return one outcome per
# call. A call is written as its toolbelt wire method and arguments (docs/runner-protocol.md)
# and made the way a lambda author makes it: http.request with HTTPClient / MTLSClient
# (simple: false, full response), secret.* with SecretClient, anything else on the raw wire.
# With "throw" the first error fails the invocation; with "digest" a secret's value comes
# back as its SHA-256, so the value itself never travels in a result.
NODE_LAMBDA = r"""function lambda(input, callback) {
  run(input.payload).then((out) => callback(null, out), (err) => callback(err));
}

const toolbelt = require('lp-faas-toolbelt');
const { Toolbelt } = toolbelt;
const crypto = require('crypto');
const httpClient = Toolbelt.HTTPClient();
const secretClient = Toolbelt.SecretClient();

async function http(req) {
  const opts = { method: req.method, headers: req.headers, simple: false, resolveWithFullResponse: true,
                 followRedirect: req.follow_redirects };
  if (req.body !== null) opts.body = req.body;
  if (req.max_redirects !== null) opts.maxRedirects = req.max_redirects;
  const res = req.mtls
    ? await Toolbelt.MTLSClient({ certificate: req.mtls })[req.method.toLowerCase()](req.url, opts)
    : await httpClient(req.url, opts);
  return { status: res.statusCode, headers: res.headers, body: res.body, url: res.url };
}

async function one(c) {
  if (c.method === 'http.request') return http(c.args[0]);
  if (c.method === 'secret.read') return secretClient.readSecret(...c.args);
  if (c.method === 'secret.update') return secretClient.updateSecret(...c.args);
  return toolbelt._call(c.method, c.args);
}

async function run(p) {
  const out = [];
  for (let i = 0; i < (p.repeat || 1); i++) {
    for (const c of p.calls) {
      try {
        let value = await one(c);
        if (p.digest && value && typeof value.value === 'string') {
          value = { key: value.key, sha256: crypto.createHash('sha256').update(value.value).digest('hex') };
        }
        out.push({ ok: true, value });
      } catch (err) {
        if (p.throw) throw err;
        out.push({ ok: false, code: err.code, message: err.message });
      }
    }
  }
  return out;
}
"""

PY_LAMBDA = """import hashlib

import lp_faas_toolbelt as toolbelt
from lp_faas_toolbelt import RequestError, Toolbelt, ToolbeltError


async def handler(input):
    p = input["payload"]
    out = []
    for _ in range(p.get("repeat", 1)):
        for c in p["calls"]:
            try:
                value = await one(c)
            except (ToolbeltError, RequestError) as exc:
                if p.get("throw"):
                    raise
                out.append({"ok": False, "code": exc.code, "message": str(exc)})
                continue
            if p.get("digest") and isinstance(value, dict) and isinstance(value.get("value"), str):
                value = {"key": value["key"],
                         "sha256": hashlib.sha256(value["value"].encode()).hexdigest()}
            out.append({"ok": True, "value": value})
    return out


async def http(req):
    client = Toolbelt.mtls_client(certificate=req["mtls"]) if req["mtls"] else Toolbelt.http_client()
    options = {"headers": req["headers"], "simple": False, "resolve_with_full_response": True,
               "follow_redirect": req["follow_redirects"]}
    if req["body"] is not None:
        options["body"] = req["body"]
    if req["max_redirects"] is not None:
        options["max_redirects"] = req["max_redirects"]
    res = await client.request(req["url"], method=req["method"], **options)
    return {"status": res.status_code, "headers": res.headers, "body": res.body, "url": res.url}


async def one(c):
    if c["method"] == "http.request":
        return await http(c["args"][0])
    if c["method"] == "secret.read":
        return await Toolbelt.secret_client().read_secret(*c["args"])
    if c["method"] == "secret.update":
        return await Toolbelt.secret_client().update_secret(*c["args"])
    return await toolbelt.call_async(c["method"], c["args"])
"""


@pytest.fixture(scope="module")
async def tenant(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"tb{run_id}")


@pytest.fixture(scope="module")
async def lambdas(tenant: Account) -> dict[str, str]:
    return {
        "nodejs": await deploy(tenant, "toolbelt-node", NODE_LAMBDA),
        "python": await deploy(tenant, "toolbelt-py", PY_LAMBDA, runtime="python"),
    }


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[LocalServer]:
    async with LocalServer() as s:
        yield s


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("fnbus toolbelt test CA")


@pytest.fixture(scope="module")
async def mtls_server(ca: CertificateAuthority) -> AsyncIterator[LocalServer]:
    async with LocalServer(tls=ca.issue_server(["localhost"]), client_ca_pem=ca.cert_pem) as s:
        yield s


def http(url: str, **extra: Any) -> dict[str, Any]:
    req = {"method": "GET", "url": url, "headers": {}, "body": None, "body_encoding": "utf8",
           "timeout_ms": None, "follow_redirects": True, "max_redirects": None, "mtls": None,
           "response_encoding": "utf8"}
    req.update(extra)
    return {"method": "http.request", "args": [req]}


async def run(tenant: Account, lambda_id: str, *calls: dict[str, Any], **flags: Any) -> list[dict[str, Any]]:
    """Invoke the lambda with ``calls``; the outcome of each call (the invocation must succeed)."""
    r = await invoke(tenant, lambda_id, {"calls": list(calls), **flags})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["outcome"] == "SUCCEEDED", body
    return list(body["result"])


async def one(tenant: Account, lambda_id: str, call: dict[str, Any], **flags: Any) -> dict[str, Any]:
    return (await run(tenant, lambda_id, call, **flags))[0]


# -- http.request ---------------------------------------------------------------------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_allowlisted_server_answers(tenant: Account, lambdas: dict[str, str], server: LocalServer,
                                          runtime: str) -> None:
    got = await one(tenant, lambdas[runtime], http(
        server.url("/echo?x=1"), method="POST", headers={"x-from": runtime, "content-type": "text/plain"},
        body=f"hello from {runtime}"))
    assert got["ok"] is True, got
    value = got["value"]
    assert value["status"] == 200
    assert value["url"] == server.url("/echo?x=1")
    assert value["headers"]["content-type"] == "application/json"
    echoed = json.loads(value["body"])
    assert echoed["method"] == "POST" and echoed["body"] == f"hello from {runtime}"
    assert echoed["headers"]["x-from"] == runtime and echoed["query"] == {"x": ["1"]}


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_host_not_on_the_allowlist_is_refused_by_name(
        tenant: Account, lambdas: dict[str, str], server: LocalServer, runtime: str) -> None:
    before = len(server.requests)
    got = await one(tenant, lambdas[runtime], http(server.url("/echo", host="localhost")))
    assert got["ok"] is False and got["code"] == "not_allowlisted", got
    assert "localhost" in got["message"] and "allowlist" in got["message"]
    # Uncaught, the refusal is the invocation's error, naming the host.
    r = await invoke(tenant, lambdas[runtime], {
        "calls": [http(server.url("/echo", host="localhost"))], "throw": True})
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert "localhost is not on the domain allowlist" in error["message"], error
    assert len(server.requests) == before  # nothing reached the server


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_allowlist_change_applies_to_the_next_call(
        tenant: Account, lambdas: dict[str, str], server: LocalServer, runtime: str) -> None:
    url = server.url("/echo")
    async with tenant.client() as c:
        assert (await one(tenant, lambdas[runtime], http(url)))["ok"] is True
        assert (await c.delete("/domains/127.0.0.1")).status_code == 204
        try:
            got = await one(tenant, lambdas[runtime], http(url))
            assert got["ok"] is False and got["code"] == "not_allowlisted", got
            assert "127.0.0.1" in got["message"]
        finally:
            assert (await c.post("/domains", json={"domain": "127.0.0.1"})).status_code == 201
        assert (await one(tenant, lambdas[runtime], http(url)))["ok"] is True


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_redirect_to_a_host_not_on_the_allowlist_is_refused(
        tenant: Account, lambdas: dict[str, str], server: LocalServer, runtime: str) -> None:
    allowed = server.url("/echo")
    outside = server.url("/echo", host="localhost")
    followed, refused = await run(
        tenant, lambdas[runtime],
        http(server.url(f"/redirect/302?to={allowed}")),
        http(server.url(f"/redirect/302?to={outside}")))
    assert followed["ok"] is True and followed["value"]["url"] == allowed, followed
    assert refused["ok"] is False and refused["code"] == "not_allowlisted", refused
    assert "redirect" in refused["message"] and "localhost" in refused["message"]


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_the_platforms_own_ports_are_refused(
        tenant: Account, lambdas: dict[str, str], settings: Settings, runtime: str) -> None:
    # 127.0.0.1 is allowlisted and exempt here: only the platform-port rule stands in the way.
    outcomes = await run(tenant, lambdas[runtime],
                         http(f"http://127.0.0.1:{settings.gateway_port}/healthz"),
                         http(f"http://127.0.0.1:{settings.registry_port}/internal/toolbelt/"
                              f"accounts/{tenant.id}/secrets/lp-faas-default-app-key"),
                         http("http://127.0.0.1:5432/"))
    for got in outcomes:
        assert got["ok"] is False and got["code"] == "address_refused", got
        assert "platform" in got["message"]


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_calls_per_invocation_are_capped(tenant: Account, lambdas: dict[str, str],
                                               runtime: str) -> None:
    outcomes = await run(tenant, lambdas[runtime], {"method": "ping", "args": [1]}, repeat=201)
    assert all(o["ok"] for o in outcomes[:200])
    assert outcomes[200]["ok"] is False and outcomes[200]["code"] == "too_many_calls"
    # The next invocation starts from zero.
    assert (await one(tenant, lambdas[runtime], {"method": "ping", "args": [2]}))["value"] == {"pong": [2]}


# -- secrets ----------------------------------------------------------------------------------------
def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_secrets_read_update_and_deleted_then_unavailable(
        tenant: Account, lambdas: dict[str, str], runtime: str) -> None:
    key, first, second = f"crm-token-{runtime}", f"first-{runtime}-A1b2", f"second-{runtime}-C3d4"
    lam = lambdas[runtime]
    async with tenant.client() as c:
        assert (await c.post("/secrets", json={"key": key, "value": first})).status_code == 201
        read = await one(tenant, lam, {"method": "secret.read", "args": [key]})
        assert read == {"ok": True, "value": {"key": key, "value": first}}
        updated = await one(tenant, lam, {"method": "secret.update", "args": [{"key": key, "value": second}]})
        assert updated == {"ok": True, "value": {"key": key, "value": second}}
        assert (await one(tenant, lam, {"method": "secret.read", "args": [key]}))["value"]["value"] == second
        # The API's view changed too (obfuscated, with a newer timestamp).
        shown = (await c.get(f"/secrets/{key}")).json()
        assert second not in json.dumps(shown)
        assert (await c.delete(f"/secrets/{key}")).status_code == 204
    gone = await one(tenant, lam, {"method": "secret.read", "args": [key]})
    assert gone["ok"] is False and gone["code"] == "secret_not_found", gone
    never = await one(tenant, lam, {"method": "secret.update", "args": [{"key": "never-created", "value": "v"}]})
    assert never["ok"] is False and never["code"] == "secret_not_found"
    bad = await one(tenant, lam, {"method": "secret.read", "args": ["not a key!"]})
    assert bad["ok"] is False and bad["code"] == "bad_request"


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_default_secrets_are_readable(tenant: Account, lambdas: dict[str, str], runtime: str) -> None:
    outcomes = await run(tenant, lambdas[runtime],
                         {"method": "secret.read", "args": ["lp-faas-default-app-key"]},
                         {"method": "secret.read", "args": ["lp-faas-orchestrator-app-key"]}, digest=True)
    for got, key in zip(outcomes, ("lp-faas-default-app-key", "lp-faas-orchestrator-app-key"), strict=True):
        assert got["ok"] is True and got["value"]["key"] == key, got
        assert len(got["value"]["sha256"]) == 64


async def test_no_api_response_or_log_line_contains_a_secret_value(
        tenant: Account, lambdas: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    value, updated = "V4lue-never-to-be-seen-9f8e", "Upd4ted-never-to-be-seen-7d6c"
    key = "leak-check"
    keys = {role: await user_key(tenant, f"leak-{role.value}", [role.value]) for role in Role}
    responses: list[str] = []
    async with tenant.client() as admin:
        r = await admin.post("/secrets", json={"key": key, "value": value})
        assert r.status_code == 201
        responses.append(r.text)
        for runtime in RUNTIMES:
            outcomes = await run(tenant, lambdas[runtime],
                                 {"method": "secret.read", "args": [key]},
                                 {"method": "secret.update", "args": [{"key": key, "value": updated}]},
                                 {"method": "secret.read", "args": [key]},
                                 {"method": "secret.update", "args": [{"key": key, "value": "x" * 16_385}]},
                                 digest=True)
            assert [o["ok"] for o in outcomes] == [True, True, True, False]
            assert outcomes[2]["value"]["sha256"] == sha(updated)
            responses.append(json.dumps(outcomes))
            async with admin.stream("GET", "/activations", params={"lambda_id": lambdas[runtime]}) as listed:
                responses.append((await listed.aread()).decode())
            # Put the first value back for the next runtime.
            assert (await admin.put(f"/secrets/{key}", json={"value": value})).status_code == 200
    for role, api_key in keys.items():
        async with tenant.client(api_key) as c:
            for path in ("/secrets", "/secrets?include_default=true", f"/secrets/{key}"):
                r = await c.get(path)
                assert r.status_code in (200, 403), (role, path, r.text)
                responses.append(r.text)
    for text in responses:
        assert value not in text and updated not in text
    # Every logger at DEBUG. The value written is in this test's own invocation payload,
    # which aiokafka's DEBUG lines dump as the request travels: only there may it show.
    leaked = []
    for record in caplog.records:
        line = f"{record.getMessage()} {record.__dict__}"
        if value in line or (updated in line and not record.name.startswith("aiokafka")):
            leaked.append(f"{record.name}: {record.getMessage()[:300]}")
    assert leaked == []


# -- mTLS ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_lambda_presents_the_uploaded_certificate(
        tenant: Account, lambdas: dict[str, str], ca: CertificateAuthority, mtls_server: LocalServer,
        runtime: str) -> None:
    name = f"partner-{runtime}"
    client = ca.issue_client(f"lambda-{runtime}")
    body = {"name": name, "cert": client.cert_pem, "key": client.key_pem, "ca": ca.cert_pem}
    developer = await user_key(tenant, f"mtls-dev-{runtime}", [Role.DEVELOPER.value])
    async with tenant.client(developer) as c:
        r = await c.post("/certificates", json=body)
        assert r.status_code == 403, r.text
    async with tenant.client() as c:
        r = await c.post("/certificates", json=body)
        assert r.status_code == 201, r.text
    url = mtls_server.url("/echo")
    with_cert, without, unknown = await run(
        tenant, lambdas[runtime], http(url, mtls=name), http(url), http(url, mtls="no-such-cert"))
    assert with_cert["ok"] is True, with_cert
    assert json.loads(with_cert["value"]["body"])["client_cn"] == f"lambda-{runtime}"
    assert without["ok"] is False and without["code"] in ("tls_error", "connect_error"), without
    assert unknown["ok"] is False and unknown["code"] == "certificate_not_found", unknown
    async with tenant.client() as c:
        assert (await c.delete(f"/certificates/{name}")).status_code == 204
    deleted = await one(tenant, lambdas[runtime], http(url, mtls=name))
    assert deleted["ok"] is False and deleted["code"] == "certificate_not_found"


# -- the same through the toolbelt's own clients, as a lambda author writes it -----------------------
# A CRM lookup: read the CRM token from the secret store, rotate it, call the CRM with it
# (HTTPClient), fetch a partner record over mTLS (MTLSClient), and try a host that is not
# on the allowlist. The lambda reports what happened, never the token itself.
NODE_CRM = r"""function lambda(input, callback) {
  lookup(input.payload).then((r) => callback(null, r), (e) => callback(e));
}

const { Toolbelt } = require('lp-faas-toolbelt');
const httpClient = Toolbelt.HTTPClient();
const secretClient = Toolbelt.SecretClient();

async function lookup(p) {
  const token = await secretClient.readSecret(p.secret);
  const crm = await httpClient(p.crmUrl, {
    method: 'POST', json: { customer: 42 }, headers: { authorization: `Bearer ${token.value}` },
    resolveWithFullResponse: true,
  });
  await secretClient.updateSecret({ key: p.secret, value: `${token.value}-rotated` });
  const after = await secretClient.readSecret(p.secret);
  const partner = await Toolbelt.MTLSClient({ certificate: p.certificate }).get(p.partnerUrl, { json: true });
  let refused = null;
  try {
    await httpClient.get(p.forbiddenUrl);
  } catch (err) {
    refused = { name: err.name, message: err.message };
  }
  let missing = null;
  try {
    await secretClient.readSecret('no-such-secret');
  } catch (err) {
    missing = err.code;
  }
  return {
    status: crm.statusCode,
    tokenSent: crm.body.headers.authorization === `Bearer ${token.value}`,
    posted: JSON.parse(crm.body.body),
    rotated: after.value === `${token.value}-rotated`,
    partnerCn: partner.client_cn,
    refused,
    missing,
  };
}
"""

PY_CRM = '''import json

from lp_faas_toolbelt import RequestError, Toolbelt, ToolbeltError


async def handler(input):
    p = input["payload"]
    http = Toolbelt.http_client()
    secrets = Toolbelt.secret_client()
    token = await secrets.read_secret(p["secret"])
    crm = await http.post(p["crmUrl"], json={"customer": 42},
                          headers={"authorization": "Bearer " + token["value"]},
                          resolve_with_full_response=True)
    await secrets.update_secret({"key": p["secret"], "value": token["value"] + "-rotated"})
    after = await secrets.read_secret(p["secret"])
    partner = await Toolbelt.mtls_client(certificate=p["certificate"]).get(p["partnerUrl"], json=True)
    refused = None
    try:
        await http.get(p["forbiddenUrl"])
    except RequestError as exc:
        refused = {"name": exc.name, "message": str(exc)}
    missing = None
    try:
        await secrets.read_secret("no-such-secret")
    except ToolbeltError as exc:
        missing = exc.code
    return {
        "status": crm.status_code,
        "tokenSent": crm.body["headers"]["authorization"] == "Bearer " + token["value"],
        "posted": json.loads(crm.body["body"]),
        "rotated": after["value"] == token["value"] + "-rotated",
        "partnerCn": partner["client_cn"],
        "refused": refused,
        "missing": missing,
    }
'''


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_crm_lookup_with_the_toolbelt_clients(
        tenant: Account, server: LocalServer, mtls_server: LocalServer, ca: CertificateAuthority,
        runtime: str) -> None:
    code, name = (NODE_CRM, "crm-node") if runtime == "nodejs" else (PY_CRM, "crm-py")
    lambda_id = await deploy(tenant, name, code, runtime=runtime)
    secret, token = f"crm-token-clients-{runtime}", f"tok-{runtime}-Zq81"
    certificate = f"crm-partner-{runtime}"
    client = ca.issue_client(f"crm-{runtime}")
    async with tenant.client() as c:
        assert (await c.post("/secrets", json={"key": secret, "value": token})).status_code == 201
        r = await c.post("/certificates", json={"name": certificate, "cert": client.cert_pem,
                                                "key": client.key_pem, "ca": ca.cert_pem})
        assert r.status_code == 201, r.text
    r = await invoke(tenant, lambda_id, {
        "secret": secret, "crmUrl": server.url("/echo"), "certificate": certificate,
        "partnerUrl": mtls_server.url("/echo"), "forbiddenUrl": server.url("/echo", host="localhost")})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["status"] == 200 and result["tokenSent"] is True and result["rotated"] is True
    assert result["posted"] == {"customer": 42}
    assert result["partnerCn"] == f"crm-{runtime}"
    assert result["refused"]["name"] == "RequestError"
    assert "localhost is not on the domain allowlist" in result["refused"]["message"]
    assert result["missing"] == "secret_not_found"
