"""The egress engine against real local servers (HTTP, HTTPS with a test CA, mTLS) on 127.0.0.1.

Names resolve through a MappingResolver; nothing leaves loopback: addresses outside it
appear only where the policy must refuse them before any connection.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from ipaddress import ip_network
from typing import Any

import pytest
from prometheus_client import REGISTRY

from fnbus.config import Settings
from fnbus.egress import ClientCertificate, Egress, EgressError, EgressPolicy, EgressRequest, EgressResponse
from tests.egress_support import CertificateAuthority, LocalServer, MappingResolver

pytestmark = pytest.mark.integration

LOOPBACK = (ip_network("127.0.0.0/8"),)
ALLOW = ["api.example.test", "*.wild.example.test", "inside.example.test", "metadata.example.test",
         "mixed.example.test", "127.0.0.1", "nowhere.example.test"]
NAMES = {
    "api.example.test": ["127.0.0.1"],
    "other.example.test": ["127.0.0.1"],
    "a.wild.example.test": ["127.0.0.1"],
    "inside.example.test": ["10.0.0.7"],
    "metadata.example.test": ["169.254.169.254"],
    "mixed.example.test": ["127.0.0.1", "192.168.1.1"],
}

CA = CertificateAuthority()
SERVER_CERT = CA.issue_server(["api.example.test", "a.wild.example.test"])


def policy(**overrides: Any) -> EgressPolicy:
    values: dict[str, Any] = {"exempt_cidrs": LOOPBACK, "platform_ports": frozenset({8080, 9092, 5432}),
                              "extra_ca_pem": CA.cert_pem}
    values.update(overrides)
    return EgressPolicy(**values)


def request(url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None,
            **options: Any) -> EgressRequest:
    return EgressRequest(method=method, url=url, headers=headers or {}, body=body,
                         timeout_s=options.pop("timeout_s", None), **options)


async def fetch(egress: Egress, req: EgressRequest, *, allowlist: list[str] | None = None,
                rate_key: str | None = None, deadline_s: float = 10.0, **options: Any) -> EgressResponse:
    return await egress.fetch(req, allowlist=ALLOW if allowlist is None else allowlist,
                              rate_key=rate_key or uuid.uuid4().hex, deadline=time.monotonic() + deadline_s,
                              **options)


async def refused(egress: Egress, req: EgressRequest, code: str, **options: Any) -> EgressError:
    with pytest.raises(EgressError) as caught:
        await fetch(egress, req, **options)
    assert caught.value.code == code, caught.value.message
    return caught.value


@pytest.fixture
async def egress() -> AsyncIterator[Egress]:
    async with Egress(policy(), resolver=MappingResolver(NAMES)) as engine:
        yield engine


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with LocalServer() as local:
        yield local


@pytest.fixture
async def tls_server() -> AsyncIterator[LocalServer]:
    async with LocalServer(tls=SERVER_CERT) as local:
        yield local


# -- plain HTTP ------------------------------------------------------------------------------

async def test_get_and_post_round_trip(egress: Egress, server: LocalServer) -> None:
    url = server.url("/echo?x=1&y=two", host="api.example.test")
    got = await fetch(egress, request(url, headers={"X-Trace": "abc", "Accept": "application/json"}))
    assert got.status == 200 and got.url == url
    assert got.headers["content-type"] == "application/json"
    seen = json.loads(got.body)
    assert seen["method"] == "GET" and seen["query"] == {"x": ["1"], "y": ["two"]}
    # The Host header carries the name although the connection went to the resolved address.
    assert seen["headers"]["host"] == f"api.example.test:{server.port}"
    assert seen["headers"]["x-trace"] == "abc" and seen["headers"]["accept"] == "application/json"
    assert "accept-encoding" not in seen["headers"]  # only what the lambda asked for

    payload = "{\"name\": \"Zoë\"}".encode()
    got = await fetch(egress, request(server.url("/echo", host="api.example.test"), "POST",
                                      {"content-type": "application/json", "Host": "evil.test"}, payload))
    seen = json.loads(got.body)
    assert seen["method"] == "POST" and seen["body"] == payload.decode()
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["headers"]["content-length"] == str(len(payload))
    assert seen["headers"]["host"] == f"api.example.test:{server.port}"  # the lambda's Host is dropped


async def test_status_codes_and_headers_pass_through(egress: Egress, server: LocalServer) -> None:
    for status in (201, 204, 404, 418, 500, 503):
        got = await fetch(egress, request(server.url(f"/status/{status}", host="api.example.test")))
        assert got.status == status
        assert got.body == (b"" if status == 204 else f"status {status}".encode())
    got = await fetch(egress, request(server.url("/cookies", host="api.example.test")))
    assert got.headers["set-cookie"] == "a=1, b=2"
    got = await fetch(egress, request(server.url("/echo", host="api.example.test"), "HEAD"))
    assert got.status == 200 and got.body == b""


async def test_connections_are_kept_alive(egress: Egress, server: LocalServer) -> None:
    for _ in range(5):
        await fetch(egress, request(server.url("/echo", host="api.example.test")))
    assert server.connections == 1 and len(server.requests) == 5


async def test_one_wildcard_label_and_the_subdomain_trap(egress: Egress, server: LocalServer) -> None:
    assert (await fetch(egress, request(server.url("/echo", host="a.wild.example.test")))).status == 200
    error = await refused(egress, request(server.url("/echo", host="other.example.test")), "not_allowlisted")
    assert "other.example.test is not on the domain allowlist" in error.message
    await refused(egress, request(server.url("/echo", host="api.example.test")), "not_allowlisted",
                  allowlist=["example.test"])
    assert len(server.requests) == 1


async def test_allowlist_is_read_on_every_call(egress: Egress, server: LocalServer) -> None:
    url = server.url("/echo", host="api.example.test")
    allowlist = ["api.example.test"]
    assert (await fetch(egress, request(url), allowlist=allowlist)).status == 200
    allowlist.remove("api.example.test")
    await refused(egress, request(url), "not_allowlisted", allowlist=allowlist)


async def test_check_allowlist_false_keeps_the_network_policy(server: LocalServer) -> None:
    url = server.url("/echo", host="api.example.test")
    async with Egress(policy(), resolver=MappingResolver(NAMES)) as egress:
        assert (await fetch(egress, request(url), allowlist=[], check_allowlist=False)).status == 200
    async with Egress(policy(exempt_cidrs=()), resolver=MappingResolver(NAMES)) as egress:
        await refused(egress, request(url), "address_refused", allowlist=[], check_allowlist=False)


async def test_only_http_and_https(egress: Egress) -> None:
    for url in ("ftp://api.example.test/file", "file:///etc/passwd", "gopher://api.example.test/"):
        await refused(egress, request(url), "bad_request")
    await refused(egress, request("/relative/path"), "bad_request")
    await refused(egress, request("http://api.example.test/", "GET", {"X-Bad": "a\r\nInjected: 1"}), "bad_request")
    await refused(egress, request("http://api.example.test/", "CONNECT"), "bad_request")
    await refused(egress, request("http://api.example.test/", "GET", {"X-Name": "Łódź"}), "bad_request")


async def test_latin1_header_values_are_sent_as_latin1(egress: Egress, server: LocalServer) -> None:
    got = await fetch(egress, request(server.url("/echo", host="api.example.test"), headers={"X-Name": "café"}))
    assert json.loads(got.body)["headers"]["x-name"] == "café"


# -- redirects -------------------------------------------------------------------------------

async def test_redirect_chain_is_followed(egress: Egress, server: LocalServer) -> None:
    final = server.url("/echo", host="a.wild.example.test")
    second = server.url(f"/redirect/307?to={final}", host="api.example.test")
    first = server.url(f"/redirect/301?to={second}", host="api.example.test")
    got = await fetch(egress, request(first))
    assert got.status == 200 and got.url == final
    assert json.loads(got.body)["headers"]["host"] == f"a.wild.example.test:{server.port}"
    # A relative Location resolves against the hop's URL.
    got = await fetch(egress, request(server.url("/redirect/302?to=/status/201", host="api.example.test")))
    assert got.status == 201 and got.url == server.url("/status/201", host="api.example.test")


@pytest.mark.parametrize(("code", "method", "expected_method", "body_kept"), [
    (301, "POST", "GET", False),
    (302, "POST", "GET", False),
    (303, "POST", "GET", False),
    (303, "PUT", "GET", False),
    (302, "PUT", "PUT", True),
    (307, "POST", "POST", True),
    (308, "PATCH", "PATCH", True),
])
async def test_redirects_rewrite_method_and_body(egress: Egress, server: LocalServer, code: int, method: str,
                                                 expected_method: str, body_kept: bool) -> None:
    url = server.url(f"/redirect/{code}?to=/echo", host="api.example.test")
    got = await fetch(egress, request(url, method, {"content-type": "text/plain"}, b"payload"))
    seen = json.loads(got.body)
    assert seen["method"] == expected_method
    assert seen["body"] == ("payload" if body_kept else "")
    assert ("content-type" in seen["headers"]) is body_kept


async def test_credentials_do_not_follow_a_redirect_to_another_host(egress: Egress, server: LocalServer) -> None:
    target = server.url("/echo", host="a.wild.example.test")
    url = server.url(f"/redirect/302?to={target}", host="api.example.test")
    got = await fetch(egress, request(url, headers={"Authorization": "Bearer t0ken", "X-Keep": "1"}))
    headers = json.loads(got.body)["headers"]
    assert "authorization" not in headers and headers["x-keep"] == "1"
    same = server.url("/redirect/302?to=/echo", host="api.example.test")
    got = await fetch(egress, request(same, headers={"Authorization": "Bearer t0ken"}))
    assert json.loads(got.body)["headers"]["authorization"] == "Bearer t0ken"


async def test_a_redirect_off_the_allowlist_is_refused_naming_the_hop(egress: Egress, server: LocalServer) -> None:
    target = server.url("/echo", host="other.example.test")
    url = server.url(f"/redirect/302?to={target}", host="api.example.test")
    error = await refused(egress, request(url), "not_allowlisted")
    assert error.message.startswith("redirect to other.example.test refused")
    assert "not on the domain allowlist" in error.message
    assert [r.path for r in server.requests] == ["/redirect/302"]  # the refused hop was never sent


async def test_a_redirect_to_a_refused_address_is_refused(egress: Egress, server: LocalServer) -> None:
    for target in ("http://169.254.169.254/latest/meta-data/", "http://inside.example.test/admin",
                   f"http://127.0.0.1:{8080}/api/v1/accounts"):
        url = server.url(f"/redirect/302?to={target}", host="api.example.test")
        await refused(egress, request(url), "address_refused")


async def test_redirects_are_capped(egress: Egress, server: LocalServer) -> None:
    loop = server.url("/redirect/302?to=/redirect/302%3Fto%3D/echo", host="api.example.test")
    assert (await fetch(egress, request(loop), allowlist=ALLOW)).status == 200  # two hops
    error = await refused(egress, request(loop, max_redirects=1), "too_many_redirects")
    assert "more than 1 redirect" in error.message
    endless = server.url("/redirect/307?to=/redirect/307%3Fto%3D/redirect/307", host="api.example.test")
    server.requests.clear()
    async with Egress(policy(max_redirects=3), resolver=MappingResolver(NAMES)) as capped:
        server.route("/forever", _forever)
        await refused(capped, request(server.url("/forever", host="api.example.test")), "too_many_redirects")
    assert len(server.requests) == 4  # the first request and three followed hops
    got = await fetch(egress, request(endless, follow_redirects=False))
    assert got.status == 307 and got.headers["location"].startswith("/redirect/307")


async def _forever(_: Any) -> Any:
    from tests.egress_support import Response

    return Response(302, b"", [("location", "/forever")])


# -- the network policy ----------------------------------------------------------------------

async def test_names_resolving_to_refused_addresses_are_refused(egress: Egress) -> None:
    for name, address in [("inside.example.test", "10.0.0.7"), ("metadata.example.test", "169.254.169.254"),
                          ("mixed.example.test", "192.168.1.1")]:
        error = await refused(egress, request(f"http://{name}/"), "address_refused")
        assert name in error.message and address in error.message
    error = await refused(egress, request("http://nowhere.example.test/"), "connect_error")
    assert "could not resolve nowhere.example.test" in error.message


async def test_loopback_is_refused_unless_exempt(server: LocalServer) -> None:
    async with Egress(policy(exempt_cidrs=()), resolver=MappingResolver(NAMES)) as egress:
        for host in ("api.example.test", "127.0.0.1", "2130706433", "0x7f.1", "017700000001", "127.1",
                     "0x7f000001", "[::ffff:127.0.0.1]", "[::1]", "127.0.0.1."):
            error = await refused(egress, request(server.url("/echo", host=host)), "address_refused",
                                  allowlist=[*ALLOW, host.strip("[]")])
            assert "network policy" in error.message
        await refused(egress, request("http://169.254.169.254/latest/meta-data/"), "address_refused")
        await refused(egress, request("http://0xa9fea9fe/"), "address_refused")
        await refused(egress, request("http://[fe80::1]/"), "address_refused")
        await refused(egress, request("http://0/"), "address_refused")
    assert server.connections == 0


async def test_odd_spellings_of_an_exempt_address_reach_it(egress: Egress, server: LocalServer) -> None:
    # Parsed the way the resolver would, so the allowlisted canonical address matches.
    for host in ("2130706433", "0x7f.1", "127.1", "[::ffff:127.0.0.1]"):
        got = await fetch(egress, request(server.url("/echo", host=host)), allowlist=["127.0.0.1"])
        assert got.status == 200


async def test_platform_ports_are_refused_even_when_exempt(server: LocalServer) -> None:
    settings = Settings(gateway_port=server.port, egress_exempt_cidrs=["127.0.0.0/8"])
    platform = EgressPolicy.from_settings(settings, extra_ca_pem=CA.cert_pem)
    async with Egress(platform, resolver=MappingResolver(NAMES)) as egress:
        error = await refused(egress, request(server.url("/echo", host="api.example.test")), "address_refused")
        assert f"port {server.port}" in error.message and "belongs to the platform" in error.message
        for port in (9092, 5432, 8081, 2375):
            await refused(egress, request(f"http://127.0.0.1:{port}/"), "address_refused")
            await refused(egress, request(f"http://2130706433:{port}/"), "address_refused")
    assert server.connections == 0


async def test_proxy_environment_is_ignored(monkeypatch: pytest.MonkeyPatch, server: LocalServer) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9/")
    async with Egress(policy(), resolver=MappingResolver(NAMES)) as egress:
        got = await fetch(egress, request(server.url("/echo", host="api.example.test")))
    assert got.status == 200


# -- limits ----------------------------------------------------------------------------------

async def test_response_size_is_capped_while_streaming(server: LocalServer) -> None:
    async with Egress(policy(max_response_bytes=100_000), resolver=MappingResolver(NAMES)) as egress:
        ok = await fetch(egress, request(server.url("/bytes?n=100000", host="api.example.test")))
        assert len(ok.body) == 100_000
        error = await refused(egress, request(server.url("/bytes?n=100001", host="api.example.test")),
                              "response_too_large")
        assert "100,000-byte limit" in error.message
        await refused(egress, request(server.url("/bytes?n=5000000&chunked=1", host="api.example.test")),
                      "response_too_large")
        assert (await fetch(egress, request(server.url("/echo", host="api.example.test")))).status == 200


async def test_every_request_is_bounded_by_the_deadline(egress: Egress, server: LocalServer) -> None:
    slow = server.url("/slow?delay_s=5", host="api.example.test")
    started = time.monotonic()
    error = await refused(egress, request(slow), "timeout", deadline_s=0.5)
    assert time.monotonic() - started < 2.0 and "did not complete within 0.5 s" in error.message
    started = time.monotonic()
    await refused(egress, request(slow, timeout_s=0.3), "timeout", deadline_s=20)
    assert time.monotonic() - started < 2.0
    server.requests.clear()
    error = await refused(egress, request(slow), "timeout", deadline_s=-1)
    assert "no time is left" in error.message and server.requests == []
    assert (await fetch(egress, request(server.url("/slow?delay_s=0.1", host="api.example.test")))).status == 200


async def test_twenty_requests_a_second_per_function(egress: Egress, server: LocalServer) -> None:
    url = server.url("/echo", host="api.example.test")
    results = await asyncio.gather(*(fetch(egress, request(url), rate_key="lambda-1") for _ in range(21)),
                                   return_exceptions=True)
    errors = [r for r in results if isinstance(r, EgressError)]
    assert len(errors) == 1 and errors[0].code == "rate_limited"
    assert "more than 20 requests per second" in errors[0].message
    assert sum(isinstance(r, EgressResponse) for r in results) == 20
    assert (await fetch(egress, request(url), rate_key="lambda-2")).status == 200
    await asyncio.sleep(0.1)  # two tokens back
    assert (await fetch(egress, request(url), rate_key="lambda-1")).status == 200


# -- TLS and mTLS ----------------------------------------------------------------------------

async def test_https_is_verified_by_name(egress: Egress, tls_server: LocalServer) -> None:
    got = await fetch(egress, request(tls_server.url("/echo", host="api.example.test")))
    assert got.status == 200 and json.loads(got.body)["headers"]["host"] == f"api.example.test:{tls_server.port}"
    # The certificate names api.example.test and a.wild.example.test, not other.example.test.
    error = await refused(egress, request(tls_server.url("/echo", host="other.example.test")), "tls_error",
                          allowlist=["other.example.test"])
    assert "other.example.test" in error.message


async def test_an_untrusted_certificate_is_refused(tls_server: LocalServer) -> None:
    async with Egress(policy(extra_ca_pem=None), resolver=MappingResolver(NAMES)) as egress:
        error = await refused(egress, request(tls_server.url("/echo", host="api.example.test")), "tls_error")
        assert "certificate" in error.message.lower()


async def test_mtls_presents_the_client_certificate() -> None:
    client = CA.issue_client("acme-crm-client")
    certificate = ClientCertificate(cert_pem=client.cert_pem, key_pem=client.key_pem, ca_pem=None, name="crm")
    async with LocalServer(tls=SERVER_CERT, client_ca_pem=CA.cert_pem) as mtls, \
            Egress(policy(), resolver=MappingResolver(NAMES)) as egress:
        url = mtls.url("/echo", host="api.example.test")
        got = await fetch(egress, request(url), certificate=certificate)
        assert json.loads(got.body)["client_cn"] == "acme-crm-client"
        got = await fetch(egress, request(url), certificate=certificate)  # the cached pool, kept alive
        assert mtls.connections == 1

        # Without a certificate, or with one from another CA, the server ends the session. With
        # TLS 1.3 its alert may be lost in the reset of the connection, so either code is honest.
        stranger = CertificateAuthority("someone else").issue_client("stranger")
        for other in (None, ClientCertificate(stranger.cert_pem, stranger.key_pem, None, "other")):
            with pytest.raises(EgressError) as caught:
                await fetch(egress, request(url), certificate=other)
            assert caught.value.code in ("tls_error", "connect_error"), caught.value.message
            assert "api.example.test" in caught.value.message
        assert len(mtls.requests) == 2


async def test_mtls_trusts_the_certificates_own_ca(tls_server: LocalServer) -> None:
    client = CA.issue_client("acme")
    with_ca = ClientCertificate(cert_pem=client.cert_pem, key_pem=client.key_pem, ca_pem=CA.cert_pem, name="crm")
    async with Egress(policy(extra_ca_pem=None), resolver=MappingResolver(NAMES)) as egress:
        url = tls_server.url("/echo", host="api.example.test")
        assert (await fetch(egress, request(url), certificate=with_ca)).status == 200
        await refused(egress, request(url), "tls_error")  # the shared pool does not trust it
        broken = ClientCertificate(cert_pem=client.cert_pem, key_pem="not a key", ca_pem=None, name="broken")
        error = await refused(egress, request(url), "tls_error", certificate=broken)
        assert "'broken'" in error.message and "not a key" not in error.message


# -- lifecycle and metrics -------------------------------------------------------------------

async def test_lifecycle() -> None:
    egress = Egress(policy(), resolver=MappingResolver(NAMES))
    with pytest.raises(RuntimeError):
        await fetch(egress, request("http://api.example.test/"))
    await egress.start()
    with pytest.raises(RuntimeError):
        await egress.start()
    await egress.stop()
    await egress.stop()
    with pytest.raises(RuntimeError):
        await fetch(egress, request("http://api.example.test/"))


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_outcomes_and_refusals_are_counted(egress: Egress, server: LocalServer) -> None:
    ok = _sample("fnbus_egress_requests_total", {"outcome": "ok"})
    listed = _sample("fnbus_egress_refusals_total", {"reason": "not_allowlisted"})
    private = _sample("fnbus_egress_refusals_total", {"reason": "private_address"})
    await fetch(egress, request(server.url("/echo", host="api.example.test")))
    await refused(egress, request("http://other.example.test/"), "not_allowlisted")
    await refused(egress, request("http://inside.example.test/"), "address_refused")
    assert _sample("fnbus_egress_requests_total", {"outcome": "ok"}) == ok + 1
    assert _sample("fnbus_egress_refusals_total", {"reason": "not_allowlisted"}) == listed + 1
    assert _sample("fnbus_egress_refusals_total", {"reason": "private_address"}) == private + 1
