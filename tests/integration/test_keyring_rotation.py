"""Online rotation of the secrets key on real PostgreSQL, with a running registry reading throughout.

The registry here is a second instance with its own database, home directory
(its secrets.env) and topic prefix, so rotating its key touches nothing of the
session's other tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet

from fnbus.admin import rotate_secrets_key, secrets_key_status
from fnbus.config import Settings
from services.registry.crypto import key_id
from tests.egress_support import CertificateAuthority
from tests.support import free_port, serve_in_loop

pytestmark = pytest.mark.integration

OLD = "rotation-test-old-key-0123456789abcdef"
NEW = "rotation-test-new-key-fedcba9876543210"
LOST = "a-key-that-nobody-configured-anymore-42"
ACCOUNT = "keyring1"


@dataclass
class Registry:
    settings: Settings
    url: str
    env_file: Path
    db: asyncpg.Pool

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, headers={
            "Authorization": f"Bearer {self.settings.service_token}"})


def _write_env(path: Path, current: str, old: list[str]) -> None:
    path.write_text(f"FNBUS_SECRETS_KEY={current}\nFNBUS_SECRETS_OLD_KEYS='{json.dumps(old)}'\n")
    st = path.stat()  # make sure the change is visible even within one mtime tick
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.fixture
async def registry(settings: Settings, run_id: str, tmp_path: Path) -> AsyncIterator[Registry]:
    from services.registry.app import create_app

    name = f"fnbus_test_{run_id}_keyring"
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    database_url = settings.database_url.rsplit("/", 1)[0] + "/" + name
    port = free_port()
    mine = settings.model_copy(update={
        "home": tmp_path, "database_url": database_url, "secrets_key": OLD,
        "secrets_old_keys": [], "registry_port": port,
        "registry_url": f"http://127.0.0.1:{port}", "topic_prefix": f"t{run_id}kr"})
    env_file = tmp_path / "secrets.env"
    _write_env(env_file, OLD, [])
    try:
        async with serve_in_loop(create_app(mine), port) as url:
            pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
            try:
                yield Registry(mine, url, env_file, pool)
            finally:
                await pool.close()
    finally:
        admin = await asyncpg.connect(settings.database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _legacy(key_material: str, value: str) -> bytes:
    """A value sealed the way the registry did before key ids."""
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key_material.encode()).digest())
                  ).encrypt(value.encode())


async def _read_secret(c: httpx.AsyncClient, key: str) -> httpx.Response:
    return await c.get(f"/internal/toolbelt/accounts/{ACCOUNT}/secrets/{key}")


async def test_rotation_keeps_every_value_readable_and_moves_it_to_the_new_key(
        registry: Registry) -> None:
    ca = CertificateAuthority("keyring rotation CA")
    client_cert = ca.issue_client("keyring-client")
    values = {f"api-key-{i}": f"value-{i}-" + "x" * i for i in range(7)}
    async with registry.client() as c:
        r = await c.post("/internal/accounts", json={"id": ACCOUNT, "name": ACCOUNT,
                                                     "admin_name": "admin"})
        assert r.status_code == 201, r.text
        r = await c.post(f"/internal/accounts/{ACCOUNT}/terms-of-use", json={"accept": True})
        assert r.status_code == 200, r.text  # installs the two default secrets
        for key, value in values.items():
            r = await c.post(f"/internal/accounts/{ACCOUNT}/secrets", json={"key": key, "value": value})
            assert r.status_code == 201, r.text
        r = await c.post(f"/internal/accounts/{ACCOUNT}/certificates", json={
            "name": "crm", "cert": client_cert.cert_pem, "key": client_cert.key_pem,
            "ca": ca.cert_pem})
        assert r.status_code == 201, r.text
    # One value from before key ids, one sealed with a key nobody has any more.
    await registry.db.execute(
        "INSERT INTO secrets (account_id, key, value_enc) VALUES ($1, 'legacy', $2)",
        ACCOUNT, _legacy(OLD, "from-before-key-ids"))
    values["legacy"] = "from-before-key-ids"
    lost = Fernet(base64.urlsafe_b64encode(hashlib.sha256(LOST.encode()).digest())).encrypt(b"gone")
    await registry.db.execute(
        "INSERT INTO secrets (account_id, key, value_enc) VALUES ($1, 'lost', $2)",
        ACCOUNT, b"fnk1:" + key_id(LOST).encode() + b":" + lost)

    status = await secrets_key_status(registry.settings)
    by_id = {k["key_id"]: k for k in status["keys"]}
    assert status["current_key_id"] == key_id(OLD)
    assert by_id[key_id(OLD)]["tables"] == {"secrets": 9, "certificates": 3}
    assert by_id["unlabelled"]["values"] == 1 and by_id[key_id(LOST)]["state"] == "unknown"

    # Readers keep reading while the key changes and the rows are re-sealed.
    failures: list[str] = []
    reads = 0
    stop = asyncio.Event()

    async def reader() -> None:
        nonlocal reads
        async with registry.client() as c:
            while not stop.is_set():
                for key, value in values.items():
                    r = await _read_secret(c, key)
                    if r.status_code != 200 or r.json()["value"] != value:
                        failures.append(f"{key}: {r.status_code} {r.text[:200]}")
                    reads += 1
                r = await c.get(f"/internal/toolbelt/accounts/{ACCOUNT}/certificates/crm")
                if r.status_code != 200 or r.json()["key_pem"] != client_cert.key_pem:
                    failures.append(f"certificate: {r.status_code} {r.text[:200]}")

    progress: list[tuple[str, int, int]] = []
    reading = asyncio.create_task(reader())
    try:
        args = argparse.Namespace(new_key=NEW, reseal_only=False, env_file=None, batch_size=2,
                                  reload_wait_s=2.5)
        report = await rotate_secrets_key(args, registry.settings,
                                          progress=lambda *p: progress.append(p))
    finally:
        stop.set()
        await reading
    print(f"rotation report: {json.dumps(report['tables'])}; {reads} reads during rotation")
    assert failures == []
    assert reads > 0
    assert report["key_id"] == key_id(NEW)
    assert report["tables"]["secrets"] == {"rows": 11, "resealed": 10, "failed": 1}
    assert report["tables"]["certificates"] == {"rows": 1, "resealed": 1, "failed": 0}
    assert progress[-1][0] == "certificates" and ("secrets", 11, 11) in progress
    # The env file now names the new key, with the old one retired.
    text = registry.env_file.read_text()
    assert f"FNBUS_SECRETS_KEY={NEW}" in text and OLD in text

    rows = await registry.db.fetch("SELECT key, value_enc FROM secrets WHERE key <> 'lost'")
    assert {bytes(r["value_enc"][:14]) for r in rows} == {f"fnk1:{key_id(NEW)}:".encode()}
    cert = await registry.db.fetchrow("SELECT cert_enc, key_enc, ca_enc FROM certificates")
    assert {bytes(v[:14]) for v in cert.values()} == {f"fnk1:{key_id(NEW)}:".encode()}
    status = report["status"]
    assert status["old_keys_safe_to_drop"] == [key_id(OLD)]
    assert status["values_not_under_current_key"] == 1  # the lost one, shown by its id
    assert {k["key_id"]: k["state"] for k in status["keys"]}[key_id(LOST)] == "unknown"

    # The operator drops the old key; the registry follows its env file, no restart.
    _write_env(registry.env_file, NEW, [])
    await asyncio.sleep(1.5)
    async with registry.client() as c:
        for key, value in values.items():
            r = await _read_secret(c, key)
            assert r.status_code == 200 and r.json()["value"] == value, r.text
        r = await c.get(f"/internal/toolbelt/accounts/{ACCOUNT}/certificates/crm")
        assert r.status_code == 200 and r.json()["cert_pem"] == client_cert.cert_pem
        # The value under a key neither current nor retired: a clear error, no crash.
        r = await _read_secret(c, "lost")
        assert r.status_code == 500
        error = r.json()["error"]
        assert error["code"] == "secrets_key_unknown"
        assert key_id(LOST) in error["message"] and "gone" not in r.text
        assert (await c.get("/healthz")).status_code == 200
        # New writes use the new key.
        r = await c.put(f"/internal/toolbelt/accounts/{ACCOUNT}/secrets/api-key-1",
                        json={"value": "rewritten"})
        assert r.status_code == 200, r.text
    sealed = await registry.db.fetchval(
        "SELECT value_enc FROM secrets WHERE key = 'api-key-1'")
    assert bytes(sealed).startswith(f"fnk1:{key_id(NEW)}:".encode())


async def test_listing_secrets_does_not_open_values(registry: Registry) -> None:
    async with registry.client() as c:
        r = await c.post("/internal/accounts", json={"id": "keyring2", "name": "keyring2",
                                                     "admin_name": "admin"})
        assert r.status_code == 201, r.text
        r = await c.post("/internal/accounts/keyring2/secrets", json={"key": "fine", "value": "v"})
        assert r.status_code == 201, r.text
        lost = Fernet(base64.urlsafe_b64encode(hashlib.sha256(LOST.encode()).digest())).encrypt(b"x")
        await registry.db.execute(
            "INSERT INTO secrets (account_id, key, value_enc) VALUES ('keyring2', 'lost', $1)",
            b"fnk1:" + key_id(LOST).encode() + b":" + lost)
        r = await c.get("/internal/accounts/keyring2/secrets")
        assert r.status_code == 200, r.text
        assert sorted(s["key"] for s in r.json()) == ["fine", "lost"]
