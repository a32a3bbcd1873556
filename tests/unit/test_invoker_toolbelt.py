"""The invoker's toolbelt dispatcher against a fake registry (httpx MockTransport) and a fake egress."""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from fnbus.config import Settings
from fnbus.egress import ClientCertificate, EgressError, EgressRequest, EgressResponse
from fnbus.runner_protocol import ToolbeltCallError
from fnbus.schemas import InvocationRequest
from services.invoker.toolbelt import MAX_CALLS_PER_INVOCATION, Toolbelt

ACCOUNT = "acc1"
LAMBDA = "lam-1"
SECRET_VALUE = "s3cr3t-VALUE-never-shown"


@dataclass
class FakeRegistry:
    """The registry's /internal/toolbelt API in memory; records every path asked for."""

    secrets: dict[str, str] = field(default_factory=lambda: {"api-key": SECRET_VALUE})
    domains: list[str] = field(default_factory=lambda: ["api.example.com"])
    certificates: dict[str, dict[str, Any]] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(f"{request.method} {request.url.path}")
        prefix = f"/internal/toolbelt/accounts/{ACCOUNT}/"
        assert request.url.path.startswith(prefix), request.url.path
        rest = request.url.path.removeprefix(prefix)
        if rest == "allowlist":
            return httpx.Response(200, json={"domains": list(self.domains)})
        kind, _, name = rest.partition("/")
        if kind == "secrets":
            if name not in self.secrets:
                return httpx.Response(404, json={"error": {"code": "secret_not_found"}})
            if request.method == "PUT":
                self.secrets[name] = json.loads(request.content)["value"]
                return httpx.Response(200, json={"key": name, "updated_ms": 1})
            return httpx.Response(200, json={"key": name, "value": self.secrets[name]})
        if kind == "certificates":
            if name not in self.certificates:
                return httpx.Response(404, json={"error": {"code": "certificate_not_found"}})
            return httpx.Response(200, json=self.certificates[name])
        return httpx.Response(404)


@dataclass
class FakeEgress:
    """Answers every fetch with ``response`` or raises ``error``; records the calls."""

    response: EgressResponse = field(default_factory=lambda: EgressResponse(
        status=200, headers={"content-type": "text/plain"}, body=b"hello", url="https://api.example.com/x"))
    error: EgressError | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def fetch(self, request: EgressRequest, *, allowlist: Any, rate_key: str, deadline: float,
                    certificate: ClientCertificate | None = None,
                    check_allowlist: bool = True) -> EgressResponse:
        self.calls.append({"request": request, "allowlist": list(allowlist), "rate_key": rate_key,
                           "deadline": deadline, "certificate": certificate})
        if self.error is not None:
            raise self.error
        return self.response


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def egress() -> FakeEgress:
    return FakeEgress()


@pytest.fixture
async def toolbelt(registry: FakeRegistry, egress: FakeEgress) -> Any:
    client = httpx.AsyncClient(base_url="http://registry", transport=httpx.MockTransport(registry.handler))
    yield Toolbelt(registry=client, egress=egress, settings=Settings())  # type: ignore[arg-type]
    await client.aclose()


def request() -> InvocationRequest:
    return InvocationRequest(activation_id="act-1", account_id=ACCOUNT, lambda_id=LAMBDA,
                             payload={})


def handler(toolbelt: Toolbelt, deadline: float | None = None) -> Any:
    return toolbelt(request(), deadline if deadline is not None else time.monotonic() + 30)


def http_args(**overrides: Any) -> list[Any]:
    req = {"method": "GET", "url": "https://api.example.com/x?q=1", "headers": {"accept": "text/plain"},
           "body": None, "body_encoding": "utf8", "timeout_ms": None, "follow_redirects": True,
           "max_redirects": None, "mtls": None, "response_encoding": "utf8"}
    req.update(overrides)
    return [req]


async def refused(call: Any, code: str) -> ToolbeltCallError:
    with pytest.raises(ToolbeltCallError) as info:
        await call
    assert info.value.code == code, info.value.message
    return info.value


# -- ping, unknown methods, the call cap ------------------------------------------------------
async def test_ping_and_unknown_method(toolbelt: Toolbelt) -> None:
    h = handler(toolbelt)
    assert await h("ping", [1, "a"]) == {"pong": [1, "a"]}
    await refused(h("files.read", []), "unknown_method")


async def test_calls_beyond_the_cap_are_refused_per_invocation(toolbelt: Toolbelt) -> None:
    h = handler(toolbelt)
    for _ in range(MAX_CALLS_PER_INVOCATION):
        await h("ping", [])
    error = await refused(h("ping", []), "too_many_calls")
    assert str(MAX_CALLS_PER_INVOCATION) in error.message
    # The next invocation has its own count.
    assert await handler(toolbelt)("ping", []) == {"pong": []}


