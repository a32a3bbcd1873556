"""fnbus toolbelt for Python lambdas (the counterpart of Node's "lp-faas-toolbelt").

The clients of LivePerson Functions' toolbelt, in snake_case and async::

    from lp_faas_toolbelt import Toolbelt

    async def handler(input):
        http = Toolbelt.http_client()
        customer = await http.get("https://crm.example.com/customers/1", json=True)
        secret = await Toolbelt.secret_client().read_secret("crm-token")
        ...

Containers have no network: every call becomes a ``toolbelt_call`` frame
``{method, args}`` that the runner sends to the host (docs/runner-protocol.md),
which applies policy and answers; methods and arguments follow the toolbelt
wire contract (docs/toolbelt.md).

Contract:

1. Creating a client never fails (code that builds clients at import time
   loads), except ``mtls_client`` given PEM contents, which raises at once.
2. ``http_client``, ``mtls_client`` and ``lp_client`` behave like Node's
   request-promise clients: ``simple`` (a non-2xx raises
   :class:`StatusCodeError`), ``resolve_with_full_response``, ``json``; a
   transport failure raises :class:`RequestError`; the host's ``rate_limited``
   raises :class:`StatusCodeError` with status 429 whatever ``simple`` says.
3. Other clients pass their arguments through and return the host's value;
   host errors raise :class:`ToolbeltError` with the host's ``code``.
4. Clients this platform cannot serve raise :class:`NotAvailableError`.
5. All client methods are coroutines. A plain ``def`` handler (it runs in a
   thread) uses :func:`wait` to run one: ``wait(client.get(url))``.

Exceptions::

    ToolbeltError(code, message)        a toolbelt call failed
     └── NotAvailableError              not provided by this platform
    RequestError                        request-promise's: no response (cause: ToolbeltError)
    StatusCodeError                     request-promise's: non-2xx status, or 429 rate limit
    CustomFailure                       raise from a handler: the invocation is a custom failure
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import json as jsonlib
import os
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from enum import StrEnum
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

__all__ = [
    "ConversationContentTypes",
    "CustomFailure",
    "LpServices",
    "NotAvailableError",
    "RequestError",
    "Response",
    "SDETypes",
    "StatusCodeError",
    "Toolbelt",
    "ToolbeltError",
    "call",
    "call_async",
    "ping",
    "ping_async",
    "wait",
]


# ---------------------------------------------------------------- errors


class CustomFailure(Exception):
    """Raised by a handler: the invocation fails as ``custom-failure``."""


class ToolbeltError(Exception):
    """A toolbelt call failed; ``code`` says why (e.g. ``secret_not_found``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotAvailableError(ToolbeltError):
    def __init__(self, what: str, why: str | None = None) -> None:
        tail = f": {why}" if why else " yet"
        super().__init__("not_available", f"lp_faas_toolbelt: {what} is not available on this platform{tail}")


class RequestError(Exception):
    """No response: ``cause`` is the :class:`ToolbeltError`; ``code`` its code."""

    def __init__(self, cause: BaseException, options: dict[str, Any], response: Response | None = None) -> None:
        super().__init__(str(cause))
        self.name = "RequestError"
        self.cause = cause
        self.error = cause
        self.options = options
        self.response = response
        self.code: str | None = getattr(cause, "code", None)


class StatusCodeError(Exception):
    """A non-2xx status with ``simple=True``, or the rate limit (429)."""

    def __init__(
        self, status_code: int, body: Any, options: dict[str, Any], response: Response, code: str | None = None
    ) -> None:
        super().__init__(f"{status_code} - {_describe(body)}")
        self.name = "StatusCodeError"
        self.status_code = status_code
        self.error = body
        self.options = options
        self.response = response
        self.code = code


def _describe(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        return jsonlib.dumps(body, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(body)


class Response:
    """What ``resolve_with_full_response=True`` returns."""

    def __init__(self, status_code: int, headers: dict[str, str], body: Any, url: str, method: str) -> None:
        self.status_code = status_code
        self.status_message = _reason(status_code)
        self.headers = headers  # lower-case names
        self.body = body
        self.url = url  # the final URL after redirects
        self.request = {"uri": url, "method": method}

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {self.url}>"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


# ---------------------------------------------------------------- transport

# Set by the runner: a coroutine function (method, args) -> value, and the
# event loop it must run on.
_transport: Callable[[str, list[Any]], Awaitable[Any]] | None = None
_loop: asyncio.AbstractEventLoop | None = None


def _attach(transport: Callable[[str, list[Any]], Awaitable[Any]], loop: asyncio.AbstractEventLoop) -> None:
    global _transport, _loop
    _transport, _loop = transport, loop


async def call_async(method: str, args: list[Any] | None = None) -> Any:
    """Ask the host to run a toolbelt ``method``; for ``async def`` handlers."""
    if _transport is None:
        raise ToolbeltError("unavailable", "lp_faas_toolbelt: no runner is attached")
    return await _transport(method, list(args or []))


def wait(awaitable: Coroutine[Any, Any, Any], timeout_s: float | None = None) -> Any:
    """Run a client coroutine from a plain ``def`` handler (which runs in a thread)."""
    if _loop is None:
        raise ToolbeltError("unavailable", "lp_faas_toolbelt: no runner is attached")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is _loop:
        awaitable.close()
        raise RuntimeError("lp_faas_toolbelt.wait() blocks; from an async handler use `await`")
    return asyncio.run_coroutine_threadsafe(awaitable, _loop).result(timeout_s)


def call(method: str, args: list[Any] | None = None, timeout_s: float | None = None) -> Any:
    """Blocking :func:`call_async`, for plain ``def`` handlers (they run in a thread)."""
    if _transport is None or _loop is None:
        raise ToolbeltError("unavailable", "lp_faas_toolbelt: no runner is attached")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is _loop:
        raise RuntimeError("lp_faas_toolbelt.call() blocks; from an async handler use `await call_async()`")
    future = asyncio.run_coroutine_threadsafe(call_async(method, args), _loop)
    return future.result(timeout_s)


def ping(payload: Any = None) -> Any:
    """Round trip to the host; returns ``{"pong": [payload]}``."""
    return call("ping", [] if payload is None else [payload])


async def ping_async(payload: Any = None) -> Any:
    return await call_async("ping", [] if payload is None else [payload])


def _json_args(*args: Any) -> list[Any]:
    """Positional arguments with trailing Nones dropped (omitted stays omitted)."""
    out = list(args)
    while out and out[-1] is None:
        out.pop()
    return out


# ---------------------------------------------------------------- query strings

_URI_SAFE = "-_.!~*'()"  # what JavaScript's encodeURIComponent leaves alone


def _enc(text: str) -> str:
    return quote(text, safe=_URI_SAFE)


def _scalar(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _qs_pairs(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    """Lists repeat the key (a=1&a=2), dicts nest (a[b]=c), None gives ``a=``."""
    if value is None:
        out.append((prefix, ""))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _qs_pairs(f"{prefix}[{key}]", item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _qs_pairs(prefix, item, out)
    else:
        out.append((prefix, _scalar(value)))


def _encode_qs(params: Mapping[str, Any]) -> str:
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        _qs_pairs(str(key), value, pairs)
    return "&".join(f"{_enc(k)}={_enc(v)}" for k, v in pairs)


def _apply_qs(target: str, qs: Mapping[str, Any] | None) -> str:
    """Merge ``qs`` into a URL or path; its keys replace the URL's own."""
    if not qs:
        return target
    rest, _, fragment = target.partition("#")
    base, _, query = rest.partition("?")
    replaced = {str(k) for k in qs}
    kept = [
        part
        for part in query.split("&")
        if part and unquote_plus(part.split("=", 1)[0]).split("[", 1)[0] not in replaced
    ]
    added = _encode_qs(qs)
    merged = "&".join(kept + ([added] if added else []))
    return base + (f"?{merged}" if merged else "") + (f"#{fragment}" if fragment else "")


# ---------------------------------------------------------------- request options

# camelCase spellings of Node code are accepted too, to ease porting.
_ALIASES = {
    "resolveWithFullResponse": "resolve_with_full_response",
    "baseUrl": "base_url",
    "followRedirect": "follow_redirect",
    "follow_redirects": "follow_redirect",
    "maxRedirects": "max_redirects",
    "timeoutMs": "timeout_ms",
    "url": "uri",
}
_OPTIONS = {
    "method", "uri", "base_url", "qs", "params", "headers", "body", "data", "json", "form", "simple",
    "resolve_with_full_response", "timeout", "timeout_ms", "encoding", "follow_redirect", "max_redirects", "auth",
}  # fmt: skip
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
_UNSET: Any = object()


def _bad(message: str) -> ToolbeltError:
    return ToolbeltError("bad_request", message)


def _normalise(options: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in options.items():
        name = _ALIASES.get(key, key)
        if name == "params":
            name = "qs"
        if name == "data":
            name = "body"
        if name not in _OPTIONS:
            raise _bad(f"unknown request option {key!r}")
        out[name] = value
    return out


def _merge(uri: Any, options: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if isinstance(uri, Mapping):
        opts.update(_normalise(uri))
    elif uri is not None:
        opts["uri"] = str(uri)
    if options:
        opts.update(_normalise(options))
    opts.update(_normalise(kwargs))
    return opts


def _find_header(headers: Mapping[str, str], name: str) -> str | None:
    lower = name.lower()
    return next((k for k in headers if k.lower() == lower), None)


def _default_header(headers: dict[str, str], name: str, value: str) -> None:
    if _find_header(headers, name) is None:
        headers[name] = value


class _Prepared:
    """The host's part of a request (``wire``) and what the answer needs here."""

    def __init__(self, opts: dict[str, Any]) -> None:
        self.options = opts
        self.method = str(opts.get("method") or "GET").upper()
        headers: dict[str, str] = {}
        for name, value in (opts.get("headers") or {}).items():
            if value is None:
                continue
            headers[str(name)] = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        json_opt = opts.get("json")
        self.json = json_opt is not None and json_opt is not False
        if self.json:
            _default_header(headers, "accept", "application/json")
        body = opts.get("body")
        if opts.get("form") is not None:
            form = opts["form"]
            body = form if isinstance(form, str) else _encode_qs(form)
            _default_header(headers, "content-type", "application/x-www-form-urlencoded")
        elif self.json and json_opt is not True:
            body = jsonlib.dumps(json_opt)  # json= given as the body itself
            _default_header(headers, "content-type", "application/json")
        elif self.json and body is not None:
            body = jsonlib.dumps(body)
            _default_header(headers, "content-type", "application/json")
        self.body_encoding = "utf8"
        if isinstance(body, (bytes, bytearray, memoryview)):
            body = base64.b64encode(bytes(body)).decode("ascii")
            self.body_encoding = "base64"
        elif body is not None and not isinstance(body, str):
            raise _bad("body must be str or bytes; pass json=True to send a dict or list")
        self.body: str | None = body
        auth = opts.get("auth")
        if auth and _find_header(headers, "authorization") is None:
            if isinstance(auth, Mapping) and "bearer" in auth:
                headers["authorization"] = f"Bearer {auth['bearer']}"
            else:
                if isinstance(auth, Mapping):
                    user = auth.get("user", auth.get("username", ""))
                    password = auth.get("pass", auth.get("password", ""))
                else:
                    user, password = auth
                token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
                headers["authorization"] = f"Basic {token}"
        self.headers = headers
        self.timeout_ms: int | None = None
        if opts.get("timeout_ms") is not None:
            self.timeout_ms = int(opts["timeout_ms"])
        elif opts.get("timeout") is not None:
            self.timeout_ms = int(float(opts["timeout"]) * 1000)  # seconds, as in Python HTTP clients
        if self.timeout_ms is not None and self.timeout_ms < 0:
            raise _bad("timeout must not be negative")
        self.encoding: str | None = opts.get("encoding", "utf-8")
        if self.encoding is not None:
            try:
                self.encoding = codecs.lookup(self.encoding).name
            except LookupError:
                raise _bad(f"unknown encoding {self.encoding!r}") from None
        self.response_encoding = "utf8" if self.encoding == "utf-8" else "base64"
        self.simple = bool(opts.get("simple", True))
        self.full = bool(opts.get("resolve_with_full_response", False))
        self.follow_redirects = bool(opts.get("follow_redirect", True))
        max_redirects = opts.get("max_redirects")
        self.max_redirects = None if max_redirects is None else int(max_redirects)
        self.url = ""

    def http_wire(self, mtls: str | None) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.url,
            "headers": self.headers,
            "body": self.body,
            "body_encoding": self.body_encoding,
            "timeout_ms": self.timeout_ms,
            "follow_redirects": self.follow_redirects,
            "max_redirects": self.max_redirects,
            "mtls": mtls,
            "response_encoding": self.response_encoding,
        }


def _absolute_url(opts: dict[str, Any]) -> str:
    uri = opts.get("uri")
    if not isinstance(uri, str) or not uri:
        raise _bad("a URL is required")
    base = opts.get("base_url")
    if base:
        if re.match(r"^[a-z][a-z0-9+.-]*:", uri, re.I):
            raise _bad("uri must be a path when base_url is given")
        uri = f"{str(base).rstrip('/')}/{uri.lstrip('/')}"
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _bad(f'Invalid URI "{uri}": give an absolute http or https URL')
    return _apply_qs(uri, opts.get("qs"))


def _finish(prep: _Prepared, value: Any) -> Any:
    raw = value if isinstance(value, Mapping) else {}
    status = int(raw.get("status") or 0)
    text = raw.get("body") or ""
    data: Any
    if raw.get("body_encoding") == "base64":
        try:
            payload = base64.b64decode(text)
        except (binascii.Error, ValueError):
            payload = b""
        data = payload if prep.encoding is None else payload.decode(prep.encoding, "replace")
    else:
        data = text.encode("utf-8") if prep.encoding is None else text
    if prep.json and isinstance(data, str):
        if data == "":
            data = None
        else:
            try:
                data = jsonlib.loads(data)
            except ValueError:
                pass  # not JSON: keep the text
    url = raw.get("url") or prep.url
    response = Response(status, dict(raw.get("headers") or {}), data, url, prep.method)
    if prep.simple and not response.ok:
        raise StatusCodeError(status, data, prep.options, response)
    return response if prep.full else data


def _fail(prep: _Prepared, exc: ToolbeltError) -> Exception:
    if exc.code == "rate_limited":
        response = Response(429, {}, exc.message, prep.url, prep.method)
        return StatusCodeError(429, exc.message, prep.options, response, code="rate_limited")
    return RequestError(exc, prep.options)


async def _run(
    opts: dict[str, Any], prepare: Callable[[dict[str, Any]], _Prepared], send: Callable[[_Prepared], Awaitable[Any]]
) -> Any:
    try:
        prep = prepare(opts)
    except ToolbeltError as exc:
        raise RequestError(exc, opts) from None
    except (TypeError, ValueError) as exc:  # e.g. json=True with a body json cannot encode
        raise RequestError(_bad(f"bad request options: {exc}"), opts) from None
    try:
        value = await send(prep)
    except ToolbeltError as exc:
        raise _fail(prep, exc) from None
    return _finish(prep, value)


# ---------------------------------------------------------------- HTTP and mTLS


class HttpClient:
    """request-promise style: ``await client(url, method="POST", json={...})``.

    Options (snake_case; the camelCase of Node code is accepted too): ``method``,
    ``uri``/``url``, ``base_url``, ``qs``/``params``, ``headers``, ``body``
    (str or bytes), ``json`` (True, or the body itself), ``form``, ``simple``
    (default True), ``resolve_with_full_response`` (default False), ``timeout``
    (seconds) or ``timeout_ms``, ``encoding`` (None: bytes body),
    ``follow_redirect``, ``max_redirects``, ``auth`` ((user, password),
    {"user", "pass"} or {"bearer"}).
    """

    def __init__(self, mtls: str | None = None, defaults: Mapping[str, Any] | None = None) -> None:
        self._mtls = mtls
        self._defaults = _normalise(defaults or {})

    def _prepare(self, opts: dict[str, Any]) -> _Prepared:
        prep = _Prepared(opts)
        prep.url = _absolute_url(opts)
        return prep

    async def _send(self, prep: _Prepared) -> Any:
        return await call_async("http.request", [prep.http_wire(self._mtls)])

    async def request(
        self, uri: Any = None, options: Mapping[str, Any] | None = None, /, *, method: str | None = None, **kwargs: Any
    ) -> Any:
        opts = {**self._defaults, **_merge(uri, options, kwargs)}
        if method is not None:
            opts["method"] = method
        return await _run(opts, self._prepare, self._send)

    async def __call__(self, uri: Any = None, options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Any:
        return await self.request(uri, options, **kwargs)

    async def get(self, uri: Any = None, options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Any:
        return await self.request(uri, options, method="GET", **kwargs)

    async def head(self, uri: Any = None, options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Any:
        return await self.request(uri, options, method="HEAD", **kwargs)

    async def post(self, uri: Any = None, options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Any:
        return await self.request(uri, options, method="POST", **kwargs)

    async def put(self, uri: Any = None, options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Any:
        return await self.request(uri, options, method="PUT", **kwargs)

    async def patch(self, uri: Any = None, options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Any:
        return await self.request(uri, options, method="PATCH", **kwargs)

    async def delete(self, uri: Any = None, options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Any:
        return await self.request(uri, options, method="DELETE", **kwargs)

    async def options(self, uri: Any = None, options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Any:
        return await self.request(uri, options, method="OPTIONS", **kwargs)

    def defaults(self, **options: Any) -> HttpClient:
        """A client with these options as defaults."""
        return HttpClient(self._mtls, {**self._defaults, **options})


_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----")


def _certificate_name(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and _PEM.search(value):
        raise ToolbeltError(
            "bad_request",
            "lp_faas_toolbelt: mtls_client takes the NAME of a certificate, not its PEM contents. On this "
            "platform a FaaS-Admin uploads the certificate and key per account through the API (see "
            'docs/toolbelt.md, MTLSClient); then use Toolbelt.mtls_client(certificate="<name>").',
        )
    if not isinstance(value, str) or not value.strip():
        raise ToolbeltError(
            "bad_request",
            "lp_faas_toolbelt: mtls_client needs the name of an uploaded certificate: "
            'Toolbelt.mtls_client(certificate="<name>")',
        )
    return value.strip()


class MtlsClient(HttpClient):
    """:class:`HttpClient` presenting the account's uploaded certificate ``certificate``."""

    def __init__(self, certificate: str | None, problem: ToolbeltError | None = None) -> None:
        super().__init__(mtls=certificate)
        self.certificate = certificate
        self._problem = problem

    async def request(
        self, uri: Any = None, options: Mapping[str, Any] | None = None, /, *, method: str | None = None, **kwargs: Any
    ) -> Any:
        if self._problem is not None:
            raise self._problem
        return await super().request(uri, options, method=method, **kwargs)

    def defaults(self, **options: Any) -> HttpClient:
        client = MtlsClient(self.certificate, self._problem)
        client._defaults = {**self._defaults, **_normalise(options)}
        return client


# ---------------------------------------------------------------- LpClient


class LpClient:
    """LivePerson APIs by service name; the host resolves the domain through CSDS
    and signs with OAuth1 from ``lp-faas-default-app-key``.

    ``await lp(method, service, path, **options)`` or, as in LivePerson's
    toolbelt, ``await lp(service, path, method=..., **options)``; returns like
    :class:`HttpClient`.
    """

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        positional = list(args)
        options: Mapping[str, Any] | None = None
        if positional and isinstance(positional[-1], Mapping):
            options = positional.pop()
        method = None
        if len(positional) == 3 and isinstance(positional[0], str) and positional[0].upper() in _METHODS:
            method = positional.pop(0)
        if len(positional) != 2:
            raise TypeError("lp_client(method, service, path, **options) or lp_client(service, path, **options)")
        service, path = positional
        kwargs.pop("app_key_secret_name", None)  # the host always uses lp-faas-default-app-key
        kwargs.pop("appKeySecretName", None)
        opts = _merge(None, options, kwargs)
        if method is not None:
            opts["method"] = method
        opts.pop("uri", None)
        opts.pop("base_url", None)

        def prepare(o: dict[str, Any]) -> _Prepared:
            prep = _Prepared(o)
            if not isinstance(service, str) or not service:
                raise _bad("lp_client needs a service name, e.g. LpServices.MSG_HIST")
            if not isinstance(path, str):
                raise _bad('lp_client needs a path, e.g. "/api/account/..."')
            prep.url = _apply_qs(path if path.startswith("/") else f"/{path}", o.get("qs"))
            return prep

        async def send(prep: _Prepared) -> Any:
            wire = {
                "method": prep.method,
                "service": str(service),
                "path": prep.url,
                "headers": prep.headers,
                "body": prep.body,
                "body_encoding": prep.body_encoding,
                "timeout_ms": prep.timeout_ms,
            }
            prep.url = f"lp://{service}{prep.url}"
            return await call_async("lp.request", [wire])

        return await _run(opts, prepare, send)


# ---------------------------------------------------------------- secrets

_SECRET_KEY = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
MAX_SECRET_VALUE_CHARS = 16384


def _check_secret_key(key: Any) -> None:
    if not isinstance(key, str) or not _SECRET_KEY.match(key):
        raise _bad(
            f'lp_faas_toolbelt: invalid secret key {key!r}: use 1 to 100 characters of A-Z, a-z, 0-9, "-" and "_"'
        )


class SecretClient:
    async def read_secret(self, key: str) -> dict[str, Any]:
        """``{"key", "value"}``; ToolbeltError ``secret_not_found`` when it does not exist."""
        _check_secret_key(key)
        return await call_async("secret.read", [key])  # type: ignore[no-any-return]

    async def update_secret(self, secret: Mapping[str, Any] | str, value: Any = _UNSET) -> dict[str, Any]:
        """``update_secret({"key": k, "value": v})`` or ``update_secret(k, v)``; the secret must exist."""
        if isinstance(secret, Mapping):
            key, new = secret.get("key"), secret.get("value", _UNSET)
        else:
            key, new = secret, value
        _check_secret_key(key)
        if not isinstance(new, str):
            raise _bad("lp_faas_toolbelt: a secret value must be a str (use json.dumps for other values)")
        if len(new) > MAX_SECRET_VALUE_CHARS:
            raise _bad(
                f'lp_faas_toolbelt: the value of secret "{key}" has {len(new)} characters, '
                f"more than the {MAX_SECRET_VALUE_CHARS} allowed"
            )
        return await call_async("secret.update", [{"key": key, "value": new}])  # type: ignore[no-any-return]


# ---------------------------------------------------------------- context store


class ContextServiceClient:
    """Conversation Context Service V1; a missing ``session_id`` is the "__default__" session.

    The constructor's ``api_key`` / ``account_id`` are accepted and ignored:
    the host always uses the invocation's account.
    """

    async def _call(self, name: str, *args: Any) -> Any:
        return await call_async(f"context.{name}", _json_args(*args))

    async def create_namespace(self, namespace: str, options: Mapping[str, Any] | None = None) -> Any:
        return await self._call("createNamespace", namespace, dict(options) if options else None)

    async def delete_namespace(self, namespace: str) -> Any:
        return await self._call("deleteNamespace", namespace)

    async def get_list_of_namespaces(self) -> Any:
        return await self._call("getListOfNamespaces")

    async def set_properties_in_namespace(
        self,
        namespace: str,
        properties: Mapping[str, Any],
        session_id: str | None = None,
        ttl_second: int | None = None,
    ) -> Any:
        return await self._call("setPropertiesInNamespace", namespace, dict(properties), session_id, ttl_second)

    async def update_properties_in_namespace(
        self,
        namespace: str,
        properties: Mapping[str, Any],
        session_id: str | None = None,
        ttl_second: int | None = None,
    ) -> Any:
        return await self._call("updatePropertiesInNamespace", namespace, dict(properties), session_id, ttl_second)

    async def get_all_properties_in_session(self, namespace: str, session_id: str | None = None) -> Any:
        return await self._call("getAllPropertiesInSession", namespace, session_id)

    async def get_selected_properties_in_session(
        self, namespace: str, property_names: list[str], session_id: str | None = None
    ) -> Any:
        return await self._call("getSelectedPropertiesInSession", namespace, list(property_names), session_id)

    async def get_property_in_session(self, namespace: str, property_name: str, session_id: str | None = None) -> Any:
        return await self._call("getPropertyInSession", namespace, property_name, session_id)

    async def delete_property_in_session(
        self, namespace: str, property_name: str, session_id: str | None = None
    ) -> Any:
        return await self._call("deletePropertyInSession", namespace, property_name, session_id)

    async def delete_session(self, namespace: str, session_id: str) -> Any:
        return await self._call("deleteSession", namespace, session_id)

    async def get_list_of_sessions(self, namespace: str) -> Any:
        raise NotAvailableError("Toolbelt.context_service_client().get_list_of_sessions()")


# ---------------------------------------------------------------- CSDS and LP helpers


class LpServices(StrEnum):
    MSG_HIST = "msgHist"
    AGENT_VEP = "agentVep"
    ACCOUNT_CONFIG_READ_ONLY = "accountConfigReadOnly"
    ACCOUNT_CONFIG_READ_WRITE = "accountConfigReadWrite"
    ASYNC_MESSAGING = "asyncMessaging"
    ASYNC_MESSAGING_EN = "asyncMessagingEnt"
    ENG_HIST_DOMAIN = "engHistDomain"
    RTBF = "rtbf"
    AUDITLOG = "auditlog"
    SMT = "smt"
    PUSHER = "pusher"
    LE_DATA_REPORTING = "leDataReporting"
    MSG_EWT_API = "msgEwtAPI"
    MSDKGW = "msdkgw"


class SDETypes(StrEnum):
    CART = "cart"
    TRANSACTION = "purchase"
    VIEWED_PRODUCT = "prodView"
    CUSTOMER_INFO = "ctmrinfo"
    MARKETING_SOURCE = "mrktInfo"
    PERSONAL_INFO = "personal"
    LEAD = "lead"
    SERVICE_ACTIVITY = "service"
    VISITOR_ERROR = "error"
    SEARCHED_CONTENT = "searchInfo"


class ConversationContentTypes(StrEnum):
    INFO = "info"
    SDES = "sdes"
    UNAUTH_SDES = "unAuthSdes"
    CAMPAIGN = "campaign"
    MESSAGE_RECORDS = "messageRecords"
    AGENT_PARTICIPANTS = "agentParticipants"
    AGENT_PARTICIPANTS_ACTIVE = "agentParticipantsActive"
    CONSUMER_PARTICIPANTS = "consumerParticipants"
    TRANSFERS = "transfers"
    INTERACTIONS = "interactions"
    MESSAGE_SCORES = "messageScores"
    MESSAGE_STATUSES = "messageStatuses"
    SKILL_CHANGES = "skillChanges"
    CONVERSATION_SURVEYS = "conversationSurveys"
    AGENT_PARTICIPANTS_LEAVE = "agentParticipantsLeave"
    COBROWSE_SESSIONS = "coBrowseSessions"
    SUMMARY = "summary"
    MONITORING = "monitoring"
    DIALOGS = "dialogs"
    RESPONSE_TIME = "responseTime"
    INTENTS = "intents"
    UNIQUE_INTENTS = "uniqueIntents"
    LATEST_AGENT_SURVEY = "latestAgentSurvey"
    PREVIOUSLY_SUBMITTED_AGENT_SURVEYS = "previouslySubmittedAgentSurveys"


class CsdsClient:
    async def get(self, service: str) -> str:
        """The domain of a LivePerson service for this account."""
        if not isinstance(service, str) or not service:
            raise _bad("csds_client().get needs a service name")
        value = await call_async("csds.resolve", [str(service)])
        domain = value.get("domain") if isinstance(value, Mapping) else value
        return str(domain) if domain is not None else ""

    async def get_all(self) -> Any:
        raise NotAvailableError("Toolbelt.csds_client().get_all()", "resolve services one by one with get(service)")


def _brand_id() -> str:
    return os.environ.get("BRAND_ID", "")


def _first_record(conversation: Any) -> Mapping[str, Any]:
    records = conversation.get("conversationHistoryRecords") if isinstance(conversation, Mapping) else None
    if not isinstance(records, list):
        raise TypeError("give a conversation as returned by conversation_util().get_conversation_by_id()")
    return records[0] if records else {}


class ConversationUtil:
    def __init__(self) -> None:
        self._lp = LpClient()

    async def get_conversation_by_id(
        self, conversation_id: str, content_to_retrieve: list[str] | None = None
    ) -> dict[str, Any]:
        """Messaging Interactions API (service msgHist) through :class:`LpClient`."""
        if not conversation_id:
            raise _bad("give a conversation id")
        body: dict[str, Any] = {"conversationId": conversation_id}
        if content_to_retrieve:
            body["contentToRetrieve"] = [str(c) for c in content_to_retrieve]
        path = f"/messaging_history/api/account/{_brand_id()}/conversations/conversation/search?v=2"
        conversation = await self._lp("POST", LpServices.MSG_HIST.value, path, body=body, json=True)
        if not isinstance(conversation, Mapping) or not conversation.get("conversationHistoryRecords"):
            raise ToolbeltError("conversation_not_found", f'Conversation "{conversation_id}" not found.')
        return dict(conversation)

    def scan_conversation_for_keywords(self, conversation: Any, keywords: list[str]) -> list[dict[str, Any]]:
        """Text and file-caption messages containing a keyword (case-insensitive)."""
        if not keywords:
            raise TypeError("give a list of keywords")
        messages = []
        for record in _first_record(conversation).get("messageRecords") or []:
            data = record.get("messageData") or {}
            if record.get("type") == "TEXT_PLAIN":
                text = (data.get("msg") or {}).get("text") or ""
            elif record.get("type") == "HOSTED_FILE":
                text = (data.get("file") or {}).get("caption") or ""
            else:
                continue
            messages.append({"message": text, "sentTimestamp": record.get("timeL"), "sentBy": record.get("sentBy")})
        return [
            {**m, "tag": f"keywordRef:{keyword}"}
            for keyword in keywords
            for m in messages
            if str(keyword).lower() in m["message"].lower()
        ]


def _sorted_events(sdes: Any) -> dict[str, list[Any]]:
    events = list(sdes.get("events") or []) if isinstance(sdes, Mapping) else []
    return {"events": sorted(events, key=lambda e: str(e.get("serverTimeStamp", "")))}


class SDEUtil:
    def __init__(self) -> None:
        self._lp = LpClient()

    def get_sdes_from_conv(self, conversation: Any) -> dict[str, Any]:
        """Authenticated and unauthenticated SDEs of a conversation, oldest first. Pure."""
        record = _first_record(conversation)
        return {"sdes": _sorted_events(record.get("sdes")), "unAuthSdes": _sorted_events(record.get("unAuthSdes"))}

    async def add_sdes(self, sdes: list[Mapping[str, Any]], visitor_id: str, session_id: str) -> None:
        """Engagement Attributes API (service smt) through :class:`LpClient`."""
        if not sdes:
            raise _bad("give one or more SDEs")
        path = (
            f"/api/account/{_brand_id()}/monitoring/visitors/{_enc(str(visitor_id))}"
            f"/visits/current/events?v=1&sid={_enc(str(session_id))}"
        )
        await self._lp("PUT", LpServices.SMT.value, path, body=list(sdes), json=True)


class GDPRUtil:
    def list_conversation_files(self, conversation: Any) -> list[str]:
        """The ``relativePath`` of every file shared in the conversation. Pure."""
        out = []
        for record in _first_record(conversation).get("messageRecords") or []:
            if record.get("type") == "HOSTED_FILE":
                path = ((record.get("messageData") or {}).get("file") or {}).get("relativePath")
                if isinstance(path, str) and path:
                    out.append(path)
        return out

    async def replace_conversation_files(self, *args: Any, **kwargs: Any) -> Any:
        raise NotAvailableError(
            "Toolbelt.gdpr_util().replace_conversation_files()",
            "it needs LivePerson's conversation file storage, which this platform does not have",
        )


class _UnavailableClient:
    """Every attribute is a method that raises :class:`NotAvailableError`."""

    def __init__(self, client: str) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise NotAvailableError(f"Toolbelt.{self._client}().{name}()")

        return unavailable

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotAvailableError(f"Toolbelt.{self._client}()")

    def __repr__(self) -> str:
        return f"<lp_faas_toolbelt {self._client} (not available)>"


# ---------------------------------------------------------------- Toolbelt


class Toolbelt:
    """Client factories, named after the Node toolbelt's in snake_case."""

    @staticmethod
    def http_client() -> HttpClient:
        return HttpClient()

    @staticmethod
    def mtls_client(
        name: str | None = None, *, certificate: str | None = None, cert: Any = None, **_: Any
    ) -> HttpClient:
        """``mtls_client(certificate="name")``; ``cert="name"`` and a positional name work too."""
        candidate = certificate if certificate is not None else (name if name is not None else cert)
        try:
            return MtlsClient(_certificate_name(candidate))
        except ToolbeltError as exc:
            if "PEM" in exc.message:
                raise
            return MtlsClient(None, exc)

    @staticmethod
    def lp_client() -> LpClient:
        return LpClient()

    @staticmethod
    def secret_client() -> SecretClient:
        return SecretClient()

    @staticmethod
    def context_service_client(*args: Any, **options: Any) -> ContextServiceClient:
        return ContextServiceClient()

    @staticmethod
    def csds_client(**options: Any) -> CsdsClient:
        return CsdsClient()

    @staticmethod
    def conversation_util(*args: Any, **options: Any) -> ConversationUtil:
        return ConversationUtil()

    @staticmethod
    def sde_util(**options: Any) -> SDEUtil:
        return SDEUtil()

    @staticmethod
    def gdpr_util(**options: Any) -> GDPRUtil:
        return GDPRUtil()

    @staticmethod
    def sf_client(**options: Any) -> Any:
        return _UnavailableClient("sf_client")

    @staticmethod
    def orchestrator_client(**options: Any) -> Any:
        return _UnavailableClient("orchestrator_client")
