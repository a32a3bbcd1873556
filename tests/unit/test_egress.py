"""The pure parts of fnbus.egress: allowlist matching, IP literals, the network policy, the rate limit."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from fnbus.config import Settings
from fnbus.egress import (
    EgressPolicy,
    RateLimiter,
    RefusalReason,
    TokenBucket,
    canonical_host,
    host_allowed,
    is_special_address,
    parse_ip_literal,
)

LIST = ["api.example.com", "*.wild.example.com", "127.0.0.1", "bücher.example"]


@pytest.mark.parametrize(("host", "allowed"), [
    ("api.example.com", True),
    ("API.Example.COM", True),
    ("api.example.com.", True),
    ("www.api.example.com", False),  # the seed's subdomain trap
    ("example.com", False),
    ("api.example.com.evil.test", False),
    ("evilapi.example.com", False),
    ("a.wild.example.com", True),
    ("A.WILD.example.com.", True),
    ("wild.example.com", False),  # the wildcard needs one more label
    ("a.b.wild.example.com", False),  # ... exactly one
    (".wild.example.com", False),
    ("xwild.example.com", False),
    ("127.0.0.1", True),
    ("2130706433", True),  # the same address, spelled otherwise
    ("0x7f.1", True),
    ("127.0.0.2", False),
    ("xn--bcher-kva.example", True),  # IDNA
    ("BÜCHER.example", True),
    ("", False),
])
def test_allowlist_matrix(host: str, allowed: bool) -> None:
    assert host_allowed(host, LIST) is allowed


def test_allowlist_entries_are_normalised_too() -> None:
    assert host_allowed("api.example.com", ["API.EXAMPLE.COM."])
    assert host_allowed("a.example.com", ["*.Example.Com"])
    assert not host_allowed("127.0.0.1", ["*.0.0.1"])  # wildcards never match addresses
    assert not host_allowed("anything.com", [])


@pytest.mark.parametrize(("spelling", "address"), [
    ("127.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"),
    ("0X7F.0.0.1", "127.0.0.1"),
    ("017700000001", "127.0.0.1"),
    ("0177.0.0.01", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("127.0.1", "127.0.0.1"),
    ("127.0.0.1.", "127.0.0.1"),
    ("0", "0.0.0.0"),
    ("169.254.43518", "169.254.169.254"),
    ("0xa9fea9fe", "169.254.169.254"),
    ("10.0x10.1", "10.16.0.1"),
    ("[::1]", "::1"),
    ("::1", "::1"),
    ("[::ffff:127.0.0.1]", "127.0.0.1"),  # mapped forms are the IPv4 address
    ("::ffff:7f00:1", "127.0.0.1"),
    ("[fe80::1%25eth0]".replace("%25", "%"), "fe80::1%eth0"),
    ("[2001:db8::1]", "2001:db8::1"),
])
def test_ip_literals_in_every_spelling(spelling: str, address: str) -> None:
    assert str(parse_ip_literal(spelling)) == address


@pytest.mark.parametrize("name", [
    "example.com", "1.2.3.4.5", "256.0.0.0.1", "0x1g.1", "08.0.0.1", "1..1", "127.0.0.256",
    "127.0.65536", "4294967296", "api", "[example.com]", "1.2.3.x", "",
])
def test_names_are_not_literals(name: str) -> None:
    assert parse_ip_literal(name) is None


def test_canonical_host() -> None:
    assert canonical_host("Api.Example.Com.") == "api.example.com"
    assert canonical_host("0x7f.1") == "127.0.0.1"
    assert canonical_host("münchen.de") == "xn--mnchen-3ya.de"


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.169.254", "169.254.0.1", "100.64.0.1", "100.127.255.255", "0.0.0.0", "0.1.2.3",
    "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.0.8", "198.18.0.1",
    "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "::ffff:169.254.169.254", "::127.0.0.1", "2002:7f00:1::1", "2002:a9fe:a9fe::1", "64:ff9b::a9fe:a9fe",
    "64:ff9b::7f00:1", "2001:db8::1", "fec0::1", "192.0.2.1", "203.0.113.9", "2001::1", "100::1",
])
def test_special_addresses(address: str) -> None:
    assert is_special_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "100.63.255.255", "100.128.0.1", "172.32.0.1",
    "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808",
])
def test_public_addresses(address: str) -> None:
    assert not is_special_address(ipaddress.ip_address(address))


def _policy(**kwargs: object) -> EgressPolicy:
    base: dict[str, object] = {"exempt_cidrs": (), "platform_ports": frozenset({8080, 9092, 5432})}
    base.update(kwargs)
    return EgressPolicy(**base)


def test_policy_without_exemptions_refuses_private_addresses() -> None:
    policy = _policy()
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 8000) is RefusalReason.PRIVATE_ADDRESS
    assert policy.refusal(ipaddress.ip_address("169.254.169.254"), 80) is RefusalReason.PRIVATE_ADDRESS
    assert policy.refusal(ipaddress.ip_address("8.8.8.8"), 443) is None
    # A public address on a port the platform also uses is someone else's service.
    assert policy.refusal(ipaddress.ip_address("8.8.8.8"), 5432) is None


def test_exemptions_let_addresses_through_but_never_platform_ports() -> None:
    policy = _policy(exempt_cidrs=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.9.0.0/16")))
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 8000) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.2"), 80) is None
    assert policy.refusal(ipaddress.ip_address("10.9.1.1"), 80) is None
    assert policy.refusal(ipaddress.ip_address("10.8.1.1"), 80) is RefusalReason.PRIVATE_ADDRESS
    assert policy.refusal(ipaddress.ip_address("169.254.169.254"), 80) is RefusalReason.PRIVATE_ADDRESS
    for port in (8080, 9092, 5432):
        assert policy.refusal(ipaddress.ip_address("127.0.0.1"), port) is RefusalReason.PLATFORM_PORT
        assert policy.refusal(ipaddress.ip_address("10.9.0.1"), port) is RefusalReason.PLATFORM_PORT
    # The mapped IPv6 form is the same address, exemption and platform ports included.
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1"), 8000) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1"), 8080) is RefusalReason.PLATFORM_PORT
    # ::1 is not in an IPv4 exemption.
    assert policy.refusal(ipaddress.ip_address("::1"), 8000) is RefusalReason.PRIVATE_ADDRESS


def test_policy_from_settings_gathers_the_platform_ports() -> None:
    settings = Settings(
        gateway_port=18080, registry_port=18081, deployer_port=18082, invoker_port=18083,
        scheduler_port=18084, log_ingest_port=18085, kafka_bootstrap="127.0.0.1:19092,localhost:19094",
        database_url="postgresql://u:p@127.0.0.1:15432/db", docker_host="tcp://127.0.0.1:12375",
        egress_exempt_cidrs=["127.0.0.0/8", "::1/128"], egress_requests_per_s=5,
        egress_max_response_bytes=1234, egress_max_redirects=3,
    )
    policy = EgressPolicy.from_settings(settings, extra_ca_pem="PEM")
    assert {18080, 18081, 18082, 18083, 18084, 18085, 19092, 19094, 15432, 2375, 2376, 12375, 9093} \
        <= policy.platform_ports
    assert policy.exempt_cidrs == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert (policy.requests_per_s, policy.max_response_bytes, policy.max_redirects, policy.extra_ca_pem) == \
        (5, 1234, 3, "PEM")


def test_policy_reads_a_ca_file_setting_when_settings_has_one(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n...")

    class WithCaFile(Settings):
        egress_ca_file: str = str(bundle)

    assert EgressPolicy.from_settings(WithCaFile()).extra_ca_pem == bundle.read_text()
    assert EgressPolicy.from_settings(WithCaFile(), extra_ca_pem="given").extra_ca_pem == "given"
    assert EgressPolicy.from_settings(Settings()).extra_ca_pem is None


def test_policy_from_default_settings() -> None:
    policy = EgressPolicy.from_settings(Settings(egress_exempt_cidrs=[]))
    assert {8080, 8081, 8082, 8083, 8084, 8085, 9092, 5432, 2375, 2376} <= policy.platform_ports
    assert policy.exempt_cidrs == ()
    assert policy.max_response_bytes == 10 * 1024 * 1024 and policy.requests_per_s == 20


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=2, capacity=2, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.0)
    assert not bucket.take(0.4)  # 0.8 of a token
    assert bucket.take(0.5)
    assert not bucket.take(0.5)
    assert bucket.take(10.0) and bucket.take(10.0) and not bucket.take(10.0)  # capped at capacity


def test_rate_limiter_allows_twenty_a_second_per_key() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock)
    assert all(limiter.allow("lambda-a") for _ in range(20))
    assert not limiter.allow("lambda-a")  # the 21st within the second
    assert limiter.allow("lambda-b")  # another function has its own bucket
    clock.now += 0.06  # 1.2 tokens
    assert limiter.allow("lambda-a") and not limiter.allow("lambda-a")
    clock.now += 1.0
    assert sum(limiter.allow("lambda-a") for _ in range(25)) == 20


def test_rate_limiter_zero_disables_and_forgets_idle_keys() -> None:
    assert all(RateLimiter(0).allow("x") for _ in range(1000))
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, max_keys=3)
    for key in "abc":
        limiter.allow(key)
    clock.now += 5
    assert limiter.allow("d")
    assert len(limiter._buckets) == 1  # a, b and c were full again: nothing to remember
