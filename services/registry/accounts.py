"""Accounts, users, credentials, provisioning, secrets and the domain allowlist."""

from __future__ import annotations

import secrets as pysecrets
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from fnbus import identity as ident
from fnbus.api_models import AccountOut, CredentialOut, DomainOut, SecretOut, UserOut
from fnbus.errors import Conflict, NotFound, Unauthorized, Unprocessable
from fnbus.permissions import Role, parse_roles
from services.registry.crypto import OBFUSCATED, SecretBox
from services.registry.validation import normalise_domain

DEFAULT_SECRETS = ("lp-faas-default-app-key", "lp-faas-orchestrator-app-key")


def ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def _user(row: asyncpg.Record) -> UserOut:
    return UserOut(id=str(row["id"]), account_id=row["account_id"], name=row["name"],
                   roles=list(row["roles"]), created_ms=ms(row["created_at"]) or 0)


def _credential(row: asyncpg.Record, secret: str | None = None) -> CredentialOut:
    return CredentialOut(id=str(row["id"]), user_id=str(row["user_id"]), kind=row["kind"],
                         prefix=row["prefix"], created_ms=ms(row["created_at"]) or 0,
                         revoked_ms=ms(row["revoked_at"]), secret=secret)


def _roles(values: list[str]) -> list[str]:
    try:
        return sorted(r.value for r in parse_roles(values))
    except ValueError as exc:
        raise Unprocessable(str(exc), code="invalid_role") from None


