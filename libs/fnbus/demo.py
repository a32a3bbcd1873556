"""Create the demo account once and record it in ``$FNBUS_HOME/credentials.json``.

Run by ``make up`` after the services are healthy. A second run checks that the
recorded key still works (through the gateway) and reuses it.
"""

from __future__ import annotations

import json
import os
import sys

import httpx

from fnbus.config import Settings

DEMO_ACCOUNT = "demo"


def _key_works(settings: Settings, creds: dict[str, str]) -> bool:
    try:
        r = httpx.get(f"{settings.public_url}/api/v1/accounts/{creds['account_id']}",
                      headers={"Authorization": f"Bearer {creds['api_key']}"}, timeout=10)
    except (httpx.HTTPError, KeyError):
        return False
    return r.status_code == 200


def main() -> int:
    settings = Settings()
    path = settings.home / "credentials.json"
    creds: dict[str, str] = {}
    if path.exists():
        try:
            creds = json.loads(path.read_text())
        except ValueError:
            creds = {}
    if not (creds and _key_works(settings, creds)):
        headers = {"Authorization": f"Bearer {settings.service_token}"}
        with httpx.Client(base_url=settings.registry_url, headers=headers, timeout=30) as client:
            account = creds.get("account_id", DEMO_ACCOUNT)
            r = client.post("/internal/accounts", json={"id": account, "name": "Demo account",
                                                         "admin_name": "admin"})
            if r.status_code == 409:
                # The account exists but our record of its key is lost: add a key.
                users = client.get(f"/internal/accounts/{account}/users").json()
                admin = next(u for u in users if u["name"] == "admin")
                r = client.post(f"/internal/accounts/{account}/users/{admin['id']}/api-keys")
                r.raise_for_status()
                key = r.json()["secret"]
            else:
                r.raise_for_status()
                key = r.json()["api_key"]
            client.post(f"/internal/accounts/{account}/terms-of-use",
                        json={"accept": True}).raise_for_status()
        creds = {"gateway_url": settings.public_url, "account_id": account, "api_key": key,
                 "console_url": f"{settings.public_url}/console/"}
        settings.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds, f, indent=2)
    print(f"  console:    {creds.get('console_url', settings.public_url)}")
    print(f"  API:        {settings.public_url}/api/v1   (OpenAPI: {settings.public_url}/openapi.json)")
    print(f"  account:    {creds['account_id']}")
    print(f"  admin key:  {creds['api_key']}")
    print(f"  saved in:   {path}")
    if settings.egress_exempt_cidrs:
        print(f"  egress:     lambdas may reach {', '.join(settings.egress_exempt_cidrs)} "
              "(development exemption; the platform's own ports stay refused)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
