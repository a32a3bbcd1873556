"""Dependencies of the services' internal HTTP APIs (called by the gateway and the CLI).

Every internal call carries ``Authorization: Bearer <service token>``. Account-
scoped calls also carry the caller's identity headers (:mod:`fnbus.identity`);
the gateway has checked the permission, the service checks that the identity
belongs to the account in the path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from pydantic import BaseModel

from fnbus import identity as ident
from fnbus.errors import Forbidden, Unauthorized


def require_service(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """The caller is another fnbus service (the shared service token)."""
    scheme, _, token = (authorization or "").partition(" ")
    expected = request.app.state.settings.service_token
    if scheme.lower() != "bearer" or not ident.constant_time_equal(token.strip(), expected):
        raise Unauthorized("internal API: service token required", code="service_token_required")


class Caller(BaseModel):
    account_id: str
    user_id: str | None


def caller(
    account_id: str,
    x_fnbus_account: Annotated[str | None, Header()] = None,
    x_fnbus_user: Annotated[str | None, Header()] = None,
) -> Caller:
    if x_fnbus_account is not None and x_fnbus_account != account_id:
        raise Forbidden("this identity belongs to another account", code="wrong_account")
    return Caller(account_id=account_id, user_id=x_fnbus_user)


Who = Annotated[Caller, Depends(caller)]
