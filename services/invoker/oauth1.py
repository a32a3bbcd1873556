"""OAuth 1.0 request signing with HMAC-SHA1 (RFC 5849), as LpClient authenticates.

Only the client side that LivePerson's APIs need: the signature base string
(section 3.4.1), HMAC-SHA1 (3.4.2) and the ``Authorization: OAuth`` header
(3.5.1). Parameters come from the query, from an
``application/x-www-form-urlencoded`` body (3.4.1.3.1) and from the protocol
itself; ``realm`` and ``oauth_signature`` never enter the base string.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def percent_encode(value: str) -> str:
    """RFC 5849 3.6: UTF-8, then every octet except ALPHA, DIGIT, ``-._~`` as %XX."""
    return quote(value.encode(), safe="-._~")


def base_string_uri(url: str) -> str:
    """RFC 5849 3.4.1.2: scheme and host in lower case, default port dropped, no query."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{parts.port}"
    return f"{scheme}://{host}{parts.path or '/'}"


def normalized_parameters(params: Iterable[tuple[str, str]]) -> str:
    """RFC 5849 3.4.1.3.2: encode, sort by name then value, join with ``=`` and ``&``."""
    encoded = sorted((percent_encode(k), percent_encode(v)) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in encoded)


def signature_base_string(method: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """RFC 5849 3.4.1.1, with ``params`` the protocol and body parameters (the query is added)."""
    query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    every = [(k, v) for k, v in [*query, *params] if k not in ("realm", "oauth_signature")]
    return "&".join((percent_encode(method.upper()), percent_encode(base_string_uri(url)),
                     percent_encode(normalized_parameters(every))))


def hmac_sha1(base_string: str, consumer_secret: str, token_secret: str) -> str:
    """RFC 5849 3.4.2: base64 of HMAC-SHA1 keyed with both encoded secrets."""
    key = f"{percent_encode(consumer_secret)}&{percent_encode(token_secret)}"
    digest = hmac.new(key.encode(), base_string.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Credentials:
    consumer_key: str
    consumer_secret: str
    token: str = ""
    token_secret: str = ""


def authorization_header(credentials: Credentials, method: str, url: str, *,
                         form_body: str | None = None, nonce: str | None = None,
                         timestamp: int | None = None, realm: str | None = None,
                         with_version: bool = True) -> str:
    """The ``Authorization`` header value for one request (RFC 5849 3.5.1).

    ``form_body`` is the body when it is ``application/x-www-form-urlencoded``
    (its parameters are signed); other bodies are not part of the signature.
    ``oauth_version`` is optional in the RFC; it is sent unless ``with_version`` is false.
    """
    oauth = [
        ("oauth_consumer_key", credentials.consumer_key),
        ("oauth_nonce", nonce or secrets.token_hex(16)),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", str(int(time.time()) if timestamp is None else timestamp)),
    ]
    if with_version:
        oauth.append(("oauth_version", "1.0"))
    if credentials.token:
        oauth.append(("oauth_token", credentials.token))
    body = parse_qsl(form_body, keep_blank_values=True) if form_body else []
    base = signature_base_string(method, url, [*oauth, *body])
    oauth.append(("oauth_signature", hmac_sha1(base, credentials.consumer_secret,
                                               credentials.token_secret)))
    fields = ([f'realm="{percent_encode(realm)}"'] if realm is not None else []) + [
        f'{percent_encode(k)}="{percent_encode(v)}"' for k, v in oauth]
    return "OAuth " + ", ".join(fields)