async def test_lp_methods_reach_toolbelt_lp(toolbelt: Toolbelt) -> None:
    # No CSDS host configured (Settings() default): LpClient is not available, said clearly.
    error = await refused(handler(toolbelt)("csds.resolve", ["agentVep"]), "not_available")
    assert "CSDS" in error.message or "csds" in error.message


async def test_lp_methods_go_to_the_lp_handler_with_the_invocations_identity(
        registry: FakeRegistry, egress: FakeEgress) -> None:
    seen: list[tuple[str, list[Any], dict[str, Any]]] = []

    async def lp(method: str, args: list[Any], **kw: Any) -> Any:
        seen.append((method, args, kw))
        return {"ok": True}

    async with httpx.AsyncClient(base_url="http://r", transport=httpx.MockTransport(registry.handler)) as c:
        tb = Toolbelt(registry=c, egress=egress, settings=Settings(), lp_handler=lp)  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        assert await tb(request(), deadline)("context.deleteSession", ["ns", "s1"]) == {"ok": True}
    method, args, kw = seen[0]
    assert (method, args) == ("context.deleteSession", ["ns", "s1"])
    assert kw["account_id"] == ACCOUNT and kw["lambda_id"] == LAMBDA and kw["deadline"] == deadline
    assert kw["egress"] is egress and kw["registry"] is c


# -- http.request ------------------------------------------------------------------------------
async def test_http_request_reaches_egress_with_the_accounts_allowlist_and_limits(
        toolbelt: Toolbelt, egress: FakeEgress) -> None:
    deadline = time.monotonic() + 12
    value = await handler(toolbelt, deadline)("http.request", http_args(
        method="post", body=base64.b64encode(b"\x00\x01").decode(), body_encoding="base64",
        timeout_ms=1500, follow_redirects=False, max_redirects=3, headers={"x-n": 5}))
    assert value == {"status": 200, "headers": {"content-type": "text/plain"}, "body": "hello",
                     "body_encoding": "utf8", "url": "https://api.example.com/x"}
    call = egress.calls[0]
    sent: EgressRequest = call["request"]
    assert (sent.method, sent.url, sent.body, sent.timeout_s) == (
        "POST", "https://api.example.com/x?q=1", b"\x00\x01", 1.5)
    assert sent.follow_redirects is False and sent.max_redirects == 3
    assert dict(sent.headers) == {"x-n": "5"}
    assert call["allowlist"] == ["api.example.com"]
    assert call["rate_key"] == LAMBDA and call["deadline"] == deadline
    assert call["certificate"] is None


async def test_allowlist_is_read_for_every_request(toolbelt: Toolbelt, registry: FakeRegistry,
                                                   egress: FakeEgress) -> None:
    h = handler(toolbelt)
    await h("http.request", http_args())
    registry.domains = ["*.example.org"]
    await h("http.request", http_args())
    assert [c["allowlist"] for c in egress.calls] == [["api.example.com"], ["*.example.org"]]


async def test_egress_errors_keep_their_code_and_message(toolbelt: Toolbelt, egress: FakeEgress) -> None:
    egress.error = EgressError("not_allowlisted", "evil.example is not on the domain allowlist")
    error = await refused(handler(toolbelt)("http.request", http_args()), "not_allowlisted")
    assert error.message == "evil.example is not on the domain allowlist"


@pytest.mark.parametrize("args", [
    [],
    ["https://a.example"],
    http_args(url="/relative"),
    http_args(url="ftp://a.example/"),
    http_args(url=None),
    http_args(method="BREW"),
    http_args(headers=["x"]),
    http_args(headers={"x": {"nested": 1}}),
    http_args(body={"json": "not serialised"}),
    http_args(body="!!!", body_encoding="base64"),
    http_args(body="x", body_encoding="utf16"),
    http_args(timeout_ms=-1),
    http_args(timeout_ms="10"),
    http_args(follow_redirects="yes"),
    http_args(max_redirects=-2),
    http_args(mtls=7),
    http_args(response_encoding="latin1"),
])
async def test_malformed_requests_are_bad_requests(toolbelt: Toolbelt, egress: FakeEgress,
                                                   args: list[Any]) -> None:
    await refused(handler(toolbelt)("http.request", args), "bad_request")
    assert egress.calls == []


