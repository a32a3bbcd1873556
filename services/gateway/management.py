"""Public management endpoints under /api/v1, forwarded to the registry.

Each endpoint names its permission once, in ``openapi_extra["x-permission"]``
and in its dependency; tests walk the route table to check both agree.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from fnbus import catalog
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
    TemplateOut,
    TermsAcceptance,
    UserCreate,
    UserOut,
    UserUpdate,
    VersionOut,
)
from fnbus.errors import NotFound
from fnbus.identity import Identity
from fnbus.permissions import Permission as P
from services.gateway.auth import require
from services.gateway.routes import forward, operation

router = APIRouter(prefix="/api/v1")
ACC = "/accounts/{account_id}"
op = functools.partial(operation, router)


async def _forward(request: Request, identity: Identity, body: Any = None,
                   params: dict[str, Any] | None = None) -> Response:
    return await forward(request.app.state.registry, request, identity, body, params)


# -- account ---------------------------------------------------------------------------
@op("GET", ACC, P.ACCOUNT_READ, response_model=AccountOut, summary="Account and its provisioning")
async def get_account(account_id: str, request: Request,
                      who: Identity = Depends(require(P.ACCOUNT_READ, before_provisioning=True))) -> Response:
    return await _forward(request, who)


@op("POST", ACC + "/terms-of-use", P.ACCOUNT_ADMIN, response_model=AccountOut,
    summary="Accept the terms of use and provision the account")
async def accept_terms(account_id: str, body: TermsAcceptance, request: Request,
                       who: Identity = Depends(require(P.ACCOUNT_ADMIN, before_provisioning=True))) -> Response:
    response = await _forward(request, who, body)
    request.app.state.auth.evict_account(account_id)  # cached identities say "not provisioned"
    return response


# -- users and credentials -------------------------------------------------------------
@op("GET", ACC + "/users", P.ACCOUNT_ADMIN, response_model=list[UserOut])
async def list_users(account_id: str, request: Request, who: Identity = Depends(require(P.ACCOUNT_ADMIN))) -> Response:
    return await _forward(request, who)


@op("POST", ACC + "/users", P.ACCOUNT_ADMIN, status_code=201, response_model=UserOut)
async def create_user(account_id: str, body: UserCreate, request: Request,
                      who: Identity = Depends(require(P.ACCOUNT_ADMIN))) -> Response:
    return await _forward(request, who, body)


@op("GET", ACC + "/users/{user_id}", P.ACCOUNT_ADMIN, response_model=UserOut)
async def get_user(account_id: str, user_id: str, request: Request,
                   who: Identity = Depends(require(P.ACCOUNT_ADMIN))) -> Response:
    return await _forward(request, who)


@op("PATCH", ACC + "/users/{user_id}", P.ACCOUNT_ADMIN, response_model=UserOut)
async def update_user(account_id: str, user_id: str, body: UserUpdate, request: Request,
                      who: Identity = Depends(require(P.ACCOUNT_ADMIN))) -> Response:
    response = await _forward(request, who, body)
    request.app.state.auth.evict_account(account_id)  # roles changed
    return response


@op("DELETE", ACC + "/users/{user_id}", P.ACCOUNT_ADMIN, status_code=204)
async def delete_user(account_id: str, user_id: str, request: Request,
                      who: Identity = Depends(require(P.ACCOUNT_ADMIN))) -> Response:
    response = await _forward(request, who)
    request.app.state.auth.evict_account(account_id)
    return response


@op("POST", ACC + "/users/{user_id}/api-keys", P.ACCOUNT_ADMIN, status_code=201,
    response_model=CredentialOut, summary="Create an API key (the secret is shown once)")
async def create_api_key(account_id: str, user_id: str, request: Request,
                         who: Identity = Depends(require(P.ACCOUNT_ADMIN))) -> Response:
    return await _forward(request, who)


@op("POST", ACC + "/users/{user_id}/oauth-clients", P.ACCOUNT_ADMIN, status_code=201,
    response_model=CredentialOut,
    summary="Create OAuth2 client credentials for an external system (secret shown once)")
async def create_oauth_client(account_id: str, user_id: str, request: Request,
                              who: Identity = Depends(require(P.ACCOUNT_ADMIN))) -> Response:
    return await _forward(request, who)


@op("GET", ACC + "/users/{user_id}/credentials", P.ACCOUNT_ADMIN,
    response_model=list[CredentialOut])
async def list_credentials(account_id: str, user_id: str, request: Request,
                           who: Identity = Depends(require(P.ACCOUNT_ADMIN))) -> Response:
    return await _forward(request, who)


@op("DELETE", ACC + "/credentials/{key_id}", P.ACCOUNT_ADMIN, response_model=CredentialOut,
    summary="Revoke an API key or OAuth client")
async def revoke_credential(account_id: str, key_id: str, request: Request,
                            who: Identity = Depends(require(P.ACCOUNT_ADMIN))) -> Response:
    response = await _forward(request, who)
    request.app.state.auth.evict_key(key_id)
    return response


# -- lambdas ---------------------------------------------------------------------------
@op("GET", ACC + "/lambdas", P.LAMBDA_READ, response_model=list[LambdaOut])
async def list_lambdas(account_id: str, request: Request, who: Identity = Depends(require(P.LAMBDA_READ)),
                       state: Annotated[str | None, Query(description="Draft/Productive/Modified")] = None,
                       event_id: str | None = None) -> Response:
    params = {k: v for k, v in {"state": state, "event_id": event_id}.items() if v is not None}
    return await _forward(request, who, params=params)


@op("POST", ACC + "/lambdas", P.LAMBDA_WRITE, status_code=201, response_model=LambdaOut)
async def create_lambda(account_id: str, body: LambdaCreate, request: Request,
                        who: Identity = Depends(require(P.LAMBDA_WRITE))) -> Response:
    return await _forward(request, who, body)


@op("GET", ACC + "/lambdas/{lambda_id}", P.LAMBDA_READ, response_model=LambdaOut)
async def get_lambda(account_id: str, lambda_id: str, request: Request,
                     who: Identity = Depends(require(P.LAMBDA_READ))) -> Response:
    return await _forward(request, who)


@op("PATCH", ACC + "/lambdas/{lambda_id}", P.LAMBDA_WRITE, response_model=LambdaOut,
    summary="Change a lambda; code, env or dependencies make a new version")
async def update_lambda(account_id: str, lambda_id: str, body: LambdaUpdate, request: Request,
                        who: Identity = Depends(require(P.LAMBDA_WRITE))) -> Response:
    return await _forward(request, who, body)


@op("DELETE", ACC + "/lambdas/{lambda_id}", P.LAMBDA_WRITE, status_code=204,
    summary="Delete a lambda (undeploy it first)")
async def delete_lambda(account_id: str, lambda_id: str, request: Request,
                        who: Identity = Depends(require(P.LAMBDA_WRITE))) -> Response:
    return await _forward(request, who)


@op("GET", ACC + "/lambdas/{lambda_id}/versions", P.LAMBDA_READ, response_model=list[VersionOut])
async def list_versions(account_id: str, lambda_id: str, request: Request,
                        who: Identity = Depends(require(P.LAMBDA_READ))) -> Response:
    return await _forward(request, who)


@op("GET", ACC + "/lambdas/{lambda_id}/deployments", P.LAMBDA_READ,
    response_model=list[DeploymentOut])
async def list_deployments(account_id: str, lambda_id: str, request: Request,
                           who: Identity = Depends(require(P.LAMBDA_READ))) -> Response:
    return await _forward(request, who)


@op("POST", ACC + "/lambdas/{lambda_id}/deployments", P.LAMBDA_DEPLOY, status_code=202,
    response_model=DeploymentOut, summary="Deploy the current version")
async def deploy_lambda(account_id: str, lambda_id: str, request: Request,
                        who: Identity = Depends(require(P.LAMBDA_DEPLOY))) -> Response:
    return await _forward(request, who)


@op("DELETE", ACC + "/lambdas/{lambda_id}/deployments", P.LAMBDA_DEPLOY,
    response_model=DeploymentOut, summary="Undeploy")
async def undeploy_lambda(account_id: str, lambda_id: str, request: Request,
                          who: Identity = Depends(require(P.LAMBDA_DEPLOY))) -> Response:
    return await _forward(request, who)


# -- secrets and allowlist ---------------------------------------------------------------
@op("GET", ACC + "/secrets", P.SECRET_READ, response_model=list[SecretOut],
    summary="List secrets (values obfuscated; default secrets on request)")
async def list_secrets(account_id: str, request: Request, who: Identity = Depends(require(P.SECRET_READ)),
                       include_default: bool = False) -> Response:
    return await _forward(request, who, params={"include_default": str(include_default).lower()})


@op("POST", ACC + "/secrets", P.SECRET_WRITE, status_code=201, response_model=SecretOut)
async def create_secret(account_id: str, body: SecretCreate, request: Request,
                        who: Identity = Depends(require(P.SECRET_WRITE))) -> Response:
    return await _forward(request, who, body)


@op("GET", ACC + "/secrets/{key}", P.SECRET_READ, response_model=SecretOut)
async def get_secret(account_id: str, key: str, request: Request,
                     who: Identity = Depends(require(P.SECRET_READ))) -> Response:
    return await _forward(request, who)


@op("PUT", ACC + "/secrets/{key}", P.SECRET_WRITE, response_model=SecretOut)
async def update_secret(account_id: str, key: str, body: SecretUpdate, request: Request,
                        who: Identity = Depends(require(P.SECRET_WRITE))) -> Response:
    return await _forward(request, who, body)


@op("DELETE", ACC + "/secrets/{key}", P.SECRET_WRITE, status_code=204)
async def delete_secret(account_id: str, key: str, request: Request,
                        who: Identity = Depends(require(P.SECRET_WRITE))) -> Response:
    return await _forward(request, who)


@op("GET", ACC + "/domains", P.WHITELIST_READ, response_model=list[DomainOut])
async def list_domains(account_id: str, request: Request,
                       who: Identity = Depends(require(P.WHITELIST_READ))) -> Response:
    return await _forward(request, who)


@op("POST", ACC + "/domains", P.WHITELIST_WRITE, status_code=201, response_model=DomainOut)
async def add_domain(account_id: str, body: DomainCreate, request: Request,
                     who: Identity = Depends(require(P.WHITELIST_WRITE))) -> Response:
    return await _forward(request, who, body)


@op("DELETE", ACC + "/domains/{domain}", P.WHITELIST_WRITE, status_code=204)
async def delete_domain(account_id: str, domain: str, request: Request,
                        who: Identity = Depends(require(P.WHITELIST_WRITE))) -> Response:
    return await _forward(request, who)


# -- catalogue ---------------------------------------------------------------------------
@op("GET", ACC + "/events", P.LAMBDA_READ, response_model=list[EventOut],
    summary="The event catalogue with function limits and this account's usage")
async def list_events(account_id: str, request: Request, who: Identity = Depends(require(P.LAMBDA_READ))) -> Response:
    return await _forward(request, who)


def _template(t: catalog.Template) -> dict[str, Any]:
    return TemplateOut(id=t.id, name=t.name, event_id=t.event_id, runtime=t.runtime, code=t.code,
                       sample_payload=t.sample_payload, description=t.description).model_dump()


@op("GET", ACC + "/templates", P.LAMBDA_READ, response_model=list[TemplateOut])
async def list_templates(account_id: str, who: Identity = Depends(require(P.LAMBDA_READ))) -> list[dict[str, Any]]:
    return [_template(t) for t in catalog.TEMPLATES.values()]


@op("GET", ACC + "/templates/{template_id}", P.LAMBDA_READ, response_model=TemplateOut)
async def get_template(account_id: str, template_id: str,
                       who: Identity = Depends(require(P.LAMBDA_READ))) -> dict[str, Any]:
    template = catalog.TEMPLATES.get(template_id)
    if template is None:
        raise NotFound(f"template {template_id} not found", code="template_not_found")
    return _template(template)
