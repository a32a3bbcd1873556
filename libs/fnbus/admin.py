"""Operator commands (``fnbus admin …``), spoken to the registry's internal API."""

from __future__ import annotations

import argparse
from typing import Any

import httpx

from fnbus.config import Settings
from fnbus.permissions import Role


def add_parser(sub: Any) -> None:
    admin = sub.add_parser("admin", help="operator commands (accounts)")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    p = admin_sub.add_parser("create-account", help="create an account and its first admin; "
                             "prints the admin's API key (shown once)")
    p.add_argument("account_id", help="account id (the original platform's brand id)")
    p.add_argument("--name", default=None, help="display name (default: the id)")
    p.add_argument("--admin-name", default="admin")
    p.add_argument("--roles", default=",".join(r.value for r in Role),
                   help="comma-separated roles of the first user (default: all three)")
    p.add_argument("--accept-terms", action="store_true",
                   help="also accept the terms of use (provision the account)")
    from fnbus.cli import _admin

    admin.set_defaults(func=_admin)


async def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {settings.service_token}"}
    async with httpx.AsyncClient(base_url=settings.registry_url, headers=headers, timeout=30) as c:
        if args.admin_command == "create-account":
            roles = [r.strip() for r in args.roles.split(",") if r.strip()]
            r = await c.post("/internal/accounts", json={
                "id": args.account_id, "name": args.name or args.account_id,
                "admin_name": args.admin_name, "roles": roles})
            _raise(r)
            result: dict[str, Any] = r.json()
            if args.accept_terms:
                r = await c.post(f"/internal/accounts/{args.account_id}/terms-of-use",
                                 json={"accept": True})
                _raise(r)
                result["provisioned"] = True
            return result
    raise SystemExit(f"unknown admin command {args.admin_command}")


def _raise(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            err = response.json()["error"]
            message = f"{err['code']}: {err['message']}"
        except (ValueError, KeyError, TypeError):
            message = response.text
        raise SystemExit(f"registry answered {response.status_code}: {message}")