async def test_binary_bodies_travel_as_base64(toolbelt: Toolbelt, egress: FakeEgress) -> None:
    egress.response = EgressResponse(status=200, headers={}, body=b"\xff\xfe\x00", url="https://a/")
    h = handler(toolbelt)
    asked = await h("http.request", http_args(response_encoding="base64"))
    fallback = await h("http.request", http_args(response_encoding="utf8"))
    for value in (asked, fallback):
        assert value["body_encoding"] == "base64"
        assert base64.b64decode(value["body"]) == b"\xff\xfe\x00"
    egress.response = EgressResponse(status=404, headers={"X-A": "1"}, body="é".encode(), url="https://a/")
    text = await h("http.request", http_args())
    assert (text["status"], text["body"], text["body_encoding"], text["headers"]) == (
        404, "é", "utf8", {"x-a": "1"})


async def test_mtls_presents_the_accounts_certificate(toolbelt: Toolbelt, registry: FakeRegistry,
                                                      egress: FakeEgress) -> None:
    registry.certificates["crm"] = {"name": "crm", "cert_pem": "C", "key_pem": "K", "ca_pem": None}
    await handler(toolbelt)("http.request", http_args(mtls="crm"))
    assert egress.calls[0]["certificate"] == ClientCertificate(cert_pem="C", key_pem="K", ca_pem=None,
                                                               name="crm")
    for name in ("nope", "../secrets/api-key"):
        error = await refused(handler(toolbelt)("http.request", http_args(mtls=name)),
                              "certificate_not_found")
        assert "not found" in error.message
    assert len(egress.calls) == 1


async def test_registry_down_is_unavailable_not_a_crash(egress: FakeEgress) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with httpx.AsyncClient(base_url="http://r", transport=httpx.MockTransport(down)) as c:
        tb = Toolbelt(registry=c, egress=egress, settings=Settings())  # type: ignore[arg-type]
        await refused(tb(request(), time.monotonic() + 5)("http.request", http_args()), "unavailable")
        await refused(tb(request(), time.monotonic() + 5)("secret.read", ["api-key"]), "unavailable")


# -- secrets -------------------------------------------------------------------------------------
async def test_secret_read_and_update_go_to_the_registry_every_time(
        toolbelt: Toolbelt, registry: FakeRegistry) -> None:
    h = handler(toolbelt)
    assert await h("secret.read", ["api-key"]) == {"key": "api-key", "value": SECRET_VALUE}
    assert await h("secret.update", [{"key": "api-key", "value": "v2"}]) == {"key": "api-key", "value": "v2"}
    assert registry.secrets["api-key"] == "v2"
    assert await h("secret.read", ["api-key"]) == {"key": "api-key", "value": "v2"}
    del registry.secrets["api-key"]  # deleted through the API
    await refused(h("secret.read", ["api-key"]), "secret_not_found")
    reads = [p for p in registry.paths if p.startswith("GET") and "secrets" in p]
    assert len(reads) == 3


async def test_update_never_creates(toolbelt: Toolbelt, registry: FakeRegistry) -> None:
    error = await refused(handler(toolbelt)("secret.update", [{"key": "new", "value": "v"}]),
                          "secret_not_found")
    assert "created through the API" in error.message
    assert "new" not in registry.secrets


@pytest.mark.parametrize("method,args", [
    ("secret.read", []),
    ("secret.read", ["bad key!"]),
    ("secret.read", ["k" * 101]),
    ("secret.read", [7]),
    ("secret.update", ["api-key"]),
    ("secret.update", [{"key": "api-key"}]),
    ("secret.update", [{"key": "api-key", "value": 5}]),
    ("secret.update", [{"key": "api key", "value": "v"}]),
    ("secret.update", [{"key": "api-key", "value": "x" * 16_385}]),
])
async def test_secret_rules(toolbelt: Toolbelt, registry: FakeRegistry, method: str, args: list[Any]) -> None:
    await refused(handler(toolbelt)(method, args), "bad_request")
    assert registry.secrets == {"api-key": SECRET_VALUE}


async def test_values_never_reach_logs_or_error_messages(
        toolbelt: Toolbelt, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h = handler(toolbelt)
    await h("secret.read", ["api-key"])
    written = "written-" + SECRET_VALUE
    await h("secret.update", [{"key": "api-key", "value": written}])
    too_long = SECRET_VALUE * 1000
    error = await refused(h("secret.update", [{"key": "api-key", "value": too_long}]), "bad_request")
    assert SECRET_VALUE not in error.message
    error = await refused(h("secret.update", [{"key": "gone", "value": written}]), "secret_not_found")
    assert SECRET_VALUE not in error.message
    everything = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert SECRET_VALUE not in everything
