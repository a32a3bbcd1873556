"""The Node toolbelt (libs/runtimes/node/lp-faas-toolbelt) against the wire contract.

A real Node runner runs each lambda; the test plays the host over the socket
with a fake toolbelt handler that records every ``toolbelt_call`` (so the
exact wire request is asserted) and answers as the host would.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fnbus import catalog
from fnbus.runner_protocol import ToolbeltCallError, check_first_line
from tests.toolbelt_host import FakeHost, Run, lambda_runs

NODE_DIR = Path(__file__).resolve().parents[2] / "libs" / "runtimes" / "node"
RUNNER = NODE_DIR / "runner.js"

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="needs node on PATH"),
    pytest.mark.timeout(20),
]


@pytest.fixture
async def run() -> AsyncIterator[Run]:
    """``await run(code, input)`` → (the lambda's result value, the fake host)."""
    async with lambda_runs(["node", str(RUNNER)], "node", dict(os.environ)) as runs:
        yield runs


def lambda_body(body: str) -> str:
    """An async lambda around ``body``, with the toolbelt in scope."""
    return (
        "async function lambda(input, callback) {\n"
        "  const tb = require('lp-faas-toolbelt');\n"
        "  const { Toolbelt } = tb;\n"
        "  const out = {};\n"
        "  const fail = (e) => ({ name: e.name, code: e.code, message: e.message, statusCode: e.statusCode,\n"
        "                         error: e.error && e.error.name ? e.error.name : e.error });\n"
        f"{body}\n"
        "  return out;\n"
        "}\n"
    )


def wire(url: str, **fields: Any) -> dict[str, Any]:
    """The http.request the contract expects, with the defaults filled in."""
    req = {
        "method": "GET",
        "url": url,
        "headers": {},
        "body": None,
        "body_encoding": "utf8",
        "timeout_ms": None,
        "follow_redirects": True,
        "max_redirects": None,
        "mtls": None,
        "response_encoding": "utf8",
    }
    req.update(fields)
    return req


# --------------------------------------------------------------------------- HTTPClient


async def test_uri_and_options_forms_and_qs_merge(run: Run) -> None:
    value, host = await run(
        lambda_body(
            "  const http = Toolbelt.HTTPClient();\n"
            "  out.a = await http('https://api.example/items?keep=1&page=9', { qs: { page: 2, tags: ['x', 'y'],"
            " f: { a: 'b c' }, skip: undefined }, headers: { 'X-Trace': 7 } });\n"
            "  out.b = await http({ url: 'https://api.example/b', method: 'delete' });\n"
            "  out.c = await http({ baseUrl: 'https://api.example/v1/', uri: '/users', qs: { q: 'ä&=' } });\n"
        )
    )
    a, b, c = host.of("http.request")
    assert a == [
        wire(
            "https://api.example/items?keep=1&page=2&tags%5B0%5D=x&tags%5B1%5D=y&f%5Ba%5D=b%20c",
            headers={"X-Trace": "7"},
        )
    ]
    assert b == [wire("https://api.example/b", method="DELETE")]
    assert c == [wire("https://api.example/v1/users?q=%C3%A4%26%3D")]
    # without json the body is the text the host sent
    assert isinstance(value["a"], str) and json.loads(value["a"])["echo"]["method"] == "GET"


async def test_verb_helpers(run: Run) -> None:
    _, host = await run(
        lambda_body(
            "  const http = Toolbelt.HTTPClient();\n"
            "  for (const verb of ['get', 'head', 'post', 'put', 'patch', 'delete', 'del', 'options']) {\n"
            "    await http[verb]('https://api.example/' + verb, { body: 'x' });\n"
            "  }\n"
            "  await http.post({ uri: 'https://api.example/opts', body: 'y' });\n"
        )
    )
    sent = [(a[0]["method"], urlsplit(a[0]["url"]).path, a[0]["body"]) for a in host.of("http.request")]
    assert sent == [
        ("GET", "/get", "x"),
        ("HEAD", "/head", "x"),
        ("POST", "/post", "x"),
        ("PUT", "/put", "x"),
        ("PATCH", "/patch", "x"),
        ("DELETE", "/delete", "x"),
        ("DELETE", "/del", "x"),
        ("OPTIONS", "/options", "x"),
        ("POST", "/opts", "y"),
    ]


async def test_json_true_json_object_and_form(run: Run) -> None:
    value, host = await run(
        lambda_body(
            "  const http = Toolbelt.HTTPClient();\n"
            "  out.parsed = await http.post('https://api.example/j', { json: true, body: { a: [1, 'ü'] } });\n"
            "  out.asBody = await http.put('https://api.example/o', { json: { b: 2 } });\n"
            "  out.notJson = await http('https://api.example/text', { json: true });\n"
            "  out.empty = await http('https://api.example/empty', { json: true });\n"
            "  out.ownType = await http.post('https://api.example/t', { json: true, body: {},"
            " headers: { 'Content-Type': 'application/vnd.x+json', Accept: 'text/plain' } });\n"
            "  out.form = await http.post('https://api.example/f', { form: { name: 'A B', n: 1, list: [1, 2] } });\n"
            "  out.bytes = await http.post('https://api.example/raw', { body: Buffer.from([0, 255]) });\n"
        )
    )
    j, o, text, empty, own, form, raw = (a[0] for a in host.of("http.request"))
    assert j == wire(
        "https://api.example/j",
        method="POST",
        headers={"accept": "application/json", "content-type": "application/json"},
        body='{"a":[1,"ü"]}',
    )
    assert value["parsed"]["echo"] == j  # the JSON answer was parsed
    assert o["method"] == "PUT" and o["body"] == '{"b":2}'
    assert o["headers"] == {"accept": "application/json", "content-type": "application/json"}
    assert text["headers"] == {"accept": "application/json"} and text["body"] is None
    assert value["notJson"] == "plain text, not JSON"
    assert "empty" not in value  # undefined, like request-promise with json and no body
    assert own["headers"] == {"Content-Type": "application/vnd.x+json", "Accept": "text/plain"}
    assert form["headers"] == {"content-type": "application/x-www-form-urlencoded"}
    assert form["body"] == "name=A%20B&n=1&list%5B0%5D=1&list%5B1%5D=2"
    assert raw["body"] == base64.b64encode(b"\x00\xff").decode() and raw["body_encoding"] == "base64"


async def test_simple_and_full_response(run: Run) -> None:
    value, _ = await run(
        lambda_body(
            "  const http = Toolbelt.HTTPClient();\n"
            "  try { await http('https://api.example/status/404', { json: true }); }\n"
            "  catch (e) { out.simple = { name: e.name, statusCode: e.statusCode, message: e.message, error: e.error,\n"
            "    isClass: e instanceof tb.StatusCodeError && e instanceof tb.errors.StatusCodeError,\n"
            "    responseStatus: e.response.statusCode, optionsUri: e.options.uri }; }\n"
            "  out.notSimple = await http('https://api.example/status/404', { simple: false });\n"
            "  const full = await http.get('https://api.example/redirected', { resolveWithFullResponse: true });\n"
            "  out.full = { statusCode: full.statusCode, headers: full.headers, href: full.request.uri.href,\n"
            "    bodyType: typeof full.body };\n"
            "  const full404 = await http.get('https://api.example/status/500',"
            " { simple: false, resolveWithFullResponse: true, json: true });\n"
            "  out.full404 = [full404.statusCode, full404.body];\n"
            "  out.created = await http('https://api.example/status/201', { json: true });\n"
        )
    )
    assert value["simple"] == {
        "name": "StatusCodeError",
        "statusCode": 404,
        "message": '404 - {"error":"nope","status":404}',
        "error": {"error": "nope", "status": 404},
        "isClass": True,
        "responseStatus": 404,
        "optionsUri": "https://api.example/status/404",
    }
    assert json.loads(value["notSimple"]) == {"error": "nope", "status": 404}
    assert value["full"] == {
        "statusCode": 200,
        "headers": {"content-type": "application/json", "x-seen": "a, b"},
        "href": "https://other.example/final",
        "bodyType": "string",
    }
    assert value["full404"] == [500, {"error": "nope", "status": 500}]
    assert value["created"] == {"error": "nope", "status": 201}


async def test_encoding_timeout_redirects_and_auth(run: Run) -> None:
    value, host = await run(
        lambda_body(
            "  const http = Toolbelt.HTTPClient();\n"
            "  const buf = await http('https://api.example/binary', { encoding: null });\n"
            "  out.binary = [Buffer.isBuffer(buf), buf.toString('hex')];\n"
            "  out.latin1 = await http('https://api.example/binary', { encoding: 'latin1' });\n"
            "  await http('https://api.example/t', { timeout: 1500, followRedirect: false, maxRedirects: 3 });\n"
            "  await http('https://api.example/basic', { auth: { user: 'u', pass: 'p' } });\n"
            "  await http('https://api.example/bearer', { auth: { bearer: 'tok' } });\n"
        )
    )
    binary, latin1, timed, basic, bearer = (a[0] for a in host.of("http.request"))
    assert binary["response_encoding"] == "base64" and value["binary"] == [True, "00ff10"]
    assert latin1["response_encoding"] == "base64" and value["latin1"] == "\x00ÿ\x10"
    assert timed == wire("https://api.example/t", timeout_ms=1500, follow_redirects=False, max_redirects=3)
    assert basic["headers"] == {"authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    assert bearer["headers"] == {"authorization": "Bearer tok"}


async def test_rate_limit_transport_errors_and_bad_options(run: Run) -> None:
    value, host = await run(
        lambda_body(
            "  const http = Toolbelt.HTTPClient();\n"
            "  const tries = [\n"
            "    () => http('https://busy.example/x', { simple: false }),\n"
            "    () => http('https://blocked.example/x'),\n"
            "    () => http('https://down.example/x'),\n"
            "    () => http('not a url'),\n"
            "    () => http('ftp://files.example/x'),\n"
            "    () => http('https://api.example/x', { body: { a: 1 } }),\n"
            "  ];\n"
            "  out.errors = [];\n"
            "  for (const t of tries) { try { await t(); out.errors.push('resolved'); }"
            " catch (e) { out.errors.push(fail(e)); } }\n"
            "  try { await http('https://blocked.example/y'); } catch (e) {\n"
            "    out.requestError = [e instanceof tb.RequestError, e.cause.name, e.cause.code,"
            " e.options.uri, e.response === undefined]; }\n"
            "  const cb = await new Promise((resolve) => http('https://api.example/cb', { json: true },"
            " (err, response, body) => resolve([err, response, body.echo.url])));\n"
            "  out.callback = cb;\n"
        )
    )
    limited, blocked, down, bad_uri, ftp, obj_body = value["errors"]
    assert limited["name"] == "StatusCodeError" and limited["statusCode"] == 429
    assert limited["code"] == "rate_limited" and limited["message"].startswith("429 - ")
    assert blocked["name"] == "RequestError" and blocked["code"] == "not_allowlisted"
    assert "blocked.example is not on the domain allowlist" in blocked["message"]
    assert blocked["error"] == "ToolbeltError"
    assert down["name"] == "RequestError" and down["code"] == "connect_error"
    assert bad_uri["name"] == "RequestError" and bad_uri["code"] == "bad_request"
    assert "Invalid URI" in bad_uri["message"]
    assert ftp["code"] == "bad_request" and obj_body["code"] == "bad_request"
    assert value["requestError"] == [True, "ToolbeltError", "not_allowlisted", "https://blocked.example/y", True]
    assert value["callback"] == [None, None, "https://api.example/cb"]
    # the refused options never reached the host
    assert [urlsplit(a[0]["url"]).hostname for a in host.of("http.request")] == [
        "busy.example",
        "blocked.example",
        "down.example",
        "blocked.example",
        "api.example",
    ]


async def test_defaults(run: Run) -> None:
    _, host = await run(
        lambda_body(
            "  const api = Toolbelt.HTTPClient().defaults({ baseUrl: 'https://api.example', json: true });\n"
            "  await api.get('/one');\n"
        )
    )
    assert host.of("http.request")[0][0]["url"] == "https://api.example/one"
    assert host.of("http.request")[0][0]["headers"] == {"accept": "application/json"}


# --------------------------------------------------------------------------- MTLSClient


async def test_mtls_names_and_call_shapes(run: Run) -> None:
    value, host = await run(
        lambda_body(
            "  const byName = Toolbelt.MTLSClient({ certificate: 'bank-client' });\n"
            "  const byCert = Toolbelt.MTLSClient({ cert: 'legacy-name', key: 'ignored' });\n"
            "  out.lp = await byName.post('https://bank.example/pay', { Accept: 'application/json' },"
            " { amount: 5 }, { json: true, allowSelfSigned: true });\n"
            "  out.lp404 = await byName.get('https://bank.example/status/404');\n"
            "  out.rp = await byCert.get('https://bank.example/rp', { json: true });\n"
            "  try { await byCert.get('https://bank.example/status/403', { json: true }); }"
            " catch (e) { out.rpError = fail(e); }\n"
            "  out.head = await byName.head('https://bank.example/h', { 'X-A': '1' });\n"
            "  try { Toolbelt.MTLSClient({ cert: '-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n',"
            " key: 'k' }); }\n"
            "  catch (e) { out.pem = fail(e); }\n"
            "  const none = Toolbelt.MTLSClient({});\n"
            "  try { await none.get('https://bank.example/x'); } catch (e) { out.none = fail(e); }\n"
        )
    )
    pay, lp404, rp, rp403, head = (a[0] for a in host.of("http.request"))
    assert pay == wire(
        "https://bank.example/pay",
        method="POST",
        headers={"Accept": "application/json", "content-type": "application/json"},
        body='{"amount":5}',
        mtls="bank-client",
    )
    assert value["lp"]["statusCode"] == 200 and value["lp"]["body"]["echo"] == pay
    assert value["lp"]["headers"]["content-type"] == "application/json"
    assert value["lp404"]["statusCode"] == 404 and isinstance(value["lp404"]["body"], str)  # no reject, no parse
    assert lp404["mtls"] == "bank-client"
    assert rp["mtls"] == "legacy-name" and rp["headers"] == {"accept": "application/json"}
    assert value["rp"]["echo"] == rp
    assert rp403["mtls"] == "legacy-name" and value["rpError"]["statusCode"] == 403
    assert head["method"] == "HEAD" and head["headers"] == {"X-A": "1"} and "body" not in value["head"]
    assert value["pem"]["code"] == "bad_request"
    assert "not its PEM contents" in value["pem"]["message"] and "uploads" in value["pem"]["message"]
    assert value["none"]["code"] == "bad_request" and "name of an uploaded certificate" in value["none"]["message"]


# --------------------------------------------------------------------------- secrets


async def test_secrets(run: Run) -> None:
    value, host = await run(
        lambda_body(
            "  const secrets = Toolbelt.SecretClient();\n"
            "  out.read = await secrets.readSecret('crm-token');\n"
            "  out.updated = await secrets.updateSecret({ key: 'crm-token', value: 'new' });\n"
            "  out.again = await secrets.readSecret('crm-token');\n"
            "  const bad = [\n"
            "    () => secrets.readSecret('no such'),\n"
            "    () => secrets.readSecret('x'.repeat(101)),\n"
            "    () => secrets.updateSecret({ key: 'ok', value: 'v'.repeat(16385) }),\n"
            "    () => secrets.updateSecret({ key: 'ok', value: { nested: true } }),\n"
            "    () => secrets.updateSecret('crm-token'),\n"
            "    () => secrets.readSecret('missing'),\n"
            "  ];\n"
            "  out.errors = [];\n"
            "  for (const t of bad) { try { await t(); out.errors.push('resolved'); }"
            " catch (e) { out.errors.push(fail(e)); } }\n"
            "  out.maxOk = (await secrets.updateSecret({ key: 'A_b-9', value: 'v'.repeat(16384) })).key;\n"
        )
    )
    assert value["read"] == {"key": "crm-token", "value": "s3cr3t"}
    assert value["updated"] == {"key": "crm-token", "value": "new"}
    assert value["again"]["value"] == "new"
    assert [e["code"] for e in value["errors"]] == ["bad_request"] * 5 + ["secret_not_found"]
    assert "invalid secret key" in value["errors"][0]["message"]
    assert "16384" in value["errors"][2]["message"]
    assert value["errors"][5]["name"] == "ToolbeltError"
    assert value["maxOk"] == "A_b-9"
    assert host.of("secret.read") == [["crm-token"], ["crm-token"], ["missing"]]
    assert host.of("secret.update") == [
        [{"key": "crm-token", "value": "new"}],
        [{"key": "A_b-9", "value": "v" * 16384}],
    ]


# --------------------------------------------------------------------------- context store


async def test_every_context_method(run: Run) -> None:
    value, host = await run(
        lambda_body(
            "  const ctx = Toolbelt.ContextServiceClient({ apiKey: 'ignored', accountId: 'ignored' });\n"
            "  out.created = await ctx.createNamespace('orders', { ttl: 3600 });\n"
            "  await ctx.createNamespace('plain');\n"
            "  await ctx.deleteNamespace('plain');\n"
            "  await ctx.getListOfNamespaces();\n"
            "  await ctx.setPropertiesInNamespace('orders', { count: 1 }, 'sess-1', 60);\n"
            "  await ctx.setPropertiesInNamespace('orders', { count: 1 });\n"
            "  await ctx.updatePropertiesInNamespace('orders', { count: 2 }, 'sess-1');\n"
            "  await ctx.updatePropertiesInNamespace('orders', { count: 3 }, undefined, 30);\n"
            "  await ctx.getAllPropertiesInSession('orders', 'sess-1');\n"
            "  await ctx.getAllPropertiesInSession('orders');\n"
            "  await ctx.getSelectedPropertiesInSession('orders', ['count', 'x'], 'sess-1');\n"
            "  await ctx.getPropertyInSession('orders', 'count');\n"
            "  await ctx.deletePropertyInSession('orders', 'count', 'sess-1');\n"
            "  await ctx.deleteSession('orders', 'sess-1');\n"
            "  try { await ctx.getListOfSessions('orders'); } catch (e) { out.sessions = fail(e); }\n"
        )
    )
    assert value["created"] == {"method": "context.createNamespace", "args": ["orders", {"ttl": 3600}]}
    assert [(m, a) for m, a in host.calls] == [
        ("context.createNamespace", ["orders", {"ttl": 3600}]),
        ("context.createNamespace", ["plain"]),
        ("context.deleteNamespace", ["plain"]),
        ("context.getListOfNamespaces", []),
        ("context.setPropertiesInNamespace", ["orders", {"count": 1}, "sess-1", 60]),
        ("context.setPropertiesInNamespace", ["orders", {"count": 1}]),
        ("context.updatePropertiesInNamespace", ["orders", {"count": 2}, "sess-1"]),
        ("context.updatePropertiesInNamespace", ["orders", {"count": 3}, None, 30]),
        ("context.getAllPropertiesInSession", ["orders", "sess-1"]),
        ("context.getAllPropertiesInSession", ["orders"]),
        ("context.getSelectedPropertiesInSession", ["orders", ["count", "x"], "sess-1"]),
        ("context.getPropertyInSession", ["orders", "count"]),
        ("context.deletePropertyInSession", ["orders", "count", "sess-1"]),
        ("context.deleteSession", ["orders", "sess-1"]),
    ]
    assert value["sessions"]["code"] == "not_available"


# --------------------------------------------------------------------------- LpClient and helpers


async def test_lp_client_both_call_shapes(run: Run) -> None:
    value, host = await run(
        lambda_body(
            "  const lp = Toolbelt.LpClient();\n"
            "  out.four = await lp('POST', tb.LpServices.MSG_HIST, '/messaging_history/api/x?v=2',"
            " { body: { a: 1 }, json: true, qs: { offset: 10 } });\n"
            "  out.three = await lp(tb.LpServices.ACCOUNT_CONFIG_READ_ONLY, '/api/account/le1/configuration',"
            " { method: 'get', headers: { 'X-A': 'b' }, timeout: 2000, appKeySecretName: 'other' });\n"
            "  try { await lp('get', 'msgHist', '/status/401', { json: true }); } catch (e) { out.denied = fail(e); }\n"
            "  const full = await lp('msgHist', '/status/500', { simple: false, resolveWithFullResponse: true });\n"
            "  out.full = [full.statusCode, full.request.uri.href];\n"
        )
    )
    four, three, denied, full = (a[0] for a in host.of("lp.request"))
    assert four == {
        "method": "POST",
        "service": "msgHist",
        "path": "/messaging_history/api/x?v=2&offset=10",
        "headers": {"accept": "application/json", "content-type": "application/json"},
        "body": '{"a":1}',
        "body_encoding": "utf8",
        "timeout_ms": None,
    }
    assert value["four"]["echo"] == four
    assert three == {
        "method": "GET",
        "service": "accountConfigReadOnly",
        "path": "/api/account/le1/configuration",
        "headers": {"X-A": "b"},
        "body": None,
        "body_encoding": "utf8",
        "timeout_ms": 2000,
    }
    assert denied["method"] == "GET" and value["denied"]["statusCode"] == 401
    assert value["full"] == [500, "https://msghist.lp.example/status/500"]
    assert full["path"] == "/status/500"


async def test_csds_conversation_sde_and_gdpr_helpers(run: Run) -> None:
    conversation = {
        "conversationHistoryRecords": [
            {
                "messageRecords": [
                    {
                        "type": "TEXT_PLAIN",
                        "messageData": {"msg": {"text": "My Order is late"}},
                        "timeL": 1,
                        "sentBy": "Consumer",
                    },
                    {
                        "type": "HOSTED_FILE",
                        "messageData": {"file": {"caption": "order photo", "relativePath": "/f/1.png"}},
                        "timeL": 2,
                        "sentBy": "Consumer",
                    },
                    {"type": "TEXT_PLAIN", "messageData": {"msg": {"text": "hello"}}, "timeL": 3, "sentBy": "Agent"},
                ],
                "sdes": {"events": [{"serverTimeStamp": "20"}, {"serverTimeStamp": "10"}]},
            }
        ]
    }
    value, host = await run(
        lambda_body(
            "  out.domain = await Toolbelt.CsdsClient().get('msgHist');\n"
            "  try { await Toolbelt.CsdsClient().get('nope'); } catch (e) { out.noService = fail(e); }\n"
            "  const util = Toolbelt.ConversationUtil('api-key-ignored');\n"
            "  out.conv = await util.getConversationById('c1', [tb.ConversationContentTypes.SDES]);\n"
            "  try { await util.getConversationById('missing'); } catch (e) { out.missing = fail(e); }\n"
            "  out.scan = util.scanConversationForKeywords(input.conversation, ['order']);\n"
            "  const sde = Toolbelt.SDEUtil();\n"
            "  out.sdes = sde.getSDEsFromConv(input.conversation);\n"
            "  await sde.addSDEs([{ type: tb.SDETypes.CUSTOMER_INFO, info: {} }], 'v 1', 's1');\n"
            "  out.files = Toolbelt.GDPRUtil().listConversationFiles(input.conversation);\n"
            "  try { await Toolbelt.GDPRUtil().replaceConversationFiles(input.conversation, {}); }"
            " catch (e) { out.replace = fail(e); }\n"
        ),
        {"conversation": conversation},
    )
    assert value["domain"] == "msghist.lp.example"
    assert value["noService"]["code"] == "service_not_found"
    assert host.of("csds.resolve") == [["msgHist"], ["nope"]]
    search, missing, add = (a[0] for a in host.of("lp.request"))
    assert search["method"] == "POST" and search["service"] == "msgHist"
    assert search["path"] == "/messaging_history/api/account/le12345678/conversations/conversation/search?v=2"
    assert json.loads(search["body"]) == {"conversationId": "c1", "contentToRetrieve": ["sdes"]}
    assert value["conv"] == {
        "_metadata": {"count": 1},
        "conversationHistoryRecords": [{"info": {"conversationId": "c1"}}],
    }
    assert json.loads(missing["body"]) == {"conversationId": "missing"}  # no contentToRetrieve when not given
    assert value["missing"]["code"] == "conversation_not_found"
    assert value["missing"]["message"] == 'Conversation "missing" not found.'
    assert [r["tag"] for r in value["scan"]] == ["keywordRef:order", "keywordRef:order"]
    assert value["scan"][0] == {
        "message": "My Order is late",
        "sentTimestamp": 1,
        "sentBy": "Consumer",
        "tag": "keywordRef:order",
    }
    assert value["sdes"] == {
        "sdes": {"events": [{"serverTimeStamp": "10"}, {"serverTimeStamp": "20"}]},
        "unAuthSdes": {"events": []},
    }
    assert add["method"] == "PUT" and add["service"] == "smt"
    assert add["path"] == "/api/account/le12345678/monitoring/visitors/v%201/visits/current/events?v=1&sid=s1"
    assert json.loads(add["body"]) == [{"type": "ctmrinfo", "info": {}}]
    assert value["files"] == ["/f/1.png"]
    assert value["replace"]["code"] == "not_available"


async def test_constants_and_unavailable_clients(run: Run) -> None:
    value, host = await run(
        lambda_body(
            "  out.keys = Object.keys(tb).sort();\n"
            "  out.lp = [tb.LpServices.MSG_HIST, tb.LpServices.ACCOUNT_CONFIG_READ_ONLY, tb.LpServices.SMT];\n"
            "  out.sde = [tb.SDETypes.CUSTOMER_INFO, tb.SDETypes.PERSONAL_INFO];\n"
            "  out.content = [tb.ConversationContentTypes.MESSAGE_RECORDS, tb.ConversationContentTypes.UNAUTH_SDES];\n"
            "  out.frozen = Object.isFrozen(tb.LpServices);\n"
            "  out.sf = await Toolbelt.SFClient().connectToSalesforce({}).catch(fail);\n"
            "  out.orch = await Toolbelt.OrchestratorClient().invoke({}).catch(fail);\n"
        )
    )
    for name in (
        "Toolbelt",
        "LpServices",
        "SDETypes",
        "ConversationContentTypes",
        "errors",
        "StatusCodeError",
        "RequestError",
        "ToolbeltError",
        "NotAvailableError",
        "ping",
    ):
        assert name in value["keys"]
    assert value["lp"] == ["msgHist", "accountConfigReadOnly", "smt"]
    assert value["sde"] == ["ctmrinfo", "personal"]
    assert value["content"] == ["messageRecords", "unAuthSdes"]
    assert value["frozen"] is True
    assert value["sf"]["code"] == "not_available" and "SFClient" in value["sf"]["message"]
    assert value["orch"]["name"] == "NotAvailableError"
    assert host.calls == []


def test_typings_ship_with_the_package() -> None:
    package = json.loads((NODE_DIR / "lp-faas-toolbelt" / "package.json").read_text())
    assert package["name"] == "lp-faas-toolbelt" and package["types"] == "index.d.ts"
    typings = (NODE_DIR / "lp-faas-toolbelt" / "index.d.ts").read_text()
    for name in (
        "HTTPClient",
        "MTLSClient",
        "SecretClient",
        "ContextServiceClient",
        "LpClient",
        "CsdsClient",
        "ConversationUtil",
        "SDEUtil",
        "GDPRUtil",
        "LpServices",
        "SDETypes",
        "ConversationContentTypes",
        "StatusCodeError",
        "RequestError",
    ):
        assert name in typings


# --------------------------------------------------------------------------- templates


class ContextHost(FakeHost):
    """FakeHost with a tiny context store for the counter template."""

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], dict[str, Any]] = {}

    async def __call__(self, method: str, args: list[Any]) -> Any:
        if not method.startswith("context."):
            return await super().__call__(method, args)
        self.calls.append((method, args))
        if method == "context.createNamespace":
            return {"namespace": args[0], "createdAt": 1}
        if method == "context.getPropertyInSession":
            session = args[2] if len(args) > 2 and args[2] is not None else "__default__"
            return self.store.get((args[0], session), {}).get(args[1])
        if method == "context.setPropertiesInNamespace":
            session = args[2] if len(args) > 2 and args[2] is not None else "__default__"
            self.store.setdefault((args[0], session), {}).update(args[1])
            return {"ok": True}
        raise ToolbeltCallError("unknown_method", method)


