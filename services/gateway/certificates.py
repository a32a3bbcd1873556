"""Public endpoints for the client certificates of the toolbelt's MTLSClient.

``/api/v1/accounts/{account_id}/certificates[/{name}]``, FaaS-Admin only
(``certificate.create-delete`` / ``certificate.read``), forwarded to the
registry, which checks the upload (the certificate and key parse and belong
together) and seals it. No answer ever contains PEM material.

The body models mirror the registry's (``services/registry/certificates.py``);
they belong in :mod:`fnbus.api_models` once that module is free to change.
"""

from __future__ import annotations

import functools

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from fnbus.identity import Identity
from fnbus.permissions import Permission as P
from services.gateway.auth import require
from services.gateway.routes import forward, operation

router = APIRouter(prefix="/api/v1")
CERTIFICATES = "/accounts/{account_id}/certificates"
op = functools.partial(operation, router)

_NAME = r"^[A-Za-z0-9_-]{1,100}$"
_MAX_PEM_CHARS = 64 * 1024


class CertificateCreate(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(pattern=_NAME, description="what a lambda passes to MTLSClient")
    cert: str = Field(max_length=_MAX_PEM_CHARS,
                      description="PEM client certificate; its chain may follow the leaf")
    key: str = Field(max_length=_MAX_PEM_CHARS, description="PEM private key, unencrypted")
    ca: str | None = Field(default=None, max_length=_MAX_PEM_CHARS,
                           description="PEM CA certificate(s) the server's certificate must chain to")


class CertificateOut(BaseModel):
    name: str
    subject: str
    issuer: str
    not_after_ms: int = Field(description="expiry, epoch milliseconds")
    fingerprint: str = Field(description="SHA-256 of the certificate (DER), hex pairs")
    has_ca: bool
    created_ms: int


async def _forward(request: Request, identity: Identity, body: BaseModel | None = None) -> Response:
    return await forward(request.app.state.registry, request, identity, body)


@op("POST", CERTIFICATES, P.CERTIFICATE_WRITE, status_code=201, response_model=CertificateOut,
    summary="Upload a client certificate for MTLSClient",
    more="The key must be unencrypted and belong to the certificate; 409 if the name exists.")
async def create_certificate(account_id: str, body: CertificateCreate, request: Request,
                             who: Identity = Depends(require(P.CERTIFICATE_WRITE))) -> Response:
    return await _forward(request, who, body)


@op("GET", CERTIFICATES, P.CERTIFICATE_READ, response_model=list[CertificateOut],
    summary="List client certificates (never their material)")
async def list_certificates(account_id: str, request: Request,
                            who: Identity = Depends(require(P.CERTIFICATE_READ))) -> Response:
    return await _forward(request, who)


@op("GET", CERTIFICATES + "/{name}", P.CERTIFICATE_READ, response_model=CertificateOut)
async def get_certificate(account_id: str, name: str, request: Request,
                          who: Identity = Depends(require(P.CERTIFICATE_READ))) -> Response:
    return await _forward(request, who)


@op("DELETE", CERTIFICATES + "/{name}", P.CERTIFICATE_WRITE, status_code=204,
    summary="Delete a client certificate; lambdas using it fail with certificate_not_found")
async def delete_certificate(account_id: str, name: str, request: Request,
                             who: Identity = Depends(require(P.CERTIFICATE_WRITE))) -> Response:
    return await _forward(request, who)
