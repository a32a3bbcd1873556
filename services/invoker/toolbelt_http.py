"""The ``http.request`` toolbelt method on the wire: its argument checked and turned into
an :class:`~fnbus.egress.EgressRequest`, and a response turned into the wire value.

Shared by the invoker's dispatcher (:mod:`services.invoker.toolbelt`), the LP clients
(:mod:`services.invoker.toolbelt_lp`) and ``fnbus invoke --local``; the contract is in
docs/runner-protocol.md ("Toolbelt methods").
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import urlsplit

from fnbus.egress import EgressRequest
from fnbus.runner_protocol import MAX_FRAME_BYTES, ToolbeltCallError

# Room in a frame for the rest of the toolbelt_result around the body.
_FRAME_SLACK_BYTES = 64 * 1024
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_ENCODINGS = ("utf8", "base64")


def bad_request(message: str) -> ToolbeltCallError:
    return ToolbeltCallError("bad_request", message)


_bad = bad_request


def parse_http_request(args: list[Any]) -> tuple[EgressRequest, str, str | None]:
    """The ``http.request`` argument as (egress request, response encoding, mtls name)."""
    if len(args) != 1 or not isinstance(args[0], dict):
        raise _bad("http.request takes one argument, the request object")
    req: dict[str, Any] = args[0]
    method = req.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in _HTTP_METHODS:
        raise _bad(f"unsupported HTTP method {method!r}")
    url = req.get("url")
    if not isinstance(url, str) or not url:
        raise _bad("the request needs an absolute url")
    # Only the shape here: the egress engine parses the host (and refuses odd spellings).
    if urlsplit(url).scheme.lower() not in ("http", "https") or "//" not in url:
        raise _bad(f"{url[:200]!r} is not an absolute http:// or https:// URL")
    headers = _headers(req.get("headers"))
    body = _decode_body(req.get("body"), req.get("body_encoding") or "utf8")
    timeout_ms = req.get("timeout_ms")
    if timeout_ms is not None and (isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int)
                                   or timeout_ms <= 0):
        raise _bad("timeout_ms must be a positive integer")
    follow = req.get("follow_redirects", True)
    if not isinstance(follow, bool):
        raise _bad("follow_redirects must be true or false")
    max_redirects = req.get("max_redirects")
    if max_redirects is not None and (isinstance(max_redirects, bool)
                                      or not isinstance(max_redirects, int) or max_redirects < 0):
        raise _bad("max_redirects must be a non-negative integer")
    mtls = req.get("mtls")
    if mtls is not None and not isinstance(mtls, str):
        raise _bad("mtls must name an uploaded certificate")
    response_encoding = req.get("response_encoding") or "utf8"
    if response_encoding not in _ENCODINGS:
        raise _bad("response_encoding must be utf8 or base64")
    request = EgressRequest(
        method=method.upper(), url=url, headers=headers, body=body,
        timeout_s=None if timeout_ms is None else timeout_ms / 1000,
        follow_redirects=follow, max_redirects=max_redirects)
    return request, response_encoding, mtls


def _headers(headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise _bad("headers must be an object of names and values")
    out = {}
    for name, value in headers.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _bad(f"header {str(name)[:100]!r} must have a string value")
        out[str(name)] = str(value)
    return out


def _decode_body(body: Any, encoding: Any) -> bytes | None:
    if body is None:
        return None
    if not isinstance(body, str):
        raise _bad("body must be a string (the client serialises json and form bodies)")
    if encoding == "utf8":
        return body.encode("utf-8")
    if encoding == "base64":
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("body is not valid base64") from None
    raise _bad("body_encoding must be utf8 or base64")


def encode_response(status: int, headers: dict[str, str], body: bytes, url: str,
                    response_encoding: str) -> dict[str, Any]:
    """The wire value of a response; a body that is not UTF-8 travels as base64."""
    text: str | None = None
    if response_encoding == "utf8":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    encoding = "utf8" if text is not None else "base64"
    if text is None:
        text = base64.b64encode(body).decode("ascii")
    if len(text.encode("utf-8")) > MAX_FRAME_BYTES - _FRAME_SLACK_BYTES:
        raise ToolbeltCallError(
            "response_too_large",
            f"the response body ({len(body):,} bytes) does not fit through the toolbelt "
            f"channel ({(MAX_FRAME_BYTES - _FRAME_SLACK_BYTES) // 1024:,} KiB once encoded)")
    return {"status": status, "headers": {k.lower(): v for k, v in headers.items()},
            "body": text, "body_encoding": encoding, "url": url}
