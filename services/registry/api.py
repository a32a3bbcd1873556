"""The registry's internal HTTP API, called by the gateway (and the operator CLI).

Every call carries ``Authorization: Bearer <service token>``. Account-scoped calls
also carry the caller's identity headers; the gateway has already checked the
permission, the registry checks that the identity belongs to the path's account.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from fnbus import catalog
from fnbus import identity as ident
from fnbus.api_models import (
    AccountOut,
    CredentialOut,
    DeploymentOut,
    DomainCreate,
    DomainOut,
    EventOut,
    LambdaCreate,
    LambdaOut,
    LambdaUpdate,
    SecretCreate,
    SecretOut,
    SecretUpdate,
    TermsAcceptance,
    UserCreate,
    UserOut,
    UserUpdate,
    VersionOut,
)
from fnbus.errors import Unprocessable
from fnbus.internal_api import Who, require_service
from fnbus.retry import RetryPolicyUpdate
from services.registry.accounts import Accounts
from services.registry.dlq import DeadLetterOut, DeadLetters, ReplayOut, RetryPolicies, RetryPolicyOut
from services.registry.events import EventInvoke, EventRouter
from services.registry.lambdas import Lambdas


def _accounts(request: Request) -> Accounts:
    return request.app.state.accounts


def _lambdas(request: Request) -> Lambdas:
    return request.app.state.lambdas


def _events(request: Request) -> EventRouter:
    return request.app.state.events


def _dead_letters(request: Request) -> DeadLetters:
    return request.app.state.dead_letters


def _policies(request: Request) -> RetryPolicies:
    return request.app.state.retry_policies


AccountsDep = Annotated[Accounts, Depends(_accounts)]
EventsDep = Annotated[EventRouter, Depends(_events)]
DeadLettersDep = Annotated[DeadLetters, Depends(_dead_letters)]
PoliciesDep = Annotated[RetryPolicies, Depends(_policies)]
LambdasDep = Annotated[Lambdas, Depends(_lambdas)]

router = APIRouter(prefix="/internal", dependencies=[Depends(require_service)])
ACC = "/accounts/{account_id}"


class AccountCreate(BaseModel):
    id: str
    name: str
    admin_name: str = "admin"
    roles: list[str] | None = None


class KeyLookup(BaseModel):
    key: str


class ClientLookup(BaseModel):
    client_id: str
    client_secret: str


class CredentialLookup(BaseModel):
    key_id: str  # the credential's id, as a JWT's ``cid`` names it


class IdentityOut(BaseModel):
    account_id: str
    user_id: str
    user_name: str
    roles: list[str]
    key_id: str | None
    provisioned: bool


def _identity_out(i: ident.Identity) -> IdentityOut:
    return IdentityOut(account_id=i.account_id, user_id=i.user_id, user_name=i.user_name,
                       roles=sorted(r.value for r in i.roles), key_id=i.key_id,
                       provisioned=i.provisioned)


# -- operator and authentication ---------------------------------------------------
@router.post("/accounts", status_code=201)
async def create_account(body: AccountCreate, accounts: AccountsDep) -> dict[str, object]:
    from fnbus.api_models import validate_name

    try:
        validate_name(body.id, "account id")
        validate_name(body.admin_name, "admin name")
    except ValueError as exc:
        raise Unprocessable(str(exc), code="invalid_request") from None
    return await accounts.create_account(body.id, body.name, body.admin_name, body.roles)


@router.post("/auth/api-key")
async def auth_api_key(body: KeyLookup, accounts: AccountsDep) -> IdentityOut:
    return _identity_out(await accounts.resolve_api_key(body.key))


@router.post("/auth/client")
async def auth_client(body: ClientLookup, accounts: AccountsDep) -> IdentityOut:
    return _identity_out(await accounts.resolve_client(body.client_id, body.client_secret))


@router.post("/auth/credential")
async def auth_credential(body: CredentialLookup, accounts: AccountsDep) -> IdentityOut:
    """The current identity behind a live credential (401 once revoked or its user deleted)."""
    return _identity_out(await accounts.resolve_credential(body.key_id))


# -- account, terms, users ------------------------------------------------------------
@router.get(ACC)
async def get_account(who: Who, accounts: AccountsDep) -> AccountOut:
    return await accounts.get_account(who.account_id)


@router.post(ACC + "/terms-of-use")
async def accept_terms(body: TermsAcceptance, who: Who, accounts: AccountsDep) -> AccountOut:
    if not body.accept:
        raise Unprocessable("set accept to true to accept the terms of use", code="terms_not_accepted")
    return await accounts.accept_terms(who.account_id)


@router.get(ACC + "/users")
async def list_users(who: Who, accounts: AccountsDep) -> list[UserOut]:
    return await accounts.list_users(who.account_id)


@router.post(ACC + "/users", status_code=201)
async def create_user(body: UserCreate, who: Who, accounts: AccountsDep) -> UserOut:
    return await accounts.create_user(who.account_id, body.name, body.roles)


@router.get(ACC + "/users/{user_id}")
async def get_user(user_id: str, who: Who, accounts: AccountsDep) -> UserOut:
    return await accounts.get_user(who.account_id, user_id)


@router.patch(ACC + "/users/{user_id}")
async def update_user(user_id: str, body: UserUpdate, who: Who, accounts: AccountsDep) -> UserOut:
    return await accounts.update_user(who.account_id, user_id, body.roles)


@router.delete(ACC + "/users/{user_id}", status_code=204)
async def delete_user(user_id: str, who: Who, accounts: AccountsDep) -> Response:
    await accounts.delete_user(who.account_id, user_id)
    return Response(status_code=204)


@router.post(ACC + "/users/{user_id}/api-keys", status_code=201)
async def create_api_key(user_id: str, who: Who, accounts: AccountsDep) -> CredentialOut:
    return await accounts.create_credential(who.account_id, user_id, "api_key")


@router.post(ACC + "/users/{user_id}/oauth-clients", status_code=201)
async def create_oauth_client(user_id: str, who: Who, accounts: AccountsDep) -> CredentialOut:
    return await accounts.create_credential(who.account_id, user_id, "oauth_client")


@router.get(ACC + "/users/{user_id}/credentials")
async def list_credentials(user_id: str, who: Who, accounts: AccountsDep) -> list[CredentialOut]:
    return await accounts.list_credentials(who.account_id, user_id)


@router.delete(ACC + "/credentials/{key_id}")
async def revoke_credential(key_id: str, who: Who, accounts: AccountsDep) -> CredentialOut:
    return await accounts.revoke_credential(who.account_id, key_id)


# -- lambdas ---------------------------------------------------------------------------
@router.get(ACC + "/lambdas")
async def list_lambdas(who: Who, lambdas: LambdasDep, state: str | None = None,
                       event_id: str | None = None) -> list[LambdaOut]:
    return await lambdas.list_all(who.account_id, state, event_id)


@router.post(ACC + "/lambdas", status_code=201)
async def create_lambda(body: LambdaCreate, who: Who, lambdas: LambdasDep) -> LambdaOut:
    return await lambdas.create(who.account_id, who.user_id, body)


@router.get(ACC + "/lambdas/{lambda_id}")
async def get_lambda(lambda_id: str, who: Who, lambdas: LambdasDep) -> LambdaOut:
    return await lambdas.get(who.account_id, lambda_id)


@router.patch(ACC + "/lambdas/{lambda_id}")
async def update_lambda(lambda_id: str, body: LambdaUpdate, who: Who,
                        lambdas: LambdasDep) -> LambdaOut:
    return await lambdas.update(who.account_id, lambda_id, who.user_id, body)


@router.delete(ACC + "/lambdas/{lambda_id}", status_code=204)
async def delete_lambda(lambda_id: str, who: Who, lambdas: LambdasDep) -> Response:
    await lambdas.delete(who.account_id, lambda_id)
    return Response(status_code=204)


@router.get(ACC + "/lambdas/{lambda_id}/versions")
async def list_versions(lambda_id: str, who: Who, lambdas: LambdasDep) -> list[VersionOut]:
    return await lambdas.versions(who.account_id, lambda_id)


@router.get(ACC + "/lambdas/{lambda_id}/versions/{version}")
async def get_version(lambda_id: str, version: int, who: Who, lambdas: LambdasDep) -> VersionOut:
    return await lambdas.version(who.account_id, lambda_id, version)


@router.get(ACC + "/lambdas/{lambda_id}/deployments")
async def list_deployments(lambda_id: str, who: Who, lambdas: LambdasDep) -> list[DeploymentOut]:
    return await lambdas.deployments(who.account_id, lambda_id)


@router.post(ACC + "/lambdas/{lambda_id}/deployments", status_code=202)
async def deploy(lambda_id: str, who: Who, lambdas: LambdasDep) -> DeploymentOut:
    return await lambdas.deploy(who.account_id, lambda_id)


@router.delete(ACC + "/lambdas/{lambda_id}/deployments")
async def undeploy(lambda_id: str, who: Who, lambdas: LambdasDep) -> DeploymentOut:
    return await lambdas.undeploy(who.account_id, lambda_id)


# -- secrets and domains ---------------------------------------------------------------
@router.get(ACC + "/secrets")
async def list_secrets(who: Who, accounts: AccountsDep,
                       include_default: Annotated[bool, Query()] = False) -> list[SecretOut]:
    return await accounts.list_secrets(who.account_id, include_default)


@router.post(ACC + "/secrets", status_code=201)
async def create_secret(body: SecretCreate, who: Who, accounts: AccountsDep) -> SecretOut:
    return await accounts.create_secret(who.account_id, body.key, body.value)


@router.get(ACC + "/secrets/{key}")
async def get_secret(key: str, who: Who, accounts: AccountsDep) -> SecretOut:
    return await accounts.get_secret(who.account_id, key)


@router.put(ACC + "/secrets/{key}")
async def update_secret(key: str, body: SecretUpdate, who: Who, accounts: AccountsDep) -> SecretOut:
    return await accounts.update_secret(who.account_id, key, body.value)


@router.delete(ACC + "/secrets/{key}", status_code=204)
async def delete_secret(key: str, who: Who, accounts: AccountsDep) -> Response:
    await accounts.delete_secret(who.account_id, key)
    return Response(status_code=204)


@router.get(ACC + "/domains")
async def list_domains(who: Who, accounts: AccountsDep) -> list[DomainOut]:
    return await accounts.list_domains(who.account_id)


@router.post(ACC + "/domains", status_code=201)
async def add_domain(body: DomainCreate, who: Who, accounts: AccountsDep) -> DomainOut:
    return await accounts.add_domain(who.account_id, body.domain)


@router.delete(ACC + "/domains/{domain}", status_code=204)
async def delete_domain(domain: str, who: Who, accounts: AccountsDep) -> Response:
    await accounts.delete_domain(who.account_id, domain)
    return Response(status_code=204)


# -- catalogue -------------------------------------------------------------------------
@router.get(ACC + "/events")
async def list_events(who: Who, request: Request) -> list[EventOut]:
    rows = await request.app.state.db.fetch(
        "SELECT event_id, count(*) AS n FROM lambdas WHERE account_id = $1 "
        "AND event_id IS NOT NULL GROUP BY event_id", who.account_id)
    used = {r["event_id"]: r["n"] for r in rows}
    return [EventOut(id=e.id, name=e.name, limit=e.limit, skill_filter=e.skill_filter,
                     used=used.get(e.id, 0)) for e in catalog.EVENTS.values()]


# -- events, dead letters, retry policies ----------------------------------------------------
@router.get(ACC + "/events/{event_id}/isImplemented")
async def is_implemented(event_id: str, who: Who, events: EventsDep) -> dict[str, bool]:
    return {"implemented": await events.is_implemented(who.account_id, event_id)}


@router.post(ACC + "/events/{event_id}/invoke")
async def invoke_event(event_id: str, body: EventInvoke, who: Who,
                       events: EventsDep) -> dict[str, object]:
    return await events.invoke(who.account_id, event_id, body)


@router.get(ACC + "/dead-letters")
async def list_dead_letters(who: Who, dlq: DeadLettersDep, lambda_id: str | None = None,
                            limit: int = 100) -> list[DeadLetterOut]:
    return await dlq.list_all(who.account_id, lambda_id, limit)


@router.post(ACC + "/dead-letters/replay")
async def replay_dead_letters(who: Who, dlq: DeadLettersDep,
                              lambda_id: str | None = None) -> ReplayOut:
    return await dlq.replay_all(who.account_id, lambda_id)


@router.delete(ACC + "/dead-letters")
async def purge_dead_letters(who: Who, dlq: DeadLettersDep,
                             lambda_id: str | None = None) -> dict[str, int]:
    return {"purged": await dlq.purge(who.account_id, lambda_id)}


@router.get(ACC + "/dead-letters/{letter_id}")
async def get_dead_letter(letter_id: str, who: Who, dlq: DeadLettersDep) -> DeadLetterOut:
    return await dlq.get(who.account_id, letter_id)


@router.post(ACC + "/dead-letters/{letter_id}/replay")
async def replay_dead_letter(letter_id: str, who: Who, dlq: DeadLettersDep) -> ReplayOut:
    return await dlq.replay(who.account_id, letter_id)


@router.delete(ACC + "/dead-letters/{letter_id}", status_code=204)
async def delete_dead_letter(letter_id: str, who: Who, dlq: DeadLettersDep) -> Response:
    await dlq.delete(who.account_id, letter_id)
    return Response(status_code=204)


@router.get(ACC + "/retry-policies")
async def list_retry_policies(who: Who, policies: PoliciesDep) -> list[RetryPolicyOut]:
    return await policies.list_all(who.account_id)


@router.get(ACC + "/retry-policies/{source}")
async def get_retry_policy(source: str, who: Who, policies: PoliciesDep) -> RetryPolicyOut:
    return await policies.get(who.account_id, source)


@router.put(ACC + "/retry-policies/{source}")
async def put_retry_policy(source: str, body: RetryPolicyUpdate, who: Who,
                           policies: PoliciesDep) -> RetryPolicyOut:
    return await policies.put(who.account_id, source, body.changes())


@router.delete(ACC + "/retry-policies/{source}")
async def reset_retry_policy(source: str, who: Who, policies: PoliciesDep) -> RetryPolicyOut:
    return await policies.reset(who.account_id, source)
