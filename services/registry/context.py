"""The Conversation Context store in PostgreSQL, and its internal routes.

One store serves two kinds of callers through the same routes under
``/internal/accounts/{account_id}/context``: the gateway (the public API, with
the caller's identity headers) and the invoker (a lambda's ``context.*``
toolbelt calls, with the service token only; the account is the invocation's
own). Rules and limits are in :mod:`fnbus.context_models`.

Contract:
1. Every property operation needs its namespace: an unknown one is 404
   ``namespace_not_found``.
2. Creating a namespace that exists answers 200 with it (201 when created) and,
   when a TTL is given, sets that TTL as its new default.
3. Setting and updating both merge: the properties named are written, the
   others stay (as on the original, where both are one upsert).
4. Expired properties are absent for every read; :func:`purge_loop` deletes
   them in the background, through the partial index on ``expires_at``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query, Request, Response

from fnbus.context_models import (
    MAX_NAMESPACES_PER_ACCOUNT,
    NamespaceCreate,
    NamespaceOut,
    NamespacePath,
    PropertiesWrite,
    PropertyOut,
    PropertyPath,
    SessionPath,
    value_json,
)
from fnbus.errors import Conflict, NotFound
from fnbus.internal_api import Who, require_service
from fnbus.service import every
from services.registry.accounts import ms

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 60.0
PURGE_BATCH = 10_000


def _namespace(row: asyncpg.Record) -> NamespaceOut:
    return NamespaceOut(name=row["name"], ttl_s=row["ttl_s"], created_ms=ms(row["created_at"]) or 0)


def _no_namespace(name: str) -> NotFound:
    return NotFound(f"context namespace {name} not found; create it first",
                    code="namespace_not_found")


_LIVE = "(expires_at IS NULL OR expires_at > now())"


class ContextStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- namespaces ---------------------------------------------------------------
    async def create_namespace(self, account_id: str, name: str,
                               ttl_s: int | None) -> tuple[NamespaceOut, bool]:
        """The namespace and whether it was created now (rule 2)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """UPDATE context_namespaces SET ttl_s = coalesce($3, ttl_s)
                   WHERE account_id = $1 AND name = $2 RETURNING *""", account_id, name, ttl_s)
            if row is not None:
                return _namespace(row), False
            count = await conn.fetchval(
                "SELECT count(*) FROM context_namespaces WHERE account_id = $1", account_id)
            if count >= MAX_NAMESPACES_PER_ACCOUNT:
                raise Conflict(f"an account has at most {MAX_NAMESPACES_PER_ACCOUNT} context "
                               "namespaces; delete one first", code="namespace_limit")
            row = await conn.fetchrow(
                """INSERT INTO context_namespaces (account_id, name, ttl_s) VALUES ($1, $2, $3)
                   ON CONFLICT (account_id, name) DO UPDATE SET ttl_s = coalesce($3,
                       context_namespaces.ttl_s)
                   RETURNING *, (xmax = 0) AS inserted""", account_id, name, ttl_s)
            return _namespace(row), bool(row["inserted"])

    async def get_namespace(self, account_id: str, name: str) -> NamespaceOut:
        row = await self.pool.fetchrow(
            "SELECT * FROM context_namespaces WHERE account_id = $1 AND name = $2", account_id, name)
        if row is None:
            raise _no_namespace(name)
        return _namespace(row)

    async def list_namespaces(self, account_id: str) -> list[NamespaceOut]:
        rows = await self.pool.fetch(
            "SELECT * FROM context_namespaces WHERE account_id = $1 ORDER BY name", account_id)
        return [_namespace(r) for r in rows]

    async def delete_namespace(self, account_id: str, name: str) -> None:
        """Delete it with all its properties (the foreign key cascades)."""
        done = await self.pool.execute(
            "DELETE FROM context_namespaces WHERE account_id = $1 AND name = $2", account_id, name)
        if done == "DELETE 0":
            raise _no_namespace(name)

    async def _require(self, conn: asyncpg.Connection, account_id: str, name: str) -> int | None:
        """The namespace's default TTL; 404 when it does not exist (rule 1)."""
        row = await conn.fetchrow(
            "SELECT ttl_s FROM context_namespaces WHERE account_id = $1 AND name = $2",
            account_id, name)
        if row is None:
            raise _no_namespace(name)
        return row["ttl_s"]

    # -- sessions and properties ------------------------------------------------------
    async def list_sessions(self, account_id: str, namespace: str) -> list[str]:
        async with self.pool.acquire() as conn:
            await self._require(conn, account_id, namespace)
            rows = await conn.fetch(
                f"""SELECT DISTINCT session_id FROM context_properties
                    WHERE account_id = $1 AND namespace = $2 AND {_LIVE} ORDER BY session_id""",
                account_id, namespace)
        return [r["session_id"] for r in rows]

    async def write(self, account_id: str, namespace: str, session_id: str,
                    properties: dict[str, Any], ttl_s: int | None) -> None:
        """Upsert ``properties`` (rule 3); each one's clock restarts (TTL rule 5)."""
        names = list(properties)
        values = [value_json(properties[n], n) for n in names]
        async with self.pool.acquire() as conn, conn.transaction():
            default_ttl = await self._require(conn, account_id, namespace)
            ttl = ttl_s if ttl_s is not None else default_ttl
            try:
                await conn.execute(
                    """INSERT INTO context_properties
                           (account_id, namespace, session_id, name, value, expires_at)
                       SELECT $1, $2, $3, n, v::jsonb,
                              CASE WHEN $6::integer IS NULL THEN NULL
                                   ELSE now() + make_interval(secs => $6::integer) END
                       FROM unnest($4::text[], $5::text[]) AS p(n, v)
                       ON CONFLICT (account_id, namespace, session_id, name) DO UPDATE
                       SET value = excluded.value, expires_at = excluded.expires_at,
                           updated_at = now()""",
                    account_id, namespace, session_id, names, values, ttl)
            except asyncpg.ForeignKeyViolationError:  # deleted by a concurrent call
                raise _no_namespace(namespace) from None

    async def read(self, account_id: str, namespace: str, session_id: str,
                   names: list[str] | None = None) -> dict[str, Any]:
        """The session's live properties, or only those of ``names`` that exist."""
        async with self.pool.acquire() as conn:
            await self._require(conn, account_id, namespace)
            rows = await conn.fetch(
                f"""SELECT name, value FROM context_properties
                    WHERE account_id = $1 AND namespace = $2 AND session_id = $3 AND {_LIVE}
                      AND ($4::text[] IS NULL OR name = ANY($4::text[])) ORDER BY name""",
                account_id, namespace, session_id, names)
        return {r["name"]: r["value"] for r in rows}

    async def delete_property(self, account_id: str, namespace: str, session_id: str,
                              name: str) -> None:
        async with self.pool.acquire() as conn:
            await self._require(conn, account_id, namespace)
            await conn.execute(
                """DELETE FROM context_properties WHERE account_id = $1 AND namespace = $2
                   AND session_id = $3 AND name = $4""", account_id, namespace, session_id, name)

    async def delete_session(self, account_id: str, namespace: str, session_id: str) -> None:
        async with self.pool.acquire() as conn:
            await self._require(conn, account_id, namespace)
            await conn.execute(
                """DELETE FROM context_properties WHERE account_id = $1 AND namespace = $2
                   AND session_id = $3""", account_id, namespace, session_id)

    async def purge_expired(self, batch: int = PURGE_BATCH) -> int:
        """Delete every expired property, ``batch`` rows per statement; return how many went.

        Short statements keep locks and WAL bursts small when a lot expires at once.
        """
        total = 0
        while True:
            done = await self.pool.execute(
                """DELETE FROM context_properties WHERE ctid = ANY(ARRAY(
                       SELECT ctid FROM context_properties WHERE expires_at <= now()
                       LIMIT $1))""", batch)
            deleted = int(done.split()[-1])
            total += deleted
            if deleted < batch:
                return total


