"""The permission matrix of LivePerson Functions, as one table.

Rows are permissions (component × action), columns the three FaaS roles. The
gateway looks every request's permission up here; nothing else decides access.
"""

from __future__ import annotations

from enum import Enum


class Role(str, Enum):
    ADMIN = "FaaS-Admin"
    DEVELOPER = "FaaS-Developer"
    INVOCATION = "FaaS-Invocation"


class Permission(str, Enum):
    LAMBDA_READ = "lambda.read"
    LAMBDA_WRITE = "lambda.create-edit-delete"
    LAMBDA_DEPLOY = "lambda.deploy"
    LAMBDA_INVOKE = "lambda.invoke"
    WHITELIST_WRITE = "whitelist.create-edit-delete"
    WHITELIST_READ = "whitelist.read"
    SECRET_WRITE = "secret.create-edit-delete"
    SECRET_READ = "secret.read"  # values are always obfuscated
    SCHEDULE_READ = "schedule.read"
    SCHEDULE_WRITE = "schedule.create-edit-delete"
    EMAIL_REPORT_SETTINGS_WRITE = "emailReport.settings.create-edit-delete"
    EMAIL_REPORT_RECIPIENTS_WRITE = "emailReport.recipients.create-delete"
    EMAIL_REPORT_READ = "emailReport.read"
    LOGS_READ = "logs.read"
    LOGS_CREATE = "logs.create"
    REPORTING_READ = "reporting.read"
    # Beyond the original matrix (which delegates these to the account's own
    # user management): managing users, their keys, and accepting the terms.
    ACCOUNT_ADMIN = "account.admin"
    ACCOUNT_READ = "account.read"
    # Client certificates for the toolbelt's MTLSClient (their keys are as sensitive
    # as secrets, so only administrators see even the listing).
    CERTIFICATE_WRITE = "certificate.create-delete"
    CERTIFICATE_READ = "certificate.read"
    # The Conversation Context store's public API (lambdas reach it through the
    # toolbelt without a permission): bots and external systems read and write
    # conversation data as they invoke; administrators configure, they do not.
    CONTEXT_READ = "context.read"
    CONTEXT_WRITE = "context.create-edit-delete"


_A, _D, _I = Role.ADMIN, Role.DEVELOPER, Role.INVOCATION

MATRIX: dict[Permission, frozenset[Role]] = {
    Permission.LAMBDA_READ: frozenset({_A, _D, _I}),
    Permission.LAMBDA_WRITE: frozenset({_D}),
    Permission.LAMBDA_DEPLOY: frozenset({_D}),
    Permission.LAMBDA_INVOKE: frozenset({_D, _I}),
    Permission.WHITELIST_WRITE: frozenset({_A}),
    Permission.WHITELIST_READ: frozenset({_A, _D}),
    Permission.SECRET_WRITE: frozenset({_A}),
    Permission.SECRET_READ: frozenset({_A, _D}),
    Permission.SCHEDULE_READ: frozenset({_A, _D, _I}),
    Permission.SCHEDULE_WRITE: frozenset({_A, _D}),
    Permission.EMAIL_REPORT_SETTINGS_WRITE: frozenset({_A}),
    Permission.EMAIL_REPORT_RECIPIENTS_WRITE: frozenset({_A, _D}),
    Permission.EMAIL_REPORT_READ: frozenset({_A, _D, _I}),
    Permission.LOGS_READ: frozenset({_A, _D, _I}),
    Permission.LOGS_CREATE: frozenset({_A}),
    Permission.REPORTING_READ: frozenset({_A, _D, _I}),
    Permission.ACCOUNT_ADMIN: frozenset({_A}),
    Permission.ACCOUNT_READ: frozenset({_A, _D, _I}),
    Permission.CERTIFICATE_WRITE: frozenset({_A}),
    Permission.CERTIFICATE_READ: frozenset({_A}),
    Permission.CONTEXT_READ: frozenset({_A, _D, _I}),
    Permission.CONTEXT_WRITE: frozenset({_D, _I}),
}

assert set(MATRIX) == set(Permission), "every permission needs a row"

# What `fnbus admin create-account` gives the first user: the whole matrix, as
# an administrator profile has on the original platform.
ALL_ROLES = frozenset(Role)

# OAuth scope the original platform's client-credentials flow asks for.
INVOKE_SCOPE = "faas.lambda.invoke"


def allowed(roles: frozenset[Role] | set[Role], permission: Permission) -> bool:
    return bool(MATRIX[permission] & set(roles))


def parse_roles(values: list[str] | tuple[str, ...]) -> frozenset[Role]:
    """Role names to roles; unknown names raise ValueError with the valid ones."""
    roles = set()
    for value in values:
        try:
            roles.add(Role(value))
        except ValueError:
            valid = ", ".join(r.value for r in Role)
            raise ValueError(f"unknown role {value!r}; valid roles: {valid}") from None
    return frozenset(roles)