async def test_crm_lookup_template(run: Run) -> None:
    template = catalog.TEMPLATES["crm-lookup"]
    assert template.event_id is None and check_first_line(template.code, "node") is None
    host = FakeHost()
    host.secrets["crm-api-token"] = "tok-1"
    value, _ = await run(template.code, template.sample_payload, host)
    request = host.of("http.request")[0][0]
    assert request["url"] == "https://crm.example.com/api/customers/42"
    assert request["headers"] == {"Authorization": "Bearer tok-1", "accept": "application/json"}
    assert request["timeout_ms"] == 5000
    assert value == {"found": True, "customer": {"echo": request}}
    # without the secret it says why instead of failing
    value, _ = await run(template.code, template.sample_payload)
    assert value["found"] is False and "crm-api-token" in value["reason"]


async def test_context_counter_template(run: Run) -> None:
    template = catalog.TEMPLATES["context-counter"]
    assert template.event_id is None and check_first_line(template.code, "node") is None
    host = ContextHost()
    first, _ = await run(template.code, template.sample_payload, host)
    second, _ = await run(template.code, template.sample_payload, host)
    conversation = template.sample_payload["payload"]["conversationId"]
    assert first == {"conversationId": conversation, "count": 1}
    assert second == {"conversationId": conversation, "count": 2}
    assert host.calls[0] == ("context.createNamespace", ["visits", {"ttl": 86400}])
    alone, _ = await run(template.code, {"payload": {}}, host)
    assert alone == {"conversationId": "__default__", "count": 1}


def test_doc_examples_load(tmp_path: Path) -> None:
    """Every JavaScript example of docs/toolbelt.md follows the first-line rule and parses."""
    doc = (NODE_DIR.parents[2] / "docs" / "toolbelt.md").read_text()
    blocks = re.findall(r"```javascript\n(.*?)```", doc, re.S)
    assert len(blocks) >= 5
    for i, code in enumerate(blocks):
        assert check_first_line(code, "node") is None, code
        path = tmp_path / f"example{i}.js"
        path.write_text(code)
        checked = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