async def purge_loop(store: ContextStore, interval_s: float = PURGE_INTERVAL_S) -> None:
    """Contract rule 4: purge expired properties every ``interval_s``."""
    await every(interval_s, store.purge_expired, done="purged expired context properties",
                failed="purging context properties failed")


# -- internal routes ------------------------------------------------------------------
def _store(request: Request) -> ContextStore:
    return request.app.state.context


StoreDep = Annotated[ContextStore, Depends(_store)]
router = APIRouter(prefix="/internal/accounts/{account_id}/context",
                   dependencies=[Depends(require_service)])
NS = "/namespaces/{namespace}"
SESSION = NS + "/sessions/{session_id}"


@router.get("/namespaces")
async def list_namespaces(who: Who, store: StoreDep) -> list[NamespaceOut]:
    return await store.list_namespaces(who.account_id)


@router.post("/namespaces", status_code=201)
async def create_namespace(body: NamespaceCreate, who: Who, store: StoreDep,
                           response: Response) -> NamespaceOut:
    out, created = await store.create_namespace(who.account_id, body.name, body.ttl_s)
    if not created:
        response.status_code = 200
    return out


@router.get(NS)
async def get_namespace(namespace: NamespacePath, who: Who, store: StoreDep) -> NamespaceOut:
    return await store.get_namespace(who.account_id, namespace)


