"""Client certificates for the toolbelt's MTLSClient: checked, sealed, listed, handed to the invoker.

A FaaS-Admin uploads a PEM certificate (optionally followed by its chain), its
private key and optionally a CA to verify the server with, under a name; a
lambda refers to the name. The rules:

1. The certificate and the key must parse, the key must be unencrypted, and the
   key must belong to the certificate (same public key); an expired certificate
   is refused. Nothing else about the chain is judged: the server decides.
2. All PEM material is sealed with the registry's :class:`SecretBox` before it
   is stored; the clear text leaves the registry only towards the invoker
   (``GET /internal/toolbelt/...``, :mod:`services.registry.toolbelt_api`).
3. No answer of the management API contains PEM material: a listing shows
   name, subject, issuer, expiry and the SHA-256 fingerprint. Error messages
   say what is wrong without quoting the upload.
4. Names are unique per account; uploading an existing name is a conflict
   (delete first), so a lambda never silently switches identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from fnbus.api_models import CertificateCreate, CertificateOut
from fnbus.errors import Conflict, NotFound, Unprocessable
from fnbus.internal_api import Who, require_service
from services.registry.crypto import SecretBox


class CertificateMaterial(BaseModel):
    """The clear PEM material, for the invoker only."""

    name: str
    cert_pem: str
    key_pem: str
    ca_pem: str | None


@dataclass(frozen=True)
class Checked:
    """An upload that passed the rules, with the facts shown in listings."""

    subject: str
    issuer: str
    not_after: datetime
    fingerprint: str


def _invalid(message: str, code: str = "invalid_certificate") -> Unprocessable:
    return Unprocessable(message, code=code)


def check_upload(cert_pem: str, key_pem: str, ca_pem: str | None,
                 now: datetime | None = None) -> Checked:
    """Apply rule 1; raise :class:`Unprocessable` naming the field at fault."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError:
        raise _invalid("cert: not a PEM certificate") from None
    leaf = chain[0]
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except TypeError:
        raise _invalid("key: the private key is encrypted; upload it without a passphrase",
                       "invalid_key") from None
    except UnsupportedAlgorithm:
        raise _invalid("key: unsupported key type", "invalid_key") from None
    except ValueError:
        raise _invalid("key: not a PEM private key", "invalid_key") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise _invalid("key: the private key does not belong to the certificate", "key_mismatch")
    if ca_pem is not None and ca_pem.strip():
        try:
            x509.load_pem_x509_certificates(ca_pem.encode())
        except ValueError:
            raise _invalid("ca: not a PEM certificate", "invalid_ca") from None
    not_after = leaf.not_valid_after_utc
    if not_after <= (now or datetime.now(UTC)):
        raise _invalid(f"cert: the certificate expired on {not_after.isoformat()}",
                       "certificate_expired")
    digest = leaf.fingerprint(hashes.SHA256()).hex().upper()
    return Checked(subject=leaf.subject.rfc4514_string(), issuer=leaf.issuer.rfc4514_string(),
                   not_after=not_after,
                   fingerprint=":".join(digest[i:i + 2] for i in range(0, len(digest), 2)))


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _out(row: asyncpg.Record) -> CertificateOut:
    return CertificateOut(name=row["name"], subject=row["subject"], issuer=row["issuer"],
                          not_after_ms=_ms(row["not_after"]), fingerprint=row["fingerprint"],
                          has_ca=row["ca_enc"] is not None, created_ms=_ms(row["created_at"]))


class Certificates:
    """The store (rules in the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, box: SecretBox) -> None:
        self.pool = pool
        self.box = box

    async def create(self, account_id: str, body: CertificateCreate) -> CertificateOut:
        ca = body.ca if body.ca is not None and body.ca.strip() else None
        checked = check_upload(body.cert, body.key, ca)
        try:
            row = await self.pool.fetchrow(
                """INSERT INTO certificates (account_id, name, cert_enc, key_enc, ca_enc, subject,
                                             issuer, not_after, fingerprint)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *""",
                account_id, body.name, self.box.seal(body.cert), self.box.seal(body.key),
                None if ca is None else self.box.seal(ca), checked.subject, checked.issuer,
                checked.not_after, checked.fingerprint)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"certificate {body.name} exists; delete it first",
                           code="certificate_exists") from None
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(f"account {account_id} not found", code="account_not_found") from None
        return _out(row)

    async def list(self, account_id: str) -> list[CertificateOut]:
        rows = await self.pool.fetch(
            "SELECT * FROM certificates WHERE account_id = $1 ORDER BY name", account_id)
        return [_out(r) for r in rows]

    async def get(self, account_id: str, name: str) -> CertificateOut:
        return _out(await self._row(account_id, name))

    async def material(self, account_id: str, name: str) -> CertificateMaterial:
        """Clear text, for the invoker presenting it (never for the management API)."""
        row = await self._row(account_id, name)
        return CertificateMaterial(
            name=row["name"], cert_pem=self.box.open(row["cert_enc"]),
            key_pem=self.box.open(row["key_enc"]),
            ca_pem=None if row["ca_enc"] is None else self.box.open(row["ca_enc"]))

    async def delete(self, account_id: str, name: str) -> None:
        done = await self.pool.execute(
            "DELETE FROM certificates WHERE account_id = $1 AND name = $2", account_id, name)
        if done.endswith(" 0"):
            raise NotFound(f"certificate {name} not found", code="certificate_not_found")

    async def _row(self, account_id: str, name: str) -> asyncpg.Record:
        row = await self.pool.fetchrow(
            "SELECT * FROM certificates WHERE account_id = $1 AND name = $2", account_id, name)
        if row is None:
            raise NotFound(f"certificate {name} not found", code="certificate_not_found")
        return row


# -- the management API (the gateway forwards /api/v1/accounts/... here) ---------------
def _certificates(request: Request) -> Certificates:
    return request.app.state.certificates


router = APIRouter(prefix="/internal/accounts/{account_id}/certificates",
                   dependencies=[Depends(require_service)])


@router.post("", status_code=201)
async def create_certificate(body: CertificateCreate, who: Who,
                             store: Certificates = Depends(_certificates)) -> CertificateOut:
    return await store.create(who.account_id, body)


@router.get("")
async def list_certificates(who: Who,
                            store: Certificates = Depends(_certificates)) -> list[CertificateOut]:
    return await store.list(who.account_id)


@router.get("/{name}")
async def get_certificate(name: str, who: Who,
                          store: Certificates = Depends(_certificates)) -> CertificateOut:
    return await store.get(who.account_id, name)


@router.delete("/{name}", status_code=204)
async def delete_certificate(name: str, who: Who,
                             store: Certificates = Depends(_certificates)) -> Response:
    await store.delete(who.account_id, name)
    return Response(status_code=204)
