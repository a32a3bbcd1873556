"""A fake CSDS and a fake LivePerson service, on 127.0.0.1, for LpClient tests.

The real ones are unreachable here. Both are small FastAPI apps served in the
test's event loop:

- :class:`FakeCsds` answers ``GET /api/account/{account}/service/baseURI.json``
  with ``{baseURIs: [{service, account, baseURI}]}`` for the accounts it was
  given (404 otherwise) and counts its requests.
- :class:`FakeLpService` records every request and checks its OAuth 1.0
  signature against the app key it was given: a bad or missing one is 401, as a
  LivePerson API answers. Routes: ``/redirect`` (302 elsewhere),
  ``…/conversations/conversation/search`` (Messaging History: one record with the
  asked ``conversationId``), anything else 200 JSON ``{method, path, query, body,
  consumer_key, signed}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from services.invoker.oauth1 import Credentials, hmac_sha1, signature_base_string
from tests.support import free_port, serve_in_loop


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


def _oauth_fields(header: str) -> dict[str, str]:
    pairs = (item.strip().split("=", 1) for item in header.removeprefix("OAuth ").split(","))
    return {k: unquote(v.strip('"')) for k, v in pairs}


def verify_oauth1(credentials: Credentials, method: str, url: str, header: str,
                  form_body: str | None = None) -> bool:
    """Recompute the request's HMAC-SHA1 signature as a server does (RFC 5849 3.2)."""
    if not header.startswith("OAuth "):
        return False
    fields = _oauth_fields(header)
    if fields.get("oauth_consumer_key") != credentials.consumer_key:
        return False
    params = [(k, v) for k, v in fields.items() if k not in ("realm", "oauth_signature")]
    if form_body:
        params += parse_qsl(form_body, keep_blank_values=True)
    base = signature_base_string(method, url, params)
    expected = hmac_sha1(base, credentials.consumer_secret, credentials.token_secret)
    return fields.get("oauth_signature") == expected


@dataclass
class FakeLpService:
    credentials: Credentials
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        async def any_path(path: str, request: Request) -> Response:
            body = await request.body()
            self.seen.append(Seen(request.method, "/" + path, request.url.query,
                                  dict(request.headers), body))
            if path == "redirect":
                return Response(status_code=302, headers={"location": "http://example.org/"})
            form = (body.decode() if request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded") else None)
            header = request.headers.get("authorization", "")
            signed = verify_oauth1(self.credentials, request.method, str(request.url), header, form)
            if header.startswith("OAuth ") and not signed:
                return JSONResponse({"error": "invalid signature"}, status_code=401)
            if path.endswith("/conversations/conversation/search"):
                # Messaging History, as ConversationUtil.getConversationById reads it.
                wanted = (await request.json()).get("conversationId")
                return JSONResponse({"conversationHistoryRecords": [
                    {"info": {"conversationId": wanted}, "messageRecords": [],
                     "signed": signed}]})
            return JSONResponse({
                "method": request.method, "path": "/" + path, "query": request.url.query,
                "body": body.decode("utf-8", "replace"), "signed": signed,
                "consumer_key": _oauth_fields(header).get("oauth_consumer_key") if signed else None,
                "authorization": None if signed else header,
            })

        return app


@dataclass
class FakeCsds:
    services: dict[str, dict[str, str]]  # account → service → baseURI
    hits: int = 0
    url: str = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/api/account/{account}/service/baseURI.json")
        async def base_uris(account: str, version: str = "") -> Any:
            self.hits += 1
            if account not in self.services or version != "1.0":
                return JSONResponse({"error": "unknown account"}, status_code=404)
            return {"baseURIs": [{"service": s, "account": account, "baseURI": uri}
                                 for s, uri in self.services[account].items()]}

        return app


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 and a free port; yield its base URL."""
    async with serve_in_loop(app, free_port()) as url:
        yield url
