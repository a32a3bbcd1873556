"""Every public endpoint, every role: allowed or 403, as the matrix says (real services)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from fnbus.config import Settings
from fnbus.permissions import Permission, Role, allowed
from services.gateway import (
    certificates,
    context,
    events,
    invoke,
    lp_compat,
    management,
    observe,
    reports,
    schedules,
)
from services.gateway.app import create_app
from tests.integration.mgmt_support import HELLO, Account, create_account, user_key

pytestmark = pytest.mark.integration

PATH_VALUES = {
    "lambda_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "key_id": str(uuid.uuid4()),
    "key": "some-secret", "domain": "example.org", "template_id": "hello-world",
    "activation_id": str(uuid.uuid4()),
}


class _Values(dict[str, str]):
    """Path parameters; ones this test does not know get a fresh uuid (an unknown id)."""

    def __missing__(self, key: str) -> str:
        return str(uuid.uuid4())


def _bodies(tag: str) -> dict[tuple[str, str], Any]:
    return {
        ("POST", "/lambdas"): {"name": f"perm-{tag}", "code": HELLO},
        ("PATCH", "/lambdas/{lambda_id}"): {"description": "x"},
        ("POST", "/users"): {"name": f"user-{tag}", "roles": ["FaaS-Invocation"]},
        ("PATCH", "/users/{user_id}"): {"roles": ["FaaS-Invocation"]},
        ("POST", "/secrets"): {"key": f"s-{tag}", "value": "v"},
        ("PUT", "/secrets/{key}"): {"value": "v"},
        ("POST", "/domains"): {"domain": f"{tag}.example.org"},
        ("POST", "/terms-of-use"): {"accept": True},
    }


def _routes() -> list[tuple[str, str, Permission]]:
    """(method, path, permission) of every public operation, from the served OpenAPI."""
    spec = create_app(Settings()).openapi()
    found = []
    for path, item in spec["paths"].items():
        if path.startswith("/api/"):
            for method, op in item.items():
                found.append((method.upper(), path, Permission(op["x-permission"])))
    return sorted(found)


ROUTES = _routes()


def test_every_route_names_a_permission_that_its_dependency_enforces() -> None:
    routers = [management.router, invoke.router, schedules.router, events.router,
               certificates.router, context.router, lp_compat.router, observe.router,
               reports.router]
    routes = [r for router in routers for r in router.routes
              if isinstance(r, APIRoute) and r.path.startswith("/api/")]
    assert len(routes) == len(ROUTES) >= 30
    for route in routes:
        declared = (route.openapi_extra or {})["x-permission"]
        enforced = [getattr(d.call, "permission", None) for d in route.dependant.dependencies]
        assert Permission(declared) in enforced, route.path


@pytest.fixture(scope="module")
async def role_keys(
    settings: Settings, gateway_url: str, run_id: str
) -> tuple[Account, dict[Role, str]]:
    account = await create_account(settings, gateway_url, f"perm{run_id}")
    keys = {role: await user_key(account, f"only-{role.value}", [role.value]) for role in Role}
    return account, keys


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
async def test_route_matrix(role: Role, role_keys: tuple[Account, dict[Role, str]]) -> None:
    account, keys = role_keys
    tag = role.value.lower()
    bodies = _bodies(tag)
    checked = 0
    async with account.client(keys[role]) as c:
        for method, path, permission in ROUTES:
            sub = path.removeprefix("/api/v1/accounts/{account_id}")
            url = account.gateway + path.format_map(
                _Values(account_id=account.id, accountId=account.id, **PATH_VALUES))
            body = bodies.get((method, sub))
            if body is None and method in ("POST", "PUT", "PATCH"):
                body = {}
            response = await c.request(method, url, json=body)
            if allowed({role}, permission):
                assert response.status_code != 403, (role, method, path, response.text)
            else:
                assert response.status_code == 403, (role, method, path, response.text)
                assert response.json()["error"]["code"] == "permission_denied"
            checked += 1
    assert checked == len(ROUTES) >= 30


async def test_openapi_describes_every_endpoint(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as c:
        spec = (await c.get("/openapi.json")).json()
    ops = [(m.upper(), p, op) for p, item in spec["paths"].items() for m, op in item.items()]
    public = [o for o in ops if o[1].startswith("/api/")]
    assert len(public) == len(ROUTES)
    for method, path, op in public:
        assert "x-permission" in op, (method, path)
        assert op["x-permission"] in op["description"]
        assert "403" in op["responses"] and "422" in op["responses"]
    assert "/oauth/token" in spec["paths"]
    assert "LambdaCreate" in spec["components"]["schemas"]
