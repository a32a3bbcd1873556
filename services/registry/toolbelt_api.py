"""The registry's internal API for the invoker's toolbelt: what a running lambda may use.

Called by the invoker with the service token only; there is no user identity,
the account is the invocation's own (the invoker takes it from the request it
runs, never from the lambda). Unlike the management API these answers carry
clear text — a secret's value, a certificate's key — so:

1. the routes live under ``/internal/toolbelt/``, a prefix the gateway never
   forwards to;
2. nothing here logs a value or puts one into an error message;
3. values are read from the database on every call (no cache): a secret deleted
   through the API is gone for the next toolbelt call.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from fnbus.api_models import CERTIFICATE_NAME_PATTERN as NAME_PATTERN
from fnbus.internal_api import require_service
from services.registry.accounts import Accounts
from services.registry.certificates import CertificateMaterial, Certificates

#: The secret-key rule of LivePerson Functions (LP-REFERENCE.md).
SECRET_KEY_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
MAX_SECRET_VALUE_CHARS = 16_384

router = APIRouter(prefix="/internal/toolbelt/accounts/{account_id}",
                   dependencies=[Depends(require_service)])

SecretKey = Annotated[str, Path(pattern=SECRET_KEY_PATTERN)]
CertificateName = Annotated[str, Path(pattern=NAME_PATTERN)]


def _accounts(request: Request) -> Accounts:
    return request.app.state.accounts


def _certificates(request: Request) -> Certificates:
    return request.app.state.certificates


class SecretValue(BaseModel):
    key: str
    value: str


class SecretWrite(BaseModel):
    model_config = {"extra": "forbid"}

    value: str = Field(max_length=MAX_SECRET_VALUE_CHARS)


class SecretWritten(BaseModel):
    """The answer to a write: no value (the writer has it)."""

    key: str
    updated_ms: int


class Allowlist(BaseModel):
    domains: list[str] = Field(description="host names; entries may start with one '*.'")


@router.get("/secrets/{key}")
async def read_secret(account_id: str, key: SecretKey,
                      accounts: Accounts = Depends(_accounts)) -> SecretValue:
    return SecretValue(key=key, value=await accounts.read_secret_value(account_id, key))


@router.put("/secrets/{key}")
async def update_secret(account_id: str, key: SecretKey, body: SecretWrite,
                        accounts: Accounts = Depends(_accounts)) -> SecretWritten:
    """Existing secrets only (creation stays with the API); the last writer wins."""
    out = await accounts.update_secret(account_id, key, body.value)
    return SecretWritten(key=key, updated_ms=out.updated_ms)


@router.get("/allowlist")
async def allowlist(account_id: str, accounts: Accounts = Depends(_accounts)) -> Allowlist:
    return Allowlist(domains=[d.domain for d in await accounts.list_domains(account_id)])


@router.get("/certificates/{name}")
async def certificate(account_id: str, name: CertificateName,
                      store: Certificates = Depends(_certificates)) -> CertificateMaterial:
    return await store.material(account_id, name)
