"""Authentication and the permission check, applied to every public endpoint.

Contract:
1. ``Authorization: Bearer <token>``: a JWT (three dot-separated parts) is
   verified locally; anything else is an API key resolved by the registry and
   cached for ``KEY_CACHE_TTL_S`` (a revocation through this gateway evicts at
   once; other gateways see it within the TTL).
2. The identity must belong to the account in the path (403 otherwise).
3. Before the terms of use are accepted, only the account and terms endpoints
   answer; everything else is 403 ``account_not_provisioned``.
4. The route's permission must be granted by one of the identity's roles
   (:data:`fnbus.permissions.MATRIX`), and a JWT's scope must cover it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header, Request

from fnbus import identity as ident
from fnbus.errors import Forbidden, Unauthorized
from fnbus.permissions import INVOKE_SCOPE, Permission, allowed, parse_roles
from services.gateway.internal_client import InternalClient

KEY_CACHE_TTL_S = 2.0
KEY_CACHE_MAX = 10_000
# What each OAuth scope lets a JWT do, whatever the user's roles would allow.
SCOPE_PERMISSIONS = {INVOKE_SCOPE: {Permission.LAMBDA_INVOKE, Permission.LAMBDA_READ}}


class Authenticator:
    def __init__(self, registry: InternalClient, jwt_secret: str) -> None:
        self.registry = registry
        self.jwt_secret = jwt_secret
        self._cache: dict[str, tuple[float, ident.Identity]] = {}

    async def identify(self, token: str) -> ident.Identity:
        if token.count(".") == 2:
            try:
                return ident.verify_jwt(token, self.jwt_secret)
            except ident.InvalidToken as exc:
                raise Unauthorized(str(exc), code="invalid_token") from None
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        body = await self.registry.call("POST", "/internal/auth/api-key", json={"key": token})
        identity = _identity(body)
        if len(self._cache) >= KEY_CACHE_MAX:
            self._cache.clear()
        self._cache[token] = (now + KEY_CACHE_TTL_S, identity)
        return identity

    def evict_key(self, key_id: str) -> None:
        for token, (_, identity) in list(self._cache.items()):
            if identity.key_id == key_id:
                del self._cache[token]

    def evict_account(self, account_id: str) -> None:
        for token, (_, identity) in list(self._cache.items()):
            if identity.account_id == account_id:
                del self._cache[token]


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

