"""The Conversation Context store's rules and bodies (gateway ↔ registry ↔ invoker).

The store keeps, per account, namespaces of properties grouped by session, as
the Conversation Context Service V1 that LivePerson Functions' toolbelt talks to.
Its rules, in one place:

1. Namespace names: ``[A-Za-z0-9_-]``, 1 to 100 characters. ``faas`` and names
   starting with ``__`` are reserved for the platform (the original keeps
   built-in namespaces that a client may not create or delete).
2. Session ids: 1 to 256 characters, none of ``/ ? # % \\`` and no control
   characters (they are URL path segments); a missing session id means the
   session ``__default__``.
3. Property names: 1 to 200 characters, same characters as session ids.
4. Values: any JSON, at most 64 KiB each once serialised; at most 100
   properties per write.
5. TTL in seconds (1 s to 10 years): per write, else the namespace's default,
   else none. Each write of a property restarts its clock. An expired property
   reads as absent and is purged in the background.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_SESSION = "__default__"
MAX_NAMESPACE_CHARS = 100
MAX_SESSION_CHARS = 256
MAX_PROPERTY_NAME_CHARS = 200
MAX_VALUE_BYTES = 64 * 1024
MAX_PROPERTIES_PER_WRITE = 100
MAX_NAMESPACES_PER_ACCOUNT = 1_000
MAX_TTL_S = 10 * 365 * 24 * 3600
RESERVED_NAMESPACES = frozenset({"faas"})

NAMESPACE_PATTERN = rf"^[A-Za-z0-9_-]{{1,{MAX_NAMESPACE_CHARS}}}$"
# Path segments on the HTTP API: no characters that a URL path gives a meaning to.
_SEGMENT = r"[^/?#%\\\x00-\x1f\x7f]"
SESSION_PATTERN = rf"^{_SEGMENT}{{1,{MAX_SESSION_CHARS}}}$"
PROPERTY_PATTERN = rf"^{_SEGMENT}{{1,{MAX_PROPERTY_NAME_CHARS}}}$"
_NAMESPACE = re.compile(NAMESPACE_PATTERN)
_PROPERTY = re.compile(PROPERTY_PATTERN)

NamespacePath = Annotated[str, Path(pattern=NAMESPACE_PATTERN, description="namespace name")]
SessionPath = Annotated[str, Path(pattern=SESSION_PATTERN,
                                  description=f"session id; `{DEFAULT_SESSION}` is the default")]
PropertyPath = Annotated[str, Path(pattern=PROPERTY_PATTERN, description="property name")]
TtlSeconds = Annotated[int, Field(ge=1, le=MAX_TTL_S, description="time to live in seconds")]


def check_namespace(name: str, *, creating: bool = False) -> str:
    """Raise ValueError with the rule when ``name`` is not a valid (creatable) namespace."""
    if not isinstance(name, str) or not _NAMESPACE.match(name):
        raise ValueError(f"a namespace name is 1 to {MAX_NAMESPACE_CHARS} characters of "
                         "A-Z, a-z, 0-9, _ and -")
    if creating and (name in RESERVED_NAMESPACES or name.startswith("__")):
        raise ValueError(f"namespace {name!r} is reserved for the platform")
    return name


def value_json(value: Any, name: str) -> str:
    """The value serialised for storage; ValueError when it is not JSON or too large."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError(f"property {name!r}: the value is not JSON") from None
    if len(text.encode()) > MAX_VALUE_BYTES:
        raise ValueError(f"property {name!r}: the value is larger than {MAX_VALUE_BYTES} bytes "
                         "once serialised to JSON")
    return text


class NamespaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="A-Z, a-z, 0-9, _ and -, at most 100 characters")
    ttl_s: TtlSeconds | None = Field(
        default=None, description="default TTL of every property written without its own")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_namespace(value, creating=True)


class NamespaceOut(BaseModel):
    name: str
    ttl_s: int | None = Field(description="default TTL of property writes; null = permanent")
    created_ms: int


class PropertiesWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    properties: dict[str, Any] = Field(description="name → any JSON value (≤ 64 KiB each)")
    ttl_s: TtlSeconds | None = Field(
        default=None, description="TTL of these properties; default: the namespace's")

    @field_validator("properties")
    @classmethod
    def _properties(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("properties must name at least one property")
        if len(value) > MAX_PROPERTIES_PER_WRITE:
            raise ValueError(f"at most {MAX_PROPERTIES_PER_WRITE} properties per write")
        for name, item in value.items():
            if not _PROPERTY.match(name):
                raise ValueError(f"property name {name[:40]!r} must be 1 to "
                                 f"{MAX_PROPERTY_NAME_CHARS} characters without / ? # % \\ or "
                                 "control characters")
            value_json(item, name)
        return value


class PropertyOut(BaseModel):
    name: str
    value: Any = Field(description="the stored JSON value")
