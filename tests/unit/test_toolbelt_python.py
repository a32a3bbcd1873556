"""The Python toolbelt (libs/runtimes/python/lp_faas_toolbelt.py) against the wire contract.

A real Python runner runs each handler; the test plays the host over the
socket with a fake toolbelt handler that records every ``toolbelt_call`` (so
the exact wire request is asserted) and answers as the host would. The same
lambda logic as tests/unit/test_toolbelt_node.py, in snake_case.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fnbus.runner_protocol import check_first_line
from tests.toolbelt_host import Run, lambda_runs

RUNNER = Path(__file__).resolve().parents[2] / "libs" / "runtimes" / "python" / "runner.py"
PYTHON = shutil.which("python3") or sys.executable

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def run() -> AsyncIterator[Run]:
    """``await run(code, input)`` → (the handler's result value, the fake host)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    async with lambda_runs([PYTHON, "-I", str(RUNNER)], "python", env) as runs:
        yield runs


PRELUDE = """\
import base64
import json
import lp_faas_toolbelt as tb
from lp_faas_toolbelt import Toolbelt


async def handler(input):
    out = {}

    def fail(e):
        return {
            "name": type(e).__name__,
            "code": getattr(e, "code", None),
            "message": str(e),
            "status_code": getattr(e, "status_code", None),
            "error": type(e.error).__name__ if isinstance(getattr(e, "error", None), Exception)
            else getattr(e, "error", None),
        }

"""


def handler_body(body: str) -> str:
    """An async handler around ``body`` (4-space indented Python), returning ``out``."""
    return PRELUDE + textwrap.indent(textwrap.dedent(body), "    ") + "    return out\n"


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


# --------------------------------------------------------------------------- http_client


async def test_uri_and_options_forms_and_qs_merge(run: Run) -> None:
    value, host = await run(
        handler_body("""
            http = Toolbelt.http_client()
            out["a"] = await http(
                "https://api.example/items?keep=1&page=9",
                qs={"page": 2, "tags": ["x", "y"], "f": {"a": "b c"}, "on": True},
                headers={"X-Trace": 7},
            )
            out["b"] = await http({"url": "https://api.example/b", "method": "delete"})
            out["c"] = await http(base_url="https://api.example/v1/", uri="/users", params={"q": "ä&="})
            out["d"] = await http("https://api.example/d", {"resolveWithFullResponse": True, "json": True})
            out["d"] = out["d"].status_code
        """)
    )
    a, b, c, d = host.of("http.request")
    assert a == [
        wire(
            "https://api.example/items?keep=1&page=2&tags=x&tags=y&f%5Ba%5D=b%20c&on=true",
            headers={"X-Trace": "7"},
        )
    ]
    assert b == [wire("https://api.example/b", method="DELETE")]
    assert c == [wire("https://api.example/v1/users?q=%C3%A4%26%3D")]
    assert d[0]["headers"] == {"accept": "application/json"} and value["d"] == 200
    assert isinstance(value["a"], str) and json.loads(value["a"])["echo"]["method"] == "GET"


async def test_verb_helpers(run: Run) -> None:
    _, host = await run(
        handler_body("""
            http = Toolbelt.http_client()
            for verb in ["get", "head", "post", "put", "patch", "delete", "options"]:
                await getattr(http, verb)("https://api.example/" + verb, body="x")
            await http.post(uri="https://api.example/opts", data="y")
        """)
    )
    sent = [(a[0]["method"], urlsplit(a[0]["url"]).path, a[0]["body"]) for a in host.of("http.request")]
    assert sent == [
        ("GET", "/get", "x"),
        ("HEAD", "/head", "x"),
        ("POST", "/post", "x"),
        ("PUT", "/put", "x"),
        ("PATCH", "/patch", "x"),
        ("DELETE", "/delete", "x"),
        ("OPTIONS", "/options", "x"),
        ("POST", "/opts", "y"),
    ]


async def test_json_true_json_object_and_form(run: Run) -> None:
    value, host = await run(
        handler_body("""
            http = Toolbelt.http_client()
            out["parsed"] = await http.post("https://api.example/j", json=True, body={"a": [1, "ü"]})
            out["as_body"] = await http.put("https://api.example/o", json={"b": 2})
            out["not_json"] = await http("https://api.example/text", json=True)
            out["empty"] = await http("https://api.example/empty", json=True)
            out["own_type"] = await http.post(
                "https://api.example/t", json=True, body={},
                headers={"Content-Type": "application/vnd.x+json", "Accept": "text/plain"},
            )
            out["form"] = await http.post("https://api.example/f", form={"name": "A B", "n": 1, "list": [1, 2]})
            out["bytes"] = await http.post("https://api.example/raw", body=b"\\x00\\xff")
        """)
    )
    j, o, text, empty, own, form, raw = (a[0] for a in host.of("http.request"))
    assert j == wire(
        "https://api.example/j",
        method="POST",
        headers={"accept": "application/json", "content-type": "application/json"},
        body='{"a": [1, "\\u00fc"]}',
    )
    assert json.loads(j["body"]) == {"a": [1, "ü"]}
    assert value["parsed"]["echo"] == j
    assert o["method"] == "PUT" and json.loads(o["body"]) == {"b": 2}
    assert o["headers"] == {"accept": "application/json", "content-type": "application/json"}
    assert text["headers"] == {"accept": "application/json"} and text["body"] is None
    assert value["not_json"] == "plain text, not JSON"
    assert value["empty"] is None
    assert own["headers"] == {"Content-Type": "application/vnd.x+json", "Accept": "text/plain"}
    assert form["headers"] == {"content-type": "application/x-www-form-urlencoded"}
    assert form["body"] == "name=A%20B&n=1&list=1&list=2"
    assert raw["body"] == base64.b64encode(b"\x00\xff").decode() and raw["body_encoding"] == "base64"


async def test_simple_and_full_response(run: Run) -> None:
    value, _ = await run(
        handler_body("""
            http = Toolbelt.http_client()
            try:
                await http("https://api.example/status/404", json=True)
            except tb.StatusCodeError as e:
                out["simple"] = {
                    "name": e.name, "status_code": e.status_code, "message": str(e), "error": e.error,
                    "response_status": e.response.status_code, "options_uri": e.options["uri"],
                }
            out["not_simple"] = await http("https://api.example/status/404", simple=False)
            full = await http.get("https://api.example/redirected", resolve_with_full_response=True)
            out["full"] = {
                "status_code": full.status_code, "headers": full.headers, "uri": full.request["uri"],
                "url": full.url, "body_type": type(full.body).__name__, "status_message": full.status_message,
            }
            full500 = await http.get(
                "https://api.example/status/500", simple=False, resolve_with_full_response=True, json=True
            )
            out["full500"] = [full500.status_code, full500.body]
            out["created"] = await http("https://api.example/status/201", json=True)
        """)
    )
    assert value["simple"] == {
        "name": "StatusCodeError",
        "status_code": 404,
        "message": '404 - {"error": "nope", "status": 404}',
        "error": {"error": "nope", "status": 404},
        "response_status": 404,
        "options_uri": "https://api.example/status/404",
    }
    assert json.loads(value["not_simple"]) == {"error": "nope", "status": 404}
    assert value["full"] == {
        "status_code": 200,
        "headers": {"content-type": "application/json", "x-seen": "a, b"},
        "uri": "https://other.example/final",
        "url": "https://other.example/final",
        "body_type": "str",
        "status_message": "OK",
    }
    assert value["full500"] == [500, {"error": "nope", "status": 500}]
    assert value["created"] == {"error": "nope", "status": 201}


async def test_encoding_timeout_redirects_and_auth(run: Run) -> None:
    value, host = await run(
        handler_body("""
            http = Toolbelt.http_client()
            raw = await http("https://api.example/binary", encoding=None)
            out["binary"] = [type(raw).__name__, raw.hex()]
            out["latin1"] = await http("https://api.example/binary", encoding="latin-1")
            await http("https://api.example/t", timeout=1.5, follow_redirect=False, max_redirects=3)
            await http("https://api.example/t2", timeout_ms=250)
            await http("https://api.example/basic", auth=("u", "p"))
            await http("https://api.example/basic2", auth={"user": "u", "pass": "p"})
            await http("https://api.example/bearer", auth={"bearer": "tok"})
        """)
    )
    binary, latin1, timed, timed_ms, basic, basic2, bearer = (a[0] for a in host.of("http.request"))
    assert binary["response_encoding"] == "base64" and value["binary"] == ["bytes", "00ff10"]
    assert latin1["response_encoding"] == "base64" and value["latin1"] == "\x00ÿ\x10"
    assert timed == wire("https://api.example/t", timeout_ms=1500, follow_redirects=False, max_redirects=3)
    assert timed_ms["timeout_ms"] == 250
    token = "Basic " + base64.b64encode(b"u:p").decode()
    assert basic["headers"] == {"authorization": token} and basic2["headers"] == {"authorization": token}
    assert bearer["headers"] == {"authorization": "Bearer tok"}


async def test_rate_limit_transport_errors_and_bad_options(run: Run) -> None:
    value, host = await run(
        handler_body("""
            http = Toolbelt.http_client()
            tries = [
                lambda: http("https://busy.example/x", simple=False),
                lambda: http("https://blocked.example/x"),
                lambda: http("https://down.example/x"),
                lambda: http("not a url"),
                lambda: http("ftp://files.example/x"),
                lambda: http("https://api.example/x", body={"a": 1}),
                lambda: http("https://api.example/x", nonsense=1),
            ]
            out["errors"] = []
            for attempt in tries:
                try:
                    await attempt()
                    out["errors"].append("returned")
                except Exception as e:
                    out["errors"].append(fail(e))
            try:
                await http("https://blocked.example/y")
            except tb.RequestError as e:
                out["request_error"] = [type(e.cause).__name__, e.cause.code, e.options["uri"], e.response]
        """)
    )
    limited, blocked, down, bad_uri, ftp, obj_body, unknown = value["errors"]
    assert limited["name"] == "StatusCodeError" and limited["status_code"] == 429
    assert limited["code"] == "rate_limited" and limited["message"].startswith("429 - ")
    assert blocked["name"] == "RequestError" and blocked["code"] == "not_allowlisted"
    assert "blocked.example is not on the domain allowlist" in blocked["message"]
    assert blocked["error"] == "ToolbeltError"
    assert down["name"] == "RequestError" and down["code"] == "connect_error"
    assert bad_uri["name"] == "RequestError" and bad_uri["code"] == "bad_request"
    assert "Invalid URI" in bad_uri["message"]
    assert ftp["code"] == "bad_request" and obj_body["code"] == "bad_request"
    assert unknown["code"] == "bad_request" and "nonsense" in unknown["message"]
    assert value["request_error"] == ["ToolbeltError", "not_allowlisted", "https://blocked.example/y", None]
    assert [urlsplit(a[0]["url"]).hostname for a in host.of("http.request")] == [
        "busy.example",
        "blocked.example",
        "down.example",
        "blocked.example",
    ]


async def test_plain_def_handler_uses_wait_and_call(run: Run) -> None:
    code = (
        "import lp_faas_toolbelt as tb\n"
        "def handler(input):\n"
        "    body = tb.wait(tb.Toolbelt.http_client().get('https://api.example/sync', json=True))\n"
        "    secret = tb.wait(tb.Toolbelt.secret_client().read_secret('crm-token'))\n"
        "    return [body['echo']['url'], secret['value'], tb.call('ping', ['x'])]\n"
    )
    value, host = await run(code)
    assert value == ["https://api.example/sync", "s3cr3t", {"pong": ["x"]}]
    assert [m for m, _ in host.calls] == ["http.request", "secret.read", "ping"]


# --------------------------------------------------------------------------- mtls_client


async def test_mtls_names(run: Run) -> None:
    value, host = await run(
        handler_body("""
            by_name = Toolbelt.mtls_client(certificate="bank-client")
            out["rp"] = await by_name.post("https://bank.example/pay", json={"amount": 5})
            await Toolbelt.mtls_client(cert="legacy-name").get("https://bank.example/x")
            await Toolbelt.mtls_client("positional").get("https://bank.example/y")
            try:
                await by_name.get("https://bank.example/status/403")
            except tb.StatusCodeError as e:
                out["forbidden"] = e.status_code
            try:
                Toolbelt.mtls_client(cert="-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n", key="k")
            except tb.ToolbeltError as e:
                out["pem"] = fail(e)
            try:
                await Toolbelt.mtls_client().get("https://bank.example/z")
            except tb.ToolbeltError as e:
                out["none"] = fail(e)
        """)
    )
    pay, legacy, positional, forbidden = (a[0] for a in host.of("http.request"))
    assert pay == wire(
        "https://bank.example/pay",
        method="POST",
        headers={"accept": "application/json", "content-type": "application/json"},
        body='{"amount": 5}',
        mtls="bank-client",
    )
    assert value["rp"]["echo"] == pay
    assert legacy["mtls"] == "legacy-name" and positional["mtls"] == "positional"
    assert forbidden["mtls"] == "bank-client" and value["forbidden"] == 403
    assert value["pem"]["code"] == "bad_request"
    assert "not its PEM contents" in value["pem"]["message"] and "uploads" in value["pem"]["message"]
    assert value["none"]["code"] == "bad_request" and "name of an uploaded certificate" in value["none"]["message"]


# --------------------------------------------------------------------------- secrets


async def test_secrets(run: Run) -> None:
    value, host = await run(
        handler_body("""
            secrets = Toolbelt.secret_client()
            out["read"] = await secrets.read_secret("crm-token")
            out["updated"] = await secrets.update_secret({"key": "crm-token", "value": "new"})
            out["again"] = await secrets.read_secret("crm-token")
            bad = [
                lambda: secrets.read_secret("no such"),
                lambda: secrets.read_secret("x" * 101),
                lambda: secrets.update_secret({"key": "ok", "value": "v" * 16385}),
                lambda: secrets.update_secret({"key": "ok", "value": {"nested": True}}),
                lambda: secrets.update_secret("crm-token"),
                lambda: secrets.read_secret("missing"),
            ]
            out["errors"] = []
            for attempt in bad:
                try:
                    await attempt()
                    out["errors"].append("returned")
                except tb.ToolbeltError as e:
                    out["errors"].append(fail(e))
            out["max_ok"] = (await secrets.update_secret("A_b-9", "v" * 16384))["key"]
        """)
    )
    assert value["read"] == {"key": "crm-token", "value": "s3cr3t"}
    assert value["updated"] == {"key": "crm-token", "value": "new"}
    assert value["again"]["value"] == "new"
    assert [e["code"] for e in value["errors"]] == ["bad_request"] * 5 + ["secret_not_found"]
    assert "invalid secret key" in value["errors"][0]["message"]
    assert "16384" in value["errors"][2]["message"]
    assert value["max_ok"] == "A_b-9"
    assert host.of("secret.read") == [["crm-token"], ["crm-token"], ["missing"]]
    assert host.of("secret.update") == [
        [{"key": "crm-token", "value": "new"}],
        [{"key": "A_b-9", "value": "v" * 16384}],
    ]


# --------------------------------------------------------------------------- context store


async def test_every_context_method(run: Run) -> None:
    value, host = await run(
        handler_body("""
            ctx = Toolbelt.context_service_client(api_key="ignored", account_id="ignored")
            out["created"] = await ctx.create_namespace("orders", {"ttl": 3600})
            await ctx.create_namespace("plain")
            await ctx.delete_namespace("plain")
            await ctx.get_list_of_namespaces()
            await ctx.set_properties_in_namespace("orders", {"count": 1}, "sess-1", 60)
            await ctx.set_properties_in_namespace("orders", {"count": 1})
            await ctx.update_properties_in_namespace("orders", {"count": 2}, session_id="sess-1")
            await ctx.update_properties_in_namespace("orders", {"count": 3}, ttl_second=30)
            await ctx.get_all_properties_in_session("orders", "sess-1")
            await ctx.get_all_properties_in_session("orders")
            await ctx.get_selected_properties_in_session("orders", ["count", "x"], "sess-1")
            await ctx.get_property_in_session("orders", "count")
            await ctx.delete_property_in_session("orders", "count", "sess-1")
            await ctx.delete_session("orders", "sess-1")
            try:
                await ctx.get_list_of_sessions("orders")
            except tb.NotAvailableError as e:
                out["sessions"] = fail(e)
        """)
    )
    assert value["created"] == {"method": "context.createNamespace", "args": ["orders", {"ttl": 3600}]}
    assert host.calls == [
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


# --------------------------------------------------------------------------- lp_client and helpers


async def test_lp_client_both_call_shapes(run: Run) -> None:
    value, host = await run(
        handler_body("""
            lp = Toolbelt.lp_client()
            out["four"] = await lp(
                "POST", tb.LpServices.MSG_HIST, "/messaging_history/api/x?v=2",
                body={"a": 1}, json=True, qs={"offset": 10},
            )
            out["three"] = await lp(
                tb.LpServices.ACCOUNT_CONFIG_READ_ONLY, "/api/account/le1/configuration",
                method="get", headers={"X-A": "b"}, timeout_ms=2000, app_key_secret_name="other",
            )
            out["dict_options"] = await lp("msgHist", "/d", {"method": "PUT", "json": True})
            try:
                await lp("get", "msgHist", "/status/401", json=True)
            except tb.StatusCodeError as e:
                out["denied"] = e.status_code
            full = await lp("msgHist", "/status/500", simple=False, resolve_with_full_response=True)
            out["full"] = full.status_code
        """)
    )
    four, three, dict_options, denied, full = (a[0] for a in host.of("lp.request"))
    assert four == {
        "method": "POST",
        "service": "msgHist",
        "path": "/messaging_history/api/x?v=2&offset=10",
        "headers": {"accept": "application/json", "content-type": "application/json"},
        "body": '{"a": 1}',
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
    assert dict_options["method"] == "PUT" and dict_options["path"] == "/d"
    assert denied["method"] == "GET" and value["denied"] == 401
    assert value["full"] == 500 and full["path"] == "/status/500"


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
        handler_body("""
            out["domain"] = await Toolbelt.csds_client().get("msgHist")
            try:
                await Toolbelt.csds_client().get("nope")
            except tb.ToolbeltError as e:
                out["no_service"] = fail(e)
            util = Toolbelt.conversation_util("api-key-ignored")
            out["conv"] = await util.get_conversation_by_id("c1", [tb.ConversationContentTypes.SDES])
            try:
                await util.get_conversation_by_id("missing")
            except tb.ToolbeltError as e:
                out["missing"] = fail(e)
            out["scan"] = util.scan_conversation_for_keywords(input["conversation"], ["order"])
            sde = Toolbelt.sde_util()
            out["sdes"] = sde.get_sdes_from_conv(input["conversation"])
            await sde.add_sdes([{"type": tb.SDETypes.CUSTOMER_INFO, "info": {}}], "v 1", "s1")
            out["files"] = Toolbelt.gdpr_util().list_conversation_files(input["conversation"])
            try:
                await Toolbelt.gdpr_util().replace_conversation_files(input["conversation"], {})
            except tb.NotAvailableError as e:
                out["replace"] = fail(e)
        """),
        {"conversation": conversation},
    )
    assert value["domain"] == "msghist.lp.example"
    assert value["no_service"]["code"] == "service_not_found"
    assert host.of("csds.resolve") == [["msgHist"], ["nope"]]
    search, missing, add = (a[0] for a in host.of("lp.request"))
    assert search["method"] == "POST" and search["service"] == "msgHist"
    assert search["path"] == "/messaging_history/api/account/le12345678/conversations/conversation/search?v=2"
    assert json.loads(search["body"]) == {"conversationId": "c1", "contentToRetrieve": ["sdes"]}
    assert value["conv"] == {
        "_metadata": {"count": 1},
        "conversationHistoryRecords": [{"info": {"conversationId": "c1"}}],
    }
    assert json.loads(missing["body"]) == {"conversationId": "missing"}
    assert value["missing"]["code"] == "conversation_not_found"
    assert value["scan"][0] == {
        "message": "My Order is late",
        "sentTimestamp": 1,
        "sentBy": "Consumer",
        "tag": "keywordRef:order",
    }
    assert len(value["scan"]) == 2
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
        handler_body("""
            out["lp"] = [tb.LpServices.MSG_HIST, tb.LpServices.ACCOUNT_CONFIG_READ_ONLY, tb.LpServices.SMT]
            out["sde"] = [tb.SDETypes.CUSTOMER_INFO, tb.SDETypes.PERSONAL_INFO]
            out["content"] = [tb.ConversationContentTypes.MESSAGE_RECORDS, tb.ConversationContentTypes.UNAUTH_SDES]
            out["all"] = sorted(tb.__all__)
            try:
                Toolbelt.sf_client().connect_to_salesforce({})
            except tb.NotAvailableError as e:
                out["sf"] = fail(e)
            try:
                Toolbelt.orchestrator_client().invoke({})
            except tb.NotAvailableError as e:
                out["orch"] = fail(e)
        """)
    )
    assert value["lp"] == ["msgHist", "accountConfigReadOnly", "smt"]
    assert value["sde"] == ["ctmrinfo", "personal"]
    assert value["content"] == ["messageRecords", "unAuthSdes"]
    for name in ("Toolbelt", "LpServices", "SDETypes", "ConversationContentTypes", "StatusCodeError", "RequestError"):
        assert name in value["all"]
    assert value["sf"]["code"] == "not_available" and "sf_client" in value["sf"]["message"]
    assert value["orch"]["name"] == "NotAvailableError"
    assert host.calls == []


def test_doc_examples_load() -> None:
    """Every Python example of docs/toolbelt.md follows the first-line rule and compiles."""
    doc = (RUNNER.parents[3] / "docs" / "toolbelt.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) >= 5
    for code in blocks:
        assert check_first_line(code, "python") is None, code
        compile(code, "handler.py", "exec")
