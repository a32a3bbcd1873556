"""The lambda lifecycle: versions, states, deployments, and the change feed.

States (ARCHITECTURE.md):
1. Draft — never deployed (or undeployed since).
2. Productive — the deployed version carries the latest code, env and dependencies.
3. Modified — deployed, and a later saved version changed code, env or dependencies.
Every save creates a new immutable version; a deployment records its version.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg

from fnbus import catalog
from fnbus.api_models import (
    DeploymentOut,
    LambdaCreate,
    LambdaOut,
    LambdaUpdate,
    VersionOut,
)
from fnbus.errors import Conflict, NotFound, Unprocessable
from fnbus.kafka import Producer
from fnbus.schemas import (
    DeploymentState,
    DeploymentStatus,
    DeployRequest,
    LambdaChange,
    LambdaState,
    Runtime,
)
from fnbus.topics import Topics
from services.registry.accounts import ms
from services.registry.validation import check_code, check_event

log = logging.getLogger(__name__)

_SELECT = """SELECT l.*, v.code, v.env, v.dependencies
             FROM lambdas l JOIN lambda_versions v
               ON v.lambda_id = l.id AND v.version = l.current_version"""


def _out(row: asyncpg.Record, with_code: bool = True) -> LambdaOut:
    return LambdaOut(
        id=str(row["id"]), account_id=row["account_id"], name=row["name"],
        description=row["description"], runtime=Runtime(row["runtime"]),
        event_id=row["event_id"], skills=list(row["skills"]), template_id=row["template_id"],
        state=row["state"], version=row["current_version"],
        deployed_version=row["deployed_version"], deployment_state=row["deployment_state"],
        deployment_cause=row["deployment_cause"],
        code=row["code"] if with_code else None,
        env=row["env"] if with_code else None,
        dependencies=row["dependencies"] if with_code else None,
        created_ms=ms(row["created_at"]) or 0, updated_ms=ms(row["updated_at"]) or 0,
    )


def _deployment(row: asyncpg.Record) -> DeploymentOut:
    return DeploymentOut(
        id=str(row["id"]), lambda_id=str(row["lambda_id"]), version=row["version"],
        action=row["action"], state=row["state"], image=row["image"], cause=row["cause"],
        created_ms=ms(row["created_at"]) or 0, updated_ms=ms(row["updated_at"]) or 0,
    )


def _uuid(lambda_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(lambda_id)
    except ValueError:
        raise NotFound(f"lambda {lambda_id} not found", code="lambda_not_found") from None


class Lambdas:
    def __init__(self, pool: asyncpg.Pool, producer: Producer, topics: Topics) -> None:
        self.pool = pool
        self.producer = producer
        self.topics = topics

    async def _row(self, conn: Any, account_id: str, lambda_id: str, *, lock: bool = False) -> Any:
        sql = _SELECT + " WHERE l.id = $1 AND l.account_id = $2" + (" FOR UPDATE OF l" if lock else "")
        row = await conn.fetchrow(sql, _uuid(lambda_id), account_id)
        if row is None:
            raise NotFound(f"lambda {lambda_id} not found", code="lambda_not_found")
        return row

    async def _check_limit(self, conn: Any, account_id: str, event_id: str | None,
                           exclude: uuid.UUID | None = None) -> None:
        event = catalog.event_or_none(event_id)
        if event is None or event.limit is None:
            return
        # Serialise concurrent creates for the same account and event.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{account_id}/{event_id}")
        used = await conn.fetchval(
            "SELECT count(*) FROM lambdas WHERE account_id = $1 AND event_id = $2 AND id <> $3",
            account_id, event_id, exclude or uuid.UUID(int=0))
        if used >= event.limit:
            raise Conflict(
                f"event {event_id} allows {event.limit} function(s) per account and "
                f"{used} already use it; bind this lambda to another event or delete one",
                code="event_limit_reached",
            )

    async def publish(self, row: asyncpg.Record, deleted: bool = False) -> None:
        change = LambdaChange(
            lambda_id=str(row["id"]), account_id=row["account_id"], name=row["name"],
            runtime=Runtime(row["runtime"]), state=LambdaState(row["state"]),
            event_id=row["event_id"], skills=list(row["skills"]),
            deployed_version=row["deployed_version"], deployed_image=row["deployed_image"],
            deleted=deleted,
        )
        await self.producer.send(self.topics.lambda_changes, change.to_bytes(), key=str(row["id"]))

    # -- CRUD --------------------------------------------------------------------------
    async def create(self, account_id: str, user_id: str | None, body: LambdaCreate) -> LambdaOut:
        template = None
        if body.template_id is not None:
            template = catalog.TEMPLATES.get(body.template_id)
            if template is None:
                raise Unprocessable(f"unknown template {body.template_id!r}; GET /api/v1/templates",
                                    code="unknown_template")
        runtime = body.runtime
        event_id = body.event_id
        code = body.code
        if template is not None:
            if "runtime" not in body.model_fields_set:
                runtime = Runtime(template.runtime)
            if "event_id" not in body.model_fields_set:
                event_id = template.event_id
            if code is None:
                code = template.code
        if code is None:
            raise Unprocessable("code is required (or choose a template_id)", code="code_required")
        check_code(code, runtime.value)
        check_event(event_id, body.skills)
        lambda_id = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            await self._check_limit(conn, account_id, event_id)
            try:
                await conn.execute(
                    """INSERT INTO lambdas (id, account_id, name, description, runtime, event_id,
                                            skills, template_id)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                    lambda_id, account_id, body.name, body.description, runtime.value, event_id,
                    body.skills, body.template_id)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"a lambda named {body.name!r} exists in this account",
                               code="name_taken") from None
            await conn.execute(
                """INSERT INTO lambda_versions (lambda_id, version, code, env, dependencies, created_by)
                   VALUES ($1, 1, $2, $3, $4, $5)""",
                lambda_id, code, body.env, body.dependencies, _maybe_uuid(user_id))
            row = await self._row(conn, account_id, str(lambda_id))
        await self.publish(row)
        return _out(row)

    async def get(self, account_id: str, lambda_id: str) -> LambdaOut:
        return _out(await self._row(self.pool, account_id, lambda_id))

    async def list_all(self, account_id: str, state: str | None, event_id: str | None) -> list[LambdaOut]:
        if state is not None and state not in {s.value for s in LambdaState}:
            raise Unprocessable(f"state must be one of {', '.join(s.value for s in LambdaState)}",
                                code="invalid_state")
        rows = await self.pool.fetch(
            _SELECT + """ WHERE l.account_id = $1 AND ($2::text IS NULL OR l.state = $2)
                          AND ($3::text IS NULL OR l.event_id = $3) ORDER BY l.name""",
            account_id, state, event_id)
        return [_out(r, with_code=False) for r in rows]

    async def update(self, account_id: str, lambda_id: str, user_id: str | None,
                     body: LambdaUpdate) -> LambdaOut:
        fields = body.model_fields_set
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._row(conn, account_id, lambda_id, lock=True)
            runtime = row["runtime"]
            code = body.code if body.code is not None else row["code"]
            env = body.env if body.env is not None else row["env"]
            deps = body.dependencies if body.dependencies is not None else row["dependencies"]
            event_id = body.event_id if "event_id" in fields else row["event_id"]
            skills = body.skills if body.skills is not None else list(row["skills"])
            if body.code is not None:
                check_code(code, runtime)
            check_event(event_id, skills)
            if event_id != row["event_id"]:
                await self._check_limit(conn, account_id, event_id, exclude=row["id"])
            content_changed = (code, env, deps) != (row["code"], row["env"], row["dependencies"])
            version = row["current_version"]
            if content_changed:
                version += 1
                await conn.execute(
                    """INSERT INTO lambda_versions
                           (lambda_id, version, code, env, dependencies, created_by)
                       VALUES ($1, $2, $3, $4, $5, $6)""",
                    row["id"], version, code, env, deps, _maybe_uuid(user_id))
            state = row["state"]
            if content_changed and state == LambdaState.PRODUCTIVE.value:
                state = LambdaState.MODIFIED.value
            try:
                await conn.execute(
                    """UPDATE lambdas SET name = $2, description = $3, event_id = $4, skills = $5,
                              current_version = $6, state = $7, updated_at = now()
                       WHERE id = $1""",
                    row["id"], body.name if body.name is not None else row["name"],
                    body.description if body.description is not None else row["description"],
                    event_id, skills, version, state)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"a lambda named {body.name!r} exists in this account",
                               code="name_taken") from None
            row = await self._row(conn, account_id, lambda_id)
        await self.publish(row)
        return _out(row)

    async def delete(self, account_id: str, lambda_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._row(conn, account_id, lambda_id, lock=True)
            if row["deployed_version"] is not None or row["deployment_state"] == "Deploying":
                raise Conflict("the lambda is deployed; undeploy it before deleting it",
                               code="lambda_deployed")
            await conn.execute("DELETE FROM lambdas WHERE id = $1", row["id"])
        await self.publish(row, deleted=True)

    async def versions(self, account_id: str, lambda_id: str) -> list[VersionOut]:
        row = await self._row(self.pool, account_id, lambda_id)
        rows = await self.pool.fetch(
            "SELECT * FROM lambda_versions WHERE lambda_id = $1 ORDER BY version DESC", row["id"])
        return [VersionOut(version=r["version"], code=r["code"], env=r["env"],
                           dependencies=r["dependencies"], created_ms=ms(r["created_at"]) or 0)
                for r in rows]

    async def version(self, account_id: str, lambda_id: str, version: int) -> VersionOut:
        row = await self._row(self.pool, account_id, lambda_id)
        r = await self.pool.fetchrow(
            "SELECT * FROM lambda_versions WHERE lambda_id = $1 AND version = $2", row["id"], version)
        if r is None:
            raise NotFound(f"lambda {lambda_id} has no version {version}", code="version_not_found")
        return VersionOut(version=r["version"], code=r["code"], env=r["env"],
                          dependencies=r["dependencies"], created_ms=ms(r["created_at"]) or 0)

    # -- deployments ------------------------------------------------------------------
    async def deploy(self, account_id: str, lambda_id: str) -> DeploymentOut:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._row(conn, account_id, lambda_id, lock=True)
            if row["deployment_state"] == DeploymentState.DEPLOYING.value:
                raise Conflict("a deployment of this lambda is in progress", code="deploy_in_progress")
            dep = await conn.fetchrow(
                """INSERT INTO deployments (id, account_id, lambda_id, version, action, state)
                   VALUES ($1, $2, $3, $4, 'deploy', 'Deploying') RETURNING *""",
                uuid.uuid4(), account_id, row["id"], row["current_version"])
            await conn.execute(
                """UPDATE lambdas SET deployment_state = 'Deploying', deployment_cause = NULL,
                          updated_at = now() WHERE id = $1""", row["id"])
            request = DeployRequest(
                deployment_id=str(dep["id"]), account_id=account_id, lambda_id=str(row["id"]),
                version=row["current_version"], runtime=Runtime(row["runtime"]), code=row["code"],
                env=row["env"], dependencies=row["dependencies"],
            )
            # Inside the transaction: if the broker refuses, nothing is recorded.
            await self.producer.send(self.topics.deploy_requests, request.to_bytes(),
                                     key=str(row["id"]))
        return _deployment(dep)

    async def undeploy(self, account_id: str, lambda_id: str) -> DeploymentOut:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._row(conn, account_id, lambda_id, lock=True)
            if row["deployed_version"] is None and row["deployment_state"] != "Deploying":
                raise Conflict("the lambda is not deployed", code="not_deployed")
            version = row["deployed_version"] or row["current_version"]
            dep = await conn.fetchrow(
                """INSERT INTO deployments (id, account_id, lambda_id, version, action, state)
                   VALUES ($1, $2, $3, $4, 'undeploy', 'Undeployed') RETURNING *""",
                uuid.uuid4(), account_id, row["id"], version)
            await conn.execute(
                """UPDATE lambdas SET deployed_version = NULL, deployed_image = NULL,
                          deployment_state = 'Undeployed', deployment_cause = NULL,
                          state = 'Draft', updated_at = now() WHERE id = $1""", row["id"])
            await self.producer.send(
                self.topics.deploy_requests,
                DeployRequest(deployment_id=str(dep["id"]), account_id=account_id,
                              lambda_id=str(row["id"]), version=version,
                              runtime=Runtime(row["runtime"]), code="", action="undeploy").to_bytes(),
                key=str(row["id"]))
            row = await self._row(conn, account_id, lambda_id)
        await self.publish(row)
        return _deployment(dep)

    async def deployments(self, account_id: str, lambda_id: str) -> list[DeploymentOut]:
        row = await self._row(self.pool, account_id, lambda_id)
        rows = await self.pool.fetch(
            "SELECT * FROM deployments WHERE lambda_id = $1 ORDER BY created_at DESC LIMIT 50",
            row["id"])
        return [_deployment(r) for r in rows]

    async def on_deployment_status(self, status: DeploymentStatus) -> None:
        """Apply the deployer's progress. Idempotent: a replayed status changes nothing twice."""
        async with self.pool.acquire() as conn, conn.transaction():
            dep = await conn.fetchrow(
                "SELECT * FROM deployments WHERE id = $1 FOR UPDATE", _maybe_uuid(status.deployment_id))
            if dep is None or dep["action"] != "deploy":
                return
            if dep["state"] in (DeploymentState.DEPLOYED.value, DeploymentState.FAILED.value):
                return  # already final
            await conn.execute(
                "UPDATE deployments SET state = $2, image = $3, cause = $4, updated_at = now() "
                "WHERE id = $1", dep["id"], status.state.value, status.image, status.cause)
            lam = await conn.fetchrow(
                "SELECT * FROM lambdas WHERE id = $1 FOR UPDATE", dep["lambda_id"])
            if lam is None:
                return
            # Only the newest deployment may move the lambda.
            newest = await conn.fetchval(
                "SELECT id FROM deployments WHERE lambda_id = $1 ORDER BY created_at DESC LIMIT 1",
                dep["lambda_id"])
            if newest != dep["id"]:
                return
            if status.state == DeploymentState.DEPLOYED:
                state = (LambdaState.PRODUCTIVE if dep["version"] == lam["current_version"]
                         else LambdaState.MODIFIED)
                await conn.execute(
                    """UPDATE lambdas SET deployed_version = $2, deployed_image = $3,
                              deployment_state = 'Deployed', deployment_cause = NULL,
                              state = $4, updated_at = now() WHERE id = $1""",
                    lam["id"], dep["version"], status.image, state.value)
            elif status.state == DeploymentState.FAILED:
                await conn.execute(
                    """UPDATE lambdas SET deployment_state = 'Failed', deployment_cause = $2,
                              updated_at = now() WHERE id = $1""", lam["id"], status.cause)
            else:
                return
            row = await conn.fetchrow(_SELECT + " WHERE l.id = $1", lam["id"])
        log.info("deployment status applied",
                 extra={"lambda_id": status.lambda_id, "state": status.state.value})
        await self.publish(row)


def _maybe_uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
