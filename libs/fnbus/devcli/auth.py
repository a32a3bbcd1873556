"""``fnbus login`` and ``fnbus logout``."""

from __future__ import annotations

from typing import Annotated

import typer

from fnbus.devcli import context
from fnbus.devcli.client import Api, fetch_token
from fnbus.devcli.config import Profile, remove_profile, save_profile
from fnbus.devcli.errors import CliError
from fnbus.devcli.output import console

ProfileOpt = Annotated[str | None, typer.Option(
    "--profile", help="profile to write (default: the global --profile, else 'default')")]


def login(
    profile_name: ProfileOpt = None,
    url: Annotated[str, typer.Option(help="the gateway", envvar="FNBUS_URL")] = "http://127.0.0.1:8080",
    account: Annotated[str, typer.Option(help="account id", envvar="FNBUS_ACCOUNT")] = "demo",
    api_key: Annotated[str | None, typer.Option(help="an API key (fnb_…)", envvar="FNBUS_API_KEY")] = None,
    client_id: Annotated[str | None, typer.Option(help="OAuth client id")] = None,
    client_secret: Annotated[str | None, typer.Option(help="OAuth client secret",
                                                      envvar="FNBUS_CLIENT_SECRET")] = None,
) -> None:
    """Check the credentials against the account and keep them in a profile (mode 0600)."""
    if profile_name is not None:
        context.selected["profile"] = profile_name
    if api_key is None and client_id is None:
        api_key = typer.prompt("API key", hide_input=True)
    if client_id is not None:
        if client_secret is None:
            client_secret = typer.prompt("client secret", hide_input=True)
        token, expires = fetch_token(url, client_id, client_secret)
        profile = Profile(url=url, account=account, client_id=client_id,
                          client_secret=client_secret, token=token, token_expires_at=expires)
    elif api_key:
        profile = Profile(url=url, account=account, api_key=api_key)
    else:
        raise CliError("give --api-key or --client-id")
    with Api(profile) as api:
        api.lambdas()  # proves the key works for this account (401/403 → exit 4)
    path = save_profile(context.selected["profile"], profile)
    console.print(f"logged in to {url} as account {account} "
                  f"(profile {context.selected['profile']!r}, {path})")


def logout(profile_name: ProfileOpt = None) -> None:
    """Forget the selected profile's credentials."""
    if profile_name is not None:
        context.selected["profile"] = profile_name
    name = context.selected["profile"]
    if remove_profile(name):
        console.print(f"logged out: profile {name!r} removed")
    else:
        console.print(f"profile {name!r} was not logged in")
