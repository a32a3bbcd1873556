"""OAuth2 client credentials → short-lived JWTs for external systems' invocation users.

Served at ``POST /oauth/token`` and at the original platform's path
``POST /sentinel/api/account/{accountId}/app/token?v=2.0`` so that its clients
work by changing only the host. Credentials come in the form body
(``client_id``, ``client_secret``) or as HTTP Basic auth.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from pydantic import BaseModel

from fnbus import identity as ident
from fnbus.errors import BadRequest, Forbidden, Unauthorized
from fnbus.permissions import INVOKE_SCOPE
from services.gateway.auth import _identity
from services.gateway.routes import ERRORS

router = APIRouter()


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    scope: str


async def _form(request: Request) -> dict[str, str]:
    raw = await request.body()
    ctype = request.headers.get("content-type", "")
    if "json" in ctype:
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise BadRequest("request body is not valid JSON", code="malformed_json") from None
        if not isinstance(data, dict):
            raise BadRequest("expected a JSON object", code="invalid_request")
        return {str(k): str(v) for k, v in data.items()}
    try:
        parsed = parse_qs(raw.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadRequest("form body is not UTF-8", code="invalid_request") from None
    return {k: v[0] for k, v in parsed.items()}


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed Basic credentials", code="invalid_client") from None
    return user, password


async def _issue(request: Request, account_id: str | None) -> dict[str, Any]:
    form = await _form(request)
    if form.get("grant_type", "client_credentials") != "client_credentials":
        raise BadRequest("only grant_type=client_credentials is supported",
                         code="unsupported_grant_type")
    scope = form.get("scope") or INVOKE_SCOPE
    if scope != INVOKE_SCOPE:
        raise BadRequest(f"scope must be {INVOKE_SCOPE}", code="invalid_scope")
    creds = _basic(request) or (form.get("client_id", ""), form.get("client_secret", ""))
    if not creds[0] or not creds[1]:
        raise Unauthorized("client_id and client_secret are required", code="invalid_client")
    body = await request.app.state.registry.call(
        "POST", "/internal/auth/client", json={"client_id": creds[0], "client_secret": creds[1]})
    identity = _identity(body)
    if account_id is not None and identity.account_id != account_id:
        raise Unauthorized("invalid client credentials", code="invalid_client")
    if not identity.provisioned:
        raise Forbidden("the account has not accepted the terms of use yet",
                        code="account_not_provisioned")
    settings = request.app.state.settings
    token, ttl = ident.issue_jwt(identity, settings.jwt_secret, settings.jwt_ttl_s, scope)
    return TokenOut(access_token=token, expires_in=ttl, scope=scope).model_dump()


@router.post("/oauth/token", response_model=TokenOut, tags=["auth"], responses=ERRORS,
             openapi_extra={"x-permission": "client credentials"},
             summary="OAuth2 client credentials grant (form: client_id, client_secret, scope)")
async def token(request: Request) -> dict[str, Any]:
    return await _issue(request, None)


@router.post("/sentinel/api/account/{accountId}/app/token", response_model=TokenOut, responses=ERRORS,
             tags=["auth", "compatibility"], openapi_extra={"x-permission": "client credentials"},
             summary="The original platform's token path (query v=2.0)")
async def sentinel_token(accountId: str, request: Request) -> dict[str, Any]:  # noqa: N803
    return await _issue(request, accountId)