@router.delete(NS, status_code=204)
async def delete_namespace(namespace: NamespacePath, who: Who, store: StoreDep) -> Response:
    await store.delete_namespace(who.account_id, namespace)
    return Response(status_code=204)


@router.get(NS + "/sessions")
async def list_sessions(namespace: NamespacePath, who: Who, store: StoreDep) -> list[str]:
    return await store.list_sessions(who.account_id, namespace)


@router.get(SESSION + "/properties")
async def get_properties(namespace: NamespacePath, session_id: SessionPath, who: Who,
                         store: StoreDep,
                         name: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
    return await store.read(who.account_id, namespace, session_id, name)


async def _write(namespace: str, session_id: str, body: PropertiesWrite, account_id: str,
                 store: ContextStore) -> dict[str, Any]:
    await store.write(account_id, namespace, session_id, body.properties, body.ttl_s)
    return await store.read(account_id, namespace, session_id)


@router.put(SESSION + "/properties")
async def set_properties(namespace: NamespacePath, session_id: SessionPath, body: PropertiesWrite,
                         who: Who, store: StoreDep) -> dict[str, Any]:
    return await _write(namespace, session_id, body, who.account_id, store)


@router.patch(SESSION + "/properties")
async def update_properties(namespace: NamespacePath, session_id: SessionPath,
                            body: PropertiesWrite, who: Who, store: StoreDep) -> dict[str, Any]:
    return await _write(namespace, session_id, body, who.account_id, store)


@router.get(SESSION + "/properties/{name}")
async def get_property(namespace: NamespacePath, session_id: SessionPath, name: PropertyPath,
                       who: Who, store: StoreDep) -> PropertyOut:
    found = await store.read(who.account_id, namespace, session_id, [name])
    if name not in found:
        raise NotFound(f"property {name} not found in session {session_id}",
                       code="property_not_found")
    return PropertyOut(name=name, value=found[name])


@router.delete(SESSION + "/properties/{name}", status_code=204)
async def delete_property(namespace: NamespacePath, session_id: SessionPath, name: PropertyPath,
                          who: Who, store: StoreDep) -> Response:
    await store.delete_property(who.account_id, namespace, session_id, name)
    return Response(status_code=204)


@router.delete(SESSION, status_code=204)
async def delete_session(namespace: NamespacePath, session_id: SessionPath, who: Who,
                         store: StoreDep) -> Response:
    await store.delete_session(who.account_id, namespace, session_id)
    return Response(status_code=204)
