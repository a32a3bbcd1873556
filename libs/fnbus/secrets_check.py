"""Refuse to run with development secrets where they would protect something real.

The service token, the JWT signing secret and the secrets key default to a
built-in string so that a checkout runs without setup. That string is public
(it is in this repository), so a service that anyone else can reach, or that
says it is production, must not start with it:

1. A secret is *weak* when it is empty, equals the built-in development value,
   or is shorter than :data:`MIN_SECRET_CHARS`.
2. A deployment is *exposed* when ``settings.env == "production"`` or
   ``settings.bind_host`` is not a loopback address (``0.0.0.0`` and ``::``
   listen on every interface, so they count as exposed).
3. An exposed service with a weak secret raises :class:`InsecureSecrets` at
   creation, naming every weak setting (never its value) and how to fix it.
   A loopback development stack only logs a warning.
"""

from __future__ import annotations

import ipaddress
import logging

from fnbus.config import DEFAULT_DEV_SECRET, Settings

log = logging.getLogger(__name__)

# 16 random bytes in URL-safe base64 are 22 characters; anything shorter is a password, not a key.
MIN_SECRET_CHARS = 22
SECRET_SETTINGS = ("service_token", "jwt_secret", "secrets_key")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class InsecureSecrets(RuntimeError):
    """A service would listen beyond loopback (or in production) with a weak secret."""


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def weak_secrets(settings: Settings) -> list[str]:
    """Names of the secret settings that are empty, built-in or too short."""
    weak = []
    for name in SECRET_SETTINGS:
        value = str(getattr(settings, name, "") or "")
        if not value.strip() or value == DEFAULT_DEV_SECRET or len(value) < MIN_SECRET_CHARS:
            weak.append(name)
    return weak


def exposed(settings: Settings) -> bool:
    return settings.env.strip().lower() == "production" or not is_loopback(settings.bind_host)


def check_secrets(settings: Settings, service: str) -> None:
    """Raise :class:`InsecureSecrets` for an exposed service with weak secrets (contract above)."""
    weak = weak_secrets(settings)
    if not weak:
        return
    names = ", ".join(f"FNBUS_{n.upper()}" for n in weak)
    if exposed(settings):
        why = ("FNBUS_ENV=production" if settings.env.strip().lower() == "production"
               else f"it listens on {settings.bind_host}, not a loopback address")
        raise InsecureSecrets(
            f"{service} refuses to start: {names} is empty, the built-in development value or "
            f"shorter than {MIN_SECRET_CHARS} characters, and {why}. Set each to a random value "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`); `make up` "
            "writes such values into .fnbus/secrets.env.")
    log.warning("development secrets in use (loopback only)",
                extra={"service": service, "settings": names})
