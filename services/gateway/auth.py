"""Authentication and the permission check, applied to every public endpoint.

Contract:
1. ``Authorization: Bearer <token>``: a JWT (three dot-separated parts) is
   verified locally (key id, signature, issuer, audience, expiry, scope:
   :func:`fnbus.identity.verify_jwt`), then its OAuth client is looked up by id
   in the registry, so that revoking the client or deleting its user ends its
   tokens; the identity (roles, provisioning) is the client's current one, the
   token's scope still narrows it. Anything else is an API key resolved by the
   registry. Both look-ups are cached for ``KEY_CACHE_TTL_S`` per credential,
   revoked ones too: at most one registry call per credential and TTL, whatever
   the request rate. A revocation through this gateway evicts at once; other
   gateways see it within the TTL.
2. The identity must belong to the account in the path (403 otherwise).
3. Before the terms of use are accepted, only the account and terms endpoints
   answer; everything else is 403 ``account_not_provisioned``.
4. The route's permission must be granted by one of the identity's roles
   (:data:`fnbus.permissions.MATRIX`), and a JWT's scope must cover it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Annotated, Any

from fastapi import Header, Request
from prometheus_client import Counter

from fnbus import identity as ident
from fnbus.errors import Forbidden, Unauthorized
from fnbus.permissions import INVOKE_SCOPE, Permission, allowed, parse_roles
from services.gateway.internal_client import InternalClient

KEY_CACHE_TTL_S = 2.0
KEY_CACHE_MAX = 10_000
# What each OAuth scope lets a JWT do, whatever the user's roles would allow.
SCOPE_PERMISSIONS = {INVOKE_SCOPE: {Permission.LAMBDA_INVOKE, Permission.LAMBDA_READ}}

CREDENTIAL_LOOKUPS = Counter(
    "fnbus_gateway_credential_lookups_total",
    "Registry look-ups of credentials by the gateway (auth cache misses)", ["kind"])


class _TtlCache:
    """Credential → identity (None: revoked) for a few seconds, one look-up in flight per key."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entries: dict[str, tuple[float, ident.Identity | None]] = {}
        self._inflight: dict[str, asyncio.Future[ident.Identity | None]] = {}

    async def get(self, key: str, lookup: Callable[[], Awaitable[ident.Identity | None]]
                  ) -> ident.Identity | None:
        now = time.monotonic()
        hit = self.entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ident.Identity | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            CREDENTIAL_LOOKUPS.labels(self.kind).inc()
            value = await lookup()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: waiters re-raise it, nobody must log it
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(value)
        if len(self.entries) >= KEY_CACHE_MAX:
            self.entries.clear()
        self.entries[key] = (time.monotonic() + KEY_CACHE_TTL_S, value)
        return value

    def evict(self, keep: Callable[[str, ident.Identity | None], bool]) -> None:
        for key, (_, identity) in list(self.entries.items()):
            if not keep(key, identity):
                del self.entries[key]


class Authenticator:
    def __init__(self, registry: InternalClient, jwt_keys: str | Mapping[str, str]) -> None:
        self.registry = registry
        # {kid: secret}; a rotation adds the new key here before tokens are signed with it.
        self.jwt_keys = ident.keyring(jwt_keys) if isinstance(jwt_keys, str) else dict(jwt_keys)
        self._api_keys = _TtlCache("api_key")
        self._clients = _TtlCache("oauth_client")

    async def identify(self, token: str) -> ident.Identity:
        if token.count(".") == 2:
            return await self._identify_jwt(token)
        identity = await self._api_keys.get(token, lambda: self._resolve_api_key(token))
        if identity is None:
            raise Unauthorized("invalid or revoked API key", code="invalid_credentials")
        return identity

    async def _identify_jwt(self, token: str) -> ident.Identity:
        try:
            claimed = ident.verify_jwt(token, self.jwt_keys)
        except ident.InvalidToken as exc:
            raise Unauthorized(str(exc), code="invalid_token") from None
        cid = claimed.key_id or ""
        live = await self._clients.get(cid, lambda: self._resolve_client(cid))
        if live is None or live.account_id != claimed.account_id:
            raise Unauthorized("token revoked: its OAuth client was revoked or its user deleted",
                               code="token_revoked")
        return replace(live, scopes=claimed.scopes)

    async def _resolve_api_key(self, token: str) -> ident.Identity | None:
        try:
            body = await self.registry.call("POST", "/internal/auth/api-key", json={"key": token})
        except Unauthorized:
            return None
        return _identity(body)

    async def _resolve_client(self, cid: str) -> ident.Identity | None:
        try:
            body = await self.registry.call("POST", "/internal/auth/credential",
                                            json={"key_id": cid})
        except Unauthorized:
            return None
        return _identity(body)

    def evict_key(self, key_id: str) -> None:
        self._api_keys.evict(lambda _, i: i is None or i.key_id != key_id)
        self._clients.evict(lambda cid, _: cid != key_id)

    def evict_account(self, account_id: str) -> None:
        self._api_keys.evict(lambda _, i: i is None or i.account_id != account_id)
        self._clients.evict(lambda _, i: i is None or i.account_id != account_id)


def _identity(body: dict[str, Any]) -> ident.Identity:
    return ident.Identity(
        account_id=body["account_id"], user_id=body["user_id"], user_name=body["user_name"],
        roles=parse_roles(body["roles"]), key_id=body.get("key_id"),
        provisioned=body["provisioned"],
    )


def bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <key or token>'",
                           code="missing_credentials")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <key or token>'", code="missing_credentials")
    return token.strip()


def check(identity: ident.Identity, account_id: str | None, permission: Permission,
          before_provisioning: bool = False) -> None:
    """Steps 2–4 of the contract; pure, so every cell of the matrix is testable."""
    if account_id is not None and identity.account_id != account_id:
        raise Forbidden("these credentials belong to another account", code="wrong_account")
    if not identity.provisioned and not before_provisioning:
        raise Forbidden(
            "LivePerson Functions is not activated for this account yet: a FaaS-Admin must "
            f"accept the terms of use (POST /api/v1/accounts/{identity.account_id}/terms-of-use "
            'with {"accept": true})',
            code="account_not_provisioned",
        )
    if not allowed(identity.roles, permission):
        raise Forbidden(f"permission {permission.value} required", code="permission_denied")
    if identity.scopes:
        granted = set().union(*(SCOPE_PERMISSIONS.get(s, set()) for s in identity.scopes))
        if permission not in granted:
            raise Forbidden(f"token scope does not cover {permission.value}",
                            code="insufficient_scope")


def require(permission: Permission, *, before_provisioning: bool = False) -> Callable[..., Any]:
    async def dependency(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> ident.Identity:
        auth: Authenticator = request.app.state.auth
        identity = await auth.identify(bearer(authorization))
        account_id = request.path_params.get("account_id") or request.path_params.get("accountId")
        check(identity, account_id, permission, before_provisioning)
        return identity

    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency

