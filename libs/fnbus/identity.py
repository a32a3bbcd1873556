"""Who is calling: credentials, the identity the gateway hands to internal services.

API keys and OAuth client secrets are 256-bit random strings; the database keeps
only their SHA-256. The gateway signs short-lived JWTs (HS256) for OAuth clients.

A JWT is accepted only when all of these hold:
1. its header names a key id (``kid``) of the gateway's keyring and the signature
   verifies with that key (so a new secret can be added before the old one goes);
2. ``iss`` and ``aud`` are ``fnbus``; ``exp``, ``iat``, ``sub`` and ``acc`` are present;
3. ``scope`` names only scopes the platform knows (at least one);
4. ``cid`` names the OAuth client it was issued to, which the gateway checks is
   still live (not revoked, its user not deleted) before it trusts the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import jwt

from fnbus.permissions import INVOKE_SCOPE, Role, parse_roles

API_KEY_PREFIX = "fnb_"
CLIENT_ID_PREFIX = "fnbc_"
JWT_ISSUER = "fnbus"
JWT_AUDIENCE = "fnbus"
JWT_ALGORITHM = "HS256"
KNOWN_SCOPES = frozenset({INVOKE_SCOPE})

# Headers on gateway → internal-service calls.
H_ACCOUNT = "X-Fnbus-Account"
H_USER = "X-Fnbus-User"
H_ROLES = "X-Fnbus-Roles"


@dataclass(frozen=True)
class Identity:
    account_id: str
    user_id: str
    roles: frozenset[Role]
    user_name: str = ""
    key_id: str | None = None  # the API key / OAuth client used, when known
    provisioned: bool = True
    scopes: frozenset[str] = field(default_factory=frozenset)

    def headers(self) -> dict[str, str]:
        return {
            H_ACCOUNT: self.account_id,
            H_USER: self.user_id,
            H_ROLES: ",".join(sorted(r.value for r in self.roles)),
        }


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_client_credentials() -> tuple[str, str]:
    return CLIENT_ID_PREFIX + secrets.token_hex(8), secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def key_id(secret: str) -> str:
    """A stable, non-secret name for a signing key: the JWT header's ``kid``."""
    return hashlib.sha256(b"fnbus-jwt-kid:" + secret.encode()).hexdigest()[:16]


def keyring(*secrets_: str) -> dict[str, str]:
    """``{kid: secret}`` of the keys a verifier accepts; the first one signs."""
    return {key_id(s): s for s in secrets_ if s}


def issue_jwt(identity: Identity, secret: str, ttl_s: int, scope: str) -> tuple[str, int]:
    if identity.key_id is None:
        raise ValueError("a JWT names the credential it was issued to")
    now = int(time.time())
    claims = {
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": identity.user_id,
        "acc": identity.account_id,
        "roles": sorted(r.value for r in identity.roles),
        "scope": scope,
        "cid": identity.key_id,
        "iat": now,
        "exp": now + ttl_s,
    }
    token = jwt.encode(claims, secret, algorithm=JWT_ALGORITHM, headers={"kid": key_id(secret)})
    return token, ttl_s


class InvalidToken(Exception):
    pass


def verify_jwt(token: str, keys: Mapping[str, str] | str) -> Identity:
    """Check points 1–3 of the contract; raise InvalidToken with the reason.

    ``keys`` is a keyring (``{kid: secret}``) or one secret. Point 4 (the client is
    still live) needs the registry and is the gateway's.
    """
    ring = keyring(keys) if isinstance(keys, str) else keys
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"invalid token: {exc}") from None
    kid = header.get("kid")
    secret = ring.get(kid) if isinstance(kid, str) else None
    if secret is None:
        raise InvalidToken("invalid token: unknown or missing key id (kid)")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[JWT_ALGORITHM], issuer=JWT_ISSUER, audience=JWT_AUDIENCE,
            options={"require": ["exp", "iat", "sub", "acc", "aud", "scope", "cid"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"invalid token: {exc}") from None
    scopes = frozenset(str(claims.get("scope") or "").split())
    if not scopes or not scopes <= KNOWN_SCOPES:
        raise InvalidToken(f"invalid token: scope must be {' '.join(sorted(KNOWN_SCOPES))}")
    if not isinstance(claims.get("cid"), str) or not claims["cid"]:
        raise InvalidToken("invalid token: no client id (cid)")
    try:
        roles = parse_roles(claims.get("roles", []))
    except ValueError as exc:
        raise InvalidToken(str(exc)) from None
    return Identity(
        account_id=str(claims["acc"]), user_id=str(claims["sub"]), roles=roles,
        key_id=str(claims["cid"]), scopes=scopes,
    )
