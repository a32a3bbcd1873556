"""Who is calling: credentials, the identity the gateway hands to internal services.

API keys and OAuth client secrets are 256-bit random strings; the database keeps
only their SHA-256. The gateway signs short-lived JWTs (HS256) for OAuth clients.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

import jwt

from fnbus.permissions import Role, parse_roles

API_KEY_PREFIX = "fnb_"
CLIENT_ID_PREFIX = "fnbc_"
JWT_ISSUER = "fnbus"
JWT_ALGORITHM = "HS256"

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


def issue_jwt(identity: Identity, secret: str, ttl_s: int, scope: str) -> tuple[str, int]:
    now = int(time.time())
    claims = {
        "iss": JWT_ISSUER,
        "sub": identity.user_id,
        "acc": identity.account_id,
        "roles": sorted(r.value for r in identity.roles),
        "scope": scope,
        "cid": identity.key_id,
        "iat": now,
        "exp": now + ttl_s,
    }
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM), ttl_s


class InvalidToken(Exception):
    pass


def verify_jwt(token: str, secret: str) -> Identity:
    """Check signature, expiry and issuer; raise InvalidToken with the reason."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[JWT_ALGORITHM], issuer=JWT_ISSUER,
            options={"require": ["exp", "iat", "sub", "acc"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"invalid token: {exc}") from None
    try:
        roles = parse_roles(claims.get("roles", []))
    except ValueError as exc:
        raise InvalidToken(str(exc)) from None
    return Identity(
        account_id=str(claims["acc"]), user_id=str(claims["sub"]), roles=roles,
        key_id=claims.get("cid"), scopes=frozenset(str(claims.get("scope", "")).split()),
    )
