"""Client certificates through the public API: rules, permission matrix, nothing echoed, sealed at rest."""

from __future__ import annotations

import datetime

import asyncpg
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fnbus.config import Settings
from fnbus.permissions import Role
from tests.egress_support import CertificateAuthority
from tests.integration.mgmt_support import Account, create_account, user_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def tenant(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"cert{run_id}")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("fnbus certificates test CA")


def _expired() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=10))
            .not_valid_after(now - datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def _assert_no_material(text: str, *pems: str) -> None:
    assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text
    for pem in pems:
        body = "".join(pem.strip().splitlines()[1:-1])
        assert body[:40] not in text


async def test_admin_uploads_lists_and_deletes_without_material_echoed(
        tenant: Account, ca: CertificateAuthority, settings: Settings) -> None:
    client = ca.issue_client("crm-client")
    async with tenant.client() as c:
        r = await c.post("/certificates", json={"name": "crm", "cert": client.cert_pem,
                                                "key": client.key_pem, "ca": ca.cert_pem})
        assert r.status_code == 201, r.text
        created = r.json()
        _assert_no_material(r.text, client.cert_pem, client.key_pem, ca.cert_pem)
        assert created["name"] == "crm" and created["subject"] == "CN=crm-client"
        assert created["issuer"] == "CN=fnbus certificates test CA" and created["has_ca"] is True
        leaf = x509.load_pem_x509_certificate(client.cert_pem.encode())
        digest = leaf.fingerprint(hashes.SHA256()).hex().upper()
        assert created["fingerprint"].replace(":", "") == digest
        assert created["not_after_ms"] == int(leaf.not_valid_after_utc.timestamp() * 1000)

        r = await c.get("/certificates")
        assert r.status_code == 200, r.text
        assert [x["name"] for x in r.json()] == ["crm"]
        assert set(r.json()[0]) == {"name", "subject", "issuer", "not_after_ms", "fingerprint",
                                    "has_ca", "created_ms"}
        _assert_no_material(r.text, client.cert_pem, client.key_pem)
        r = await c.get("/certificates/crm")
        assert r.status_code == 200 and r.json() == created

        again = await c.post("/certificates", json={"name": "crm", "cert": client.cert_pem,
                                                    "key": client.key_pem})
        assert again.status_code == 409 and again.json()["error"]["code"] == "certificate_exists"

    # At rest the material is sealed, not PEM.
    conn = await asyncpg.connect(settings.database_url)
    try:
        row = await conn.fetchrow("SELECT cert_enc, key_enc, ca_enc FROM certificates "
                                  "WHERE account_id = $1 AND name = 'crm'", tenant.id)
    finally:
        await conn.close()
    for sealed in row.values():
        assert b"BEGIN" not in sealed

    async with tenant.client() as c:
        r = await c.delete("/certificates/crm")
        assert r.status_code == 204, r.text
        assert (await c.get("/certificates/crm")).status_code == 404
        r = await c.delete("/certificates/crm")
        assert r.status_code == 404 and r.json()["error"]["code"] == "certificate_not_found"


@pytest.mark.parametrize("case,code", [
    ("garbage cert", "invalid_certificate"),
    ("garbage key", "invalid_key"),
    ("encrypted key", "invalid_key"),
    ("key of another certificate", "key_mismatch"),
    ("garbage ca", "invalid_ca"),
    ("expired", "certificate_expired"),
])
async def test_uploads_that_break_the_rules_are_refused(
        tenant: Account, ca: CertificateAuthority, case: str, code: str) -> None:
    good = ca.issue_client("rules")
    other = ca.issue_client("other")
    key = serialization.load_pem_private_key(good.key_pem.encode(), password=None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"pass")).decode()
    body = {"name": "rules", "cert": good.cert_pem, "key": good.key_pem}
    if case == "garbage cert":
        body["cert"] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    elif case == "garbage key":
        body["key"] = "not a key"
    elif case == "encrypted key":
        body["key"] = encrypted
    elif case == "key of another certificate":
        body["key"] = other.key_pem
    elif case == "garbage ca":
        body["ca"] = "nope"
    elif case == "expired":
        body["cert"], body["key"] = _expired()
    async with tenant.client() as c:
        r = await c.post("/certificates", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == code
        _assert_no_material(r.text, good.cert_pem, good.key_pem, other.key_pem)
        assert (await c.get("/certificates/rules")).status_code == 404


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 101])
async def test_names_follow_the_key_rule(tenant: Account, ca: CertificateAuthority, name: str) -> None:
    good = ca.issue_client("names")
    async with tenant.client() as c:
        r = await c.post("/certificates", json={"name": name, "cert": good.cert_pem, "key": good.key_pem})
        assert r.status_code == 422, r.text
        assert "PRIVATE KEY" not in r.text


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.INVOCATION])
async def test_only_admins_manage_or_see_certificates(
        tenant: Account, ca: CertificateAuthority, role: Role) -> None:
    key = await user_key(tenant, f"certs-{role.value}", [role.value])
    good = ca.issue_client("perm")
    async with tenant.client() as admin:
        r = await admin.post("/certificates", json={"name": f"perm-{role.name.lower()}",
                                                    "cert": good.cert_pem, "key": good.key_pem})
        assert r.status_code == 201, r.text
    async with tenant.client(key) as c:
        r = await c.post("/certificates", json={"name": "mine", "cert": good.cert_pem, "key": good.key_pem})
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "permission_denied"
        assert (await c.get("/certificates")).status_code == 403
        assert (await c.get(f"/certificates/perm-{role.name.lower()}")).status_code == 403
        assert (await c.delete(f"/certificates/perm-{role.name.lower()}")).status_code == 403


async def test_another_accounts_admin_is_refused(
        tenant: Account, ca: CertificateAuthority, settings: Settings, gateway_url: str,
        run_id: str) -> None:
    other = await create_account(settings, gateway_url, f"cert2{run_id}")
    good = ca.issue_client("cross")
    async with httpx.AsyncClient(base_url=f"{gateway_url}/api/v1/accounts/{tenant.id}",
                                 headers={"Authorization": f"Bearer {other.admin_key}"}) as c:
        r = await c.post("/certificates", json={"name": "cross", "cert": good.cert_pem, "key": good.key_pem})
        assert r.status_code == 403, r.text
        assert (await c.get("/certificates")).status_code == 403


async def test_internal_material_endpoint_needs_the_service_token(
        tenant: Account, ca: CertificateAuthority, settings: Settings) -> None:
    good = ca.issue_client("internal")
    async with tenant.client() as c:
        assert (await c.post("/certificates", json={"name": "internal", "cert": good.cert_pem,
                                                    "key": good.key_pem})).status_code == 201
    path = f"/internal/toolbelt/accounts/{tenant.id}/certificates/internal"
    async with httpx.AsyncClient(base_url=settings.registry_url) as c:
        assert (await c.get(path)).status_code == 401
        assert (await c.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 401
        r = await c.get(path, headers={"Authorization": f"Bearer {settings.service_token}"})
        assert r.status_code == 200, r.text
        assert r.json() == {"name": "internal", "cert_pem": good.cert_pem, "key_pem": good.key_pem,
                            "ca_pem": None}
