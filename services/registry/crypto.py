"""Secret values at rest: Fernet (AES-128-CBC + HMAC) with a key derived from FNBUS_SECRETS_KEY."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet


class SecretBox:
    def __init__(self, key_material: str) -> None:
        key = base64.urlsafe_b64encode(hashlib.sha256(key_material.encode()).digest())
        self._fernet = Fernet(key)

    def seal(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def open(self, sealed: bytes) -> str:
        return self._fernet.decrypt(sealed).decode()


def obfuscate(value: str) -> str:
    """What a reader sees instead of a secret value."""
    return "*" * min(len(value), 8) if value else ""
