"""Fixtures' helpers for the management API tests: accounts and users through real services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from fnbus.config import Settings


@dataclass
class Account:
    id: str
    admin_key: str
    admin_user_id: str
    gateway: str

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"{self.gateway}/api/v1/accounts/{self.id}",
            headers={"Authorization": f"Bearer {key or self.admin_key}"}, timeout=30)


async def create_account(settings: Settings, gateway: str, account_id: str, *,
                         provision: bool = True, roles: list[str] | None = None) -> Account:
    headers = {"Authorization": f"Bearer {settings.service_token}"}
    async with httpx.AsyncClient(base_url=settings.registry_url, headers=headers) as c:
        body: dict[str, Any] = {"id": account_id, "name": account_id, "admin_name": "admin"}
        if roles is not None:
            body["roles"] = roles
        r = await c.post("/internal/accounts", json=body)
        assert r.status_code == 201, r.text
        created = r.json()
    account = Account(account_id, created["api_key"], created["user_id"], gateway)
    if provision:
        async with account.client() as c:
            r = await c.post("/terms-of-use", json={"accept": True})
            assert r.status_code == 200, r.text
    return account


async def user_key(account: Account, name: str, roles: list[str]) -> str:
    async with account.client() as c:
        r = await c.post("/users", json={"name": name, "roles": roles})
        assert r.status_code == 201, r.text
        r = await c.post(f"/users/{r.json()['id']}/api-keys")
        assert r.status_code == 201, r.text
        return str(r.json()["secret"])


HELLO = "function lambda(input, callback) {\n  callback(null, `Hello World`);\n}\n"
