"""The permission matrix against the LivePerson Functions documentation, cell by cell."""

from __future__ import annotations

import pytest

from fnbus.identity import Identity
from fnbus.permissions import MATRIX, Permission, Role, allowed, parse_roles
from services.gateway.auth import check

# Transcribed from the documentation's table: (component, action) → (Admin, Developer, Invocation).
DOC_TABLE = {
    "lambda.read": (True, True, True),
    "lambda.create-edit-delete": (False, True, False),
    "lambda.deploy": (False, True, False),
    "lambda.invoke": (False, True, True),
    "whitelist.create-edit-delete": (True, False, False),
    "whitelist.read": (True, True, False),
    "secret.create-edit-delete": (True, False, False),
    "secret.read": (True, True, False),
    "schedule.read": (True, True, True),
    "schedule.create-edit-delete": (True, True, False),
    "emailReport.settings.create-edit-delete": (True, False, False),
    "emailReport.recipients.create-delete": (True, True, False),
    "emailReport.read": (True, True, True),
    "logs.read": (True, True, True),
    "logs.create": (True, False, False),
    "reporting.read": (True, True, True),
}
ROLES = (Role.ADMIN, Role.DEVELOPER, Role.INVOCATION)
CELLS = [(perm, role, row[i]) for perm, row in DOC_TABLE.items() for i, role in enumerate(ROLES)]


@pytest.mark.parametrize("perm,role,expected", CELLS, ids=[f"{p}-{r.value}" for p, r, _ in CELLS])
def test_matrix_cell(perm: str, role: Role, expected: bool) -> None:
    assert allowed({role}, Permission(perm)) is expected


@pytest.mark.parametrize("perm,role,expected", CELLS, ids=[f"{p}-{r.value}" for p, r, _ in CELLS])
def test_gateway_check_enforces_cell(perm: str, role: Role, expected: bool) -> None:
    identity = Identity(account_id="a1", user_id="u1", roles=frozenset({role}))
    if expected:
        check(identity, "a1", Permission(perm))
    else:
        with pytest.raises(Exception) as info:
            check(identity, "a1", Permission(perm))
        assert getattr(info.value, "status", None) == 403
        assert info.value.code == "permission_denied"  # type: ignore[attr-defined]


def test_every_documented_permission_is_in_the_matrix() -> None:
    assert set(DOC_TABLE) <= {p.value for p in MATRIX}


def test_other_account_and_unprovisioned_are_refused_first() -> None:
    admin = Identity(account_id="a1", user_id="u", roles=frozenset(Role))
    with pytest.raises(Exception) as info:
        check(admin, "a2", Permission.LAMBDA_READ)
    assert info.value.code == "wrong_account"  # type: ignore[attr-defined]
    fresh = Identity(account_id="a1", user_id="u", roles=frozenset(Role), provisioned=False)
    with pytest.raises(Exception) as info:
        check(fresh, "a1", Permission.LAMBDA_READ)
    assert info.value.code == "account_not_provisioned"  # type: ignore[attr-defined]
    check(fresh, "a1", Permission.ACCOUNT_ADMIN, before_provisioning=True)


def test_scope_limits_a_jwt() -> None:
    dev = Identity(account_id="a1", user_id="u", roles=frozenset({Role.DEVELOPER}),
                   scopes=frozenset({"faas.lambda.invoke"}))
    check(dev, "a1", Permission.LAMBDA_INVOKE)
    with pytest.raises(Exception) as info:
        check(dev, "a1", Permission.LAMBDA_WRITE)
    assert info.value.code == "insufficient_scope"  # type: ignore[attr-defined]


def test_parse_roles_names_the_valid_ones() -> None:
    assert parse_roles(["FaaS-Admin"]) == frozenset({Role.ADMIN})
    with pytest.raises(ValueError, match="FaaS-Developer"):
        parse_roles(["Root"])
