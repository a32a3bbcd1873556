"""The registry's rule for allowlist entries (422 invalid_domain when it refuses)."""

from __future__ import annotations

import pytest

from fnbus.egress import host_allowed
from fnbus.errors import Unprocessable
from services.registry.validation import normalise_domain


@pytest.mark.parametrize(("given", "stored"), [
    ("api.example.com", "api.example.com"),
    ("  API.Example.COM. ", "api.example.com"),
    ("*.Example.com", "*.example.com"),
    ("*.a.b.example.com", "*.a.b.example.com"),
    ("localhost", "localhost"),
    ("127.0.0.1", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("*.bücher.example", "*.xn--bcher-kva.example"),
])
def test_accepted_domains_are_normalised(given: str, stored: str) -> None:
    assert normalise_domain(given) == stored


@pytest.mark.parametrize("bad", [
    "*.*.example.com",  # two wildcards
    "a.*.example.com",  # a wildcard not leading
    "example.*",
    "*a.example.com",  # part of a label
    "a*.example.com",
    "*",
    "*.com",  # every host under a top-level domain
    "*.",
    "http://example.com",
    "example.com/path",
    "example.com:443",
    "exa mple.com",
    "-example.com",
    "",
    "a" * 64 + ".com",
    "[::1]",
])
def test_refused_domains(bad: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        normalise_domain(bad)
    assert caught.value.status == 422 and caught.value.code == "invalid_domain"


def test_a_stored_entry_matches_what_the_engine_allows() -> None:
    entry = normalise_domain("*.Bücher.example")
    assert host_allowed("shop.BÜCHER.example", [entry])
    assert not host_allowed("bücher.example", [entry])
