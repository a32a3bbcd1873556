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
from pydantic import BaseModel

from fnbus.api_models import CertificateCreate, CertificateOut
from fnbus.identity import Identity
from fnbus.permissions import Permission as P
from services.gateway.auth import require
from services.gateway.routes import forward, operation

router = APIRouter(prefix="/api/v1")
CERTIFICATES = "/accounts/{account_id}/certificates"
op = functools.partial(operation, router)

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