class Accounts:
    def __init__(self, pool: asyncpg.Pool, box: SecretBox, platform_domain: str) -> None:
        self.pool = pool
        self.box = box
        self.platform_domain = platform_domain

    # -- accounts -----------------------------------------------------------------
    async def create_account(self, account_id: str, name: str, admin_name: str,
                             roles: list[str] | None = None) -> dict[str, Any]:
        """Operator action: the account, its first admin, and an API key (shown once)."""
        roles = _roles(roles or [r.value for r in Role])
        key = ident.new_api_key()
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute("INSERT INTO accounts (id, name) VALUES ($1, $2)", account_id, name)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"account {account_id} exists", code="account_exists") from None
            user_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO users (id, account_id, name, roles) VALUES ($1, $2, $3, $4)",
                user_id, account_id, admin_name, roles,
            )
            key_row = await conn.fetchrow(
                """INSERT INTO api_keys (id, account_id, user_id, kind, key_hash, prefix)
                   VALUES ($1, $2, $3, 'api_key', $4, $5) RETURNING *""",
                uuid.uuid4(), account_id, user_id, ident.hash_secret(key), key[:10],
            )
        return {"account_id": account_id, "user_id": str(user_id), "user_name": admin_name,
                "roles": roles, "api_key": key, "api_key_id": str(key_row["id"])}

    async def get_account(self, account_id: str) -> AccountOut:
        row = await self.pool.fetchrow("SELECT * FROM accounts WHERE id = $1", account_id)
        if row is None:
            raise NotFound(f"account {account_id} not found", code="account_not_found")
        return AccountOut(id=row["id"], name=row["name"],
                          provisioned=row["terms_accepted_at"] is not None,
                          terms_accepted_ms=ms(row["terms_accepted_at"]))

    async def accept_terms(self, account_id: str) -> AccountOut:
        """Provision: activate, install default secrets, allowlist the platform's domain.

        Idempotent: accepting again changes nothing.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT terms_accepted_at FROM accounts WHERE id = $1 FOR UPDATE", account_id)
            if row is None:
                raise NotFound(f"account {account_id} not found", code="account_not_found")
            if row["terms_accepted_at"] is None:
                for key in DEFAULT_SECRETS:
                    await conn.execute(
                        """INSERT INTO secrets (account_id, key, value_enc, is_default)
                           VALUES ($1, $2, $3, true) ON CONFLICT DO NOTHING""",
                        account_id, key, self.box.seal(pysecrets.token_urlsafe(24)),
                    )
                await conn.execute(
                    "INSERT INTO domains (account_id, domain) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    account_id, self.platform_domain,
                )
                await conn.execute(
                    "UPDATE accounts SET terms_accepted_at = now() WHERE id = $1", account_id)
        return await self.get_account(account_id)

    # -- users and credentials ----------------------------------------------------------
    async def list_users(self, account_id: str) -> list[UserOut]:
        rows = await self.pool.fetch(
            "SELECT * FROM users WHERE account_id = $1 ORDER BY created_at", account_id)
        return [_user(r) for r in rows]

    async def get_user(self, account_id: str, user_id: str) -> UserOut:
        return _user(await self._user_row(account_id, user_id))

    async def _user_row(self, account_id: str, user_id: str) -> asyncpg.Record:
        try:
            uid = uuid.UUID(user_id)
        except ValueError:
            raise NotFound(f"user {user_id} not found", code="user_not_found") from None
        row = await self.pool.fetchrow(
            "SELECT * FROM users WHERE id = $1 AND account_id = $2", uid, account_id)
        if row is None:
            raise NotFound(f"user {user_id} not found", code="user_not_found")
        return row

    async def create_user(self, account_id: str, name: str, roles: list[str]) -> UserOut:
        try:
            row = await self.pool.fetchrow(
                "INSERT INTO users (id, account_id, name, roles) VALUES ($1,$2,$3,$4) RETURNING *",
                uuid.uuid4(), account_id, name, _roles(roles),
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a user named {name!r} exists", code="user_exists") from None
        return _user(row)

    async def update_user(self, account_id: str, user_id: str, roles: list[str]) -> UserOut:
        await self._user_row(account_id, user_id)
        row = await self.pool.fetchrow(
            "UPDATE users SET roles = $3 WHERE id = $1 AND account_id = $2 RETURNING *",
            uuid.UUID(user_id), account_id, _roles(roles),
        )
        return _user(row)

    async def delete_user(self, account_id: str, user_id: str) -> None:
        await self._user_row(account_id, user_id)
        await self.pool.execute("DELETE FROM users WHERE id = $1", uuid.UUID(user_id))

    async def create_credential(self, account_id: str, user_id: str, kind: str) -> CredentialOut:
        user = await self._user_row(account_id, user_id)
        if kind == "api_key":
            secret = ident.new_api_key()
            prefix = secret[:10]
        else:
            prefix, secret = ident.new_client_credentials()
        row = await self.pool.fetchrow(
            """INSERT INTO api_keys (id, account_id, user_id, kind, key_hash, prefix)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
            uuid.uuid4(), account_id, user["id"], kind, ident.hash_secret(secret), prefix,
        )
        return _credential(row, secret)

    async def list_credentials(self, account_id: str, user_id: str) -> list[CredentialOut]:
        user = await self._user_row(account_id, user_id)
        rows = await self.pool.fetch(
            "SELECT * FROM api_keys WHERE user_id = $1 ORDER BY created_at", user["id"])
        return [_credential(r) for r in rows]

    async def revoke_credential(self, account_id: str, key_id: str) -> CredentialOut:
        try:
            kid = uuid.UUID(key_id)
        except ValueError:
            raise NotFound(f"credential {key_id} not found", code="credential_not_found") from None
        row = await self.pool.fetchrow(
            """UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
               WHERE id = $1 AND account_id = $2 RETURNING *""", kid, account_id)
        if row is None:
            raise NotFound(f"credential {key_id} not found", code="credential_not_found")
        return _credential(row)

    async def _identity(self, row: asyncpg.Record) -> ident.Identity:
        return ident.Identity(
            account_id=row["account_id"], user_id=str(row["user_id"]),
            roles=parse_roles(list(row["roles"])), user_name=row["name"],
            key_id=str(row["id"]), provisioned=row["terms_accepted_at"] is not None,
        )

    _CRED_SQL = """SELECT k.id, k.account_id, k.user_id, k.key_hash, k.revoked_at,
                          u.roles, u.name, a.terms_accepted_at
                   FROM api_keys k JOIN users u ON u.id = k.user_id
                   JOIN accounts a ON a.id = k.account_id"""

    async def resolve_api_key(self, key: str) -> ident.Identity:
        row = await self.pool.fetchrow(
            self._CRED_SQL + " WHERE k.key_hash = $1 AND k.kind = 'api_key'", ident.hash_secret(key))
        if row is None or row["revoked_at"] is not None:
            raise Unauthorized("invalid or revoked API key", code="invalid_credentials")
        return await self._identity(row)

    async def resolve_client(self, client_id: str, client_secret: str) -> ident.Identity:
        row = await self.pool.fetchrow(
            self._CRED_SQL + " WHERE k.prefix = $1 AND k.kind = 'oauth_client'", client_id)
        if (row is None or row["revoked_at"] is not None
                or not ident.constant_time_equal(row["key_hash"], ident.hash_secret(client_secret))):
            raise Unauthorized("invalid client credentials", code="invalid_client")
        return await self._identity(row)

    async def resolve_credential(self, key_id: str) -> ident.Identity:
        """Revocation check of a JWT: its client must still exist, unrevoked, with its user."""
        try:
            kid = uuid.UUID(key_id)
        except ValueError:
            raise Unauthorized("credential revoked or unknown", code="credential_revoked") from None
        row = await self.pool.fetchrow(self._CRED_SQL + " WHERE k.id = $1", kid)
        if row is None or row["revoked_at"] is not None:
            raise Unauthorized("credential revoked or unknown", code="credential_revoked")
        return await self._identity(row)

    # -- secrets --------------------------------------------------------------------
    def _secret(self, row: asyncpg.Record) -> SecretOut:
        return SecretOut(key=row["key"], value=OBFUSCATED,
                         is_default=row["is_default"], updated_ms=ms(row["updated_at"]) or 0)

    async def list_secrets(self, account_id: str, include_default: bool) -> list[SecretOut]:
        rows = await self.pool.fetch(
            "SELECT * FROM secrets WHERE account_id = $1 AND (is_default = false OR $2) ORDER BY key",
            account_id, include_default)
        return [self._secret(r) for r in rows]

    async def get_secret(self, account_id: str, key: str) -> SecretOut:
        row = await self.pool.fetchrow(
            "SELECT * FROM secrets WHERE account_id = $1 AND key = $2", account_id, key)
        if row is None:
            raise NotFound(f"secret {key} not found", code="secret_not_found")
        return self._secret(row)

    async def read_secret_value(self, account_id: str, key: str) -> str:
        """Clear text, for the toolbelt inside a lambda only (never for the API)."""
        row = await self.pool.fetchrow(
            "SELECT value_enc FROM secrets WHERE account_id = $1 AND key = $2", account_id, key)
        if row is None:
            raise NotFound(f"secret {key} not found", code="secret_not_found")
        return self.box.open(row["value_enc"])

    async def create_secret(self, account_id: str, key: str, value: str) -> SecretOut:
        try:
            row = await self.pool.fetchrow(
                """INSERT INTO secrets (account_id, key, value_enc) VALUES ($1, $2, $3)
                   RETURNING *""", account_id, key, self.box.seal(value))
        except asyncpg.UniqueViolationError:
            raise Conflict(f"secret {key} exists; update it instead", code="secret_exists") from None
        return self._secret(row)

    async def update_secret(self, account_id: str, key: str, value: str) -> SecretOut:
        row = await self.pool.fetchrow(
            """UPDATE secrets SET value_enc = $3, updated_at = now()
               WHERE account_id = $1 AND key = $2 RETURNING *""",
            account_id, key, self.box.seal(value))
        if row is None:
            raise NotFound(f"secret {key} not found", code="secret_not_found")
        return self._secret(row)

    async def delete_secret(self, account_id: str, key: str) -> None:
        done = await self.pool.execute(
            "DELETE FROM secrets WHERE account_id = $1 AND key = $2", account_id, key)
        if done.endswith(" 0"):
            raise NotFound(f"secret {key} not found", code="secret_not_found")

    # -- domains ---------------------------------------------------------------------
    async def list_domains(self, account_id: str) -> list[DomainOut]:
        rows = await self.pool.fetch(
            "SELECT * FROM domains WHERE account_id = $1 ORDER BY domain", account_id)
        return [DomainOut(domain=r["domain"], created_ms=ms(r["created_at"]) or 0) for r in rows]

    async def add_domain(self, account_id: str, domain: str) -> DomainOut:
        value = normalise_domain(domain)
        try:
            row = await self.pool.fetchrow(
                "INSERT INTO domains (account_id, domain) VALUES ($1, $2) RETURNING *",
                account_id, value)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"{value} is already allowlisted", code="domain_exists") from None
        return DomainOut(domain=row["domain"], created_ms=ms(row["created_at"]) or 0)

    async def delete_domain(self, account_id: str, domain: str) -> None:
        done = await self.pool.execute(
            "DELETE FROM domains WHERE account_id = $1 AND domain = $2", account_id,
            domain.strip().lower())
        if done.endswith(" 0"):
            raise NotFound(f"{domain} is not allowlisted", code="domain_not_found")


def platform_domain(public_url: str) -> str:
    return urlsplit(public_url).hostname or "localhost"
