"""Request and response bodies of the management API (gateway ↔ registry, gateway ↔ scheduler).

The gateway validates with these models and publishes them in /openapi.json; the
registry validates again, because it trusts the gateway's identity but not its
bodies.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fnbus.dependencies import check_dependencies
from fnbus.schemas import Runtime

# The original platform's limit on code size.
MAX_CODE_CHARS = 100_000
MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 1_000
MAX_ENV_VARS = 50
MAX_ENV_VALUE_CHARS = 4_096
MAX_DEPENDENCIES = 50
MAX_SKILLS = 50
# Request bodies above this are refused with 413 before they are parsed.
MAX_MANAGEMENT_BODY_BYTES = 1024 * 1024

# Letters (any script), digits, space, and - _ . — no quotes, semicolons or slashes.
_NAME = re.compile(r"^[^\W_][\w .\-]*$", re.UNICODE)
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_PACKAGE = re.compile(r"^(@[a-z0-9][a-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]{0,213}$")
_VERSION_SPEC = re.compile(r"^[A-Za-z0-9.^~*<>=!, |+-]{1,64}$")
_RESERVED_ENV = {"BRAND_ID"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def validate_name(value: str, what: str = "name") -> str:
    if not value or len(value) > MAX_NAME_CHARS:
        raise ValueError(f"{what} must be 1 to {MAX_NAME_CHARS} characters")
    if not _NAME.match(value):
        raise ValueError(
            f"{what} may contain letters, digits, spaces and - _ . and must start with a "
            "letter or digit"
        )
    return value


def _check_env(env: dict[str, str]) -> dict[str, str]:
    if len(env) > MAX_ENV_VARS:
        raise ValueError(f"at most {MAX_ENV_VARS} environment variables")
    for key, value in env.items():
        if not _ENV_KEY.match(key):
            raise ValueError(f"environment variable name {key!r} must match [A-Za-z_][A-Za-z0-9_]*")
        if key in _RESERVED_ENV:
            raise ValueError(f"{key} is set by the platform (the account id) and cannot be overridden")
        if len(value) > MAX_ENV_VALUE_CHARS:
            raise ValueError(f"environment variable {key} is longer than {MAX_ENV_VALUE_CHARS} characters")
    return env


def _check_dependencies(deps: dict[str, str]) -> dict[str, str]:
    if len(deps) > MAX_DEPENDENCIES:
        raise ValueError(f"at most {MAX_DEPENDENCIES} dependencies")
    check_dependencies(deps)  # git, URL, path and tarball specs, with the reason
    for name, spec in deps.items():
        if not _PACKAGE.match(name):
            raise ValueError(f"dependency name {name!r} is not a valid package name")
        if not _VERSION_SPEC.match(spec):
            raise ValueError(f"dependency {name}: version {spec!r} is not a valid version range")
    return deps


class LambdaCreate(Strict):
    name: str = Field(description="unique within the account")
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    runtime: Runtime = Runtime.NODEJS
    event_id: str | None = Field(default=None, description="event from the catalogue; null = none")
    skills: list[str] = Field(default_factory=list, max_length=MAX_SKILLS,
                              description="skill filter (messaging events only)")
    template_id: str | None = Field(default=None, description="start from this built-in template")
    code: str | None = Field(default=None, description="code; defaults to the template's")
    env: dict[str, str] = Field(default_factory=dict, description="environment variables")
    dependencies: dict[str, str] = Field(default_factory=dict, description="package → version")

    _name = field_validator("name")(validate_name)
    _env = field_validator("env")(_check_env)
    _deps = field_validator("dependencies")(_check_dependencies)


class LambdaUpdate(Strict):
    """Fields left out keep their value."""

    name: str | None = None
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_CHARS)
    event_id: str | None = None
    skills: list[str] | None = Field(default=None, max_length=MAX_SKILLS)
    code: str | None = None
    env: dict[str, str] | None = None
    dependencies: dict[str, str] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return None if v is None else _check_env(v)

    @field_validator("dependencies")
    @classmethod
    def _deps(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return None if v is None else _check_dependencies(v)


class LambdaOut(BaseModel):
    id: str
    account_id: str
    name: str
    description: str
    runtime: Runtime
    event_id: str | None
    skills: list[str]
    template_id: str | None
    state: str = Field(description="Draft, Productive or Modified")
    version: int = Field(description="current (latest saved) version")
    deployed_version: int | None
    deployment_state: str | None = Field(description="Deploying, Deployed, Failed, Undeployed")
    deployment_cause: str | None
    code: str | None = None
    env: dict[str, str] | None = None
    dependencies: dict[str, str] | None = None
    created_ms: int
    updated_ms: int


class VersionOut(BaseModel):
    version: int
    code: str
    env: dict[str, str]
    dependencies: dict[str, str]
    created_ms: int


class DeploymentOut(BaseModel):
    id: str
    lambda_id: str
    version: int
    action: str
    state: str
    image: str | None
    cause: str | None
    created_ms: int
    updated_ms: int


class UserCreate(Strict):
    name: str
    roles: list[str] = Field(min_length=1, description="FaaS-Admin, FaaS-Developer, FaaS-Invocation")

    _name = field_validator("name")(validate_name)


class UserUpdate(Strict):
    roles: list[str] = Field(min_length=1)


class UserOut(BaseModel):
    id: str
    account_id: str
    name: str
    roles: list[str]
    created_ms: int


class CredentialOut(BaseModel):
    id: str
    user_id: str
    kind: str = Field(description="api_key or oauth_client")
    prefix: str = Field(description="first characters of the key, or the OAuth client id")
    created_ms: int
    revoked_ms: int | None
    secret: str | None = Field(default=None, description="shown once, at creation")


class TermsAcceptance(Strict):
    accept: bool = Field(description="must be true")


class AccountOut(BaseModel):
    id: str
    name: str
    provisioned: bool
    terms_accepted_ms: int | None


class SecretCreate(Strict):
    key: str = Field(pattern=r"^[A-Za-z0-9_-]{1,100}$")
    value: str = Field(max_length=16_384)


class SecretUpdate(Strict):
    value: str = Field(max_length=16_384)


#: Certificate names follow the secret-key rule, so they are safe in paths and logs.
CERTIFICATE_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
#: Enough for a leaf with a long chain; far below the management body limit.
MAX_PEM_CHARS = 64 * 1024


class CertificateCreate(BaseModel):
    """Upload body. The fields are PEM text; ``cert`` may carry the chain after the leaf."""

    model_config = {"extra": "forbid"}

    name: str = Field(pattern=CERTIFICATE_NAME_PATTERN, description="what the lambda passes to MTLSClient")
    cert: str = Field(max_length=MAX_PEM_CHARS, description="PEM client certificate (leaf first)")
    key: str = Field(max_length=MAX_PEM_CHARS, description="PEM private key, unencrypted")
    ca: str | None = Field(default=None, max_length=MAX_PEM_CHARS,
                           description="PEM CA certificate(s) to verify the server with")


class CertificateOut(BaseModel):
    """What the API shows of a certificate: never the material."""

    name: str
    subject: str
    issuer: str
    not_after_ms: int = Field(description="expiry, epoch milliseconds")
    fingerprint: str = Field(description="SHA-256 of the certificate (DER), hex pairs")
    has_ca: bool
    created_ms: int


class SecretOut(BaseModel):
    key: str
    value: str = Field(description="always obfuscated")
    is_default: bool
    updated_ms: int


class DomainCreate(Strict):
    domain: str = Field(description="host name; one leading '*.' wildcard allowed")


class DomainOut(BaseModel):
    domain: str
    created_ms: int


class EventOut(BaseModel):
    id: str
    name: str
    limit: int | None
    skill_filter: bool
    used: int | None = None


class TemplateOut(BaseModel):
    id: str
    name: str
    event_id: str | None
    runtime: str
    code: str
    sample_payload: dict[str, Any]
    description: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    error: ErrorBody


# -- schedules (gateway ↔ scheduler) ------------------------------------------------------

SCHEDULE_PREVIEW_DEFAULT = 5
SCHEDULE_PREVIEW_MAX = 50


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lambda_id: str = Field(description="a Productive (or Modified) lambda of the account")
    cron: str = Field(description='five fields, UTC, at most once a minute, e.g. "*/5 * * * *"')
    payload: Any = Field(default=None, description="the lambda's input payload; ≤ 8,000 "
                                                   "characters as JSON")
    enabled: bool = True


class ScheduleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lambda_id: str | None = None
    cron: str | None = None
    payload: Any = Field(default=None, description="applied only when present (null is a value)")
    enabled: bool | None = None


class ScheduleOut(BaseModel):
    id: str
    account_id: str
    lambda_id: str
    lambda_name: str | None = Field(description="None once the lambda is gone")
    cron: str
    payload: Any
    enabled: bool
    next_invocation_ms: int | None = Field(description="next due minute, UTC epoch ms; None while disabled")
    last_invocation_ms: int | None = Field(description="due minute of the last fire")
    last_state: Literal["success", "failure"] | None = Field(
        description="result of the last finished invocation")
    last_outcome: str | None = Field(description="SUCCEEDED, CODING_FAILURE, PLATFORM_FAILURE, TIMEOUT, UNKNOWN")
    last_error: dict[str, Any] | None
    last_activation_id: str | None
    last_run_ms: int | None = Field(description="when the invocation whose result is shown started")
    created_ms: int
    updated_ms: int


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cron: str
    count: int = Field(default=SCHEDULE_PREVIEW_DEFAULT, ge=1, le=SCHEDULE_PREVIEW_MAX)
    after_ms: int | None = Field(default=None, description="default: now")


class PreviewOut(BaseModel):
    cron: str = Field(description="normalised")
    next_ms: list[int] = Field(description="next run times, UTC epoch ms")
    next: list[str] = Field(description="the same as ISO 8601 UTC")
