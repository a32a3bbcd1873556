"""Secret values at rest: a keyring of Fernet keys (AES-128-CBC + HMAC), rotated online.

Every value the registry stores sealed (secrets, client certificates) carries
the id of the key that sealed it, so the key can change without a stop
(docs/secrets-rotation.md). The contract:

1. A sealed value is ``fnk1:<key id>:<Fernet token>``. The key id is 8 hex
   characters of a SHA-256 over the key material with a fixed label in front:
   it names the key without revealing bits of the Fernet key (that key is the
   plain SHA-256 of the same material).
2. :meth:`SecretBox.seal` always uses the current key (``FNBUS_SECRETS_KEY``);
   :meth:`SecretBox.open` uses the key the value names, which may be the current
   one or a retired one (``FNBUS_SECRETS_OLD_KEYS``). A value naming a key the
   ring does not hold fails with :class:`UnknownSecretsKey`, naming the id.
3. Values sealed before key ids existed (a bare Fernet token) are opened by
   trying the current key, then each retired key.
4. A ring built with an ``env_file`` follows that file: at most once per
   ``reload_interval_s`` it looks at the file's size and modification time and,
   when they changed, takes the current and retired keys from it. A file that
   cannot be read or names no key leaves the ring as it was (logged). The file
   is followed only when it held the running key at start (or did not exist):
   a key given in the process environment is not overridden by a stale file.

Errors (both are :class:`~fnbus.errors.ApiError`, answered 500 with their code;
their messages never quote a value)::

    SealedValueError
     ├── UnknownSecretsKey   the value names a key that is neither current nor retired
     └── UnreadableValue     no key of the ring opens it, or it is not a sealed value
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken
from dotenv import dotenv_values

from fnbus.errors import ApiError

if TYPE_CHECKING:
    from fnbus.config import Settings

log = logging.getLogger(__name__)

#: Prefix of a sealed value that names its key; a bare Fernet token has none.
SEALED_PREFIX = b"fnk1:"
#: Length of a key id (hex characters).
KEY_ID_CHARS = 8
#: Bytes before the Fernet token: prefix, key id and the colon after it.
HEADER_BYTES = len(SEALED_PREFIX) + KEY_ID_CHARS + 1
#: How often a ring with an env file looks at it.
DEFAULT_RELOAD_INTERVAL_S = 1.0
#: Names of the two settings inside the env file (as fnbus.config reads them).
KEY_VARIABLE = "FNBUS_SECRETS_KEY"
OLD_KEYS_VARIABLE = "FNBUS_SECRETS_OLD_KEYS"


class SealedValueError(ApiError):
    """A stored value that cannot be opened; an operator's problem, not the caller's."""

    status = 500
    code = "sealed_value_unreadable"


class UnknownSecretsKey(SealedValueError):
    code = "secrets_key_unknown"


class UnreadableValue(SealedValueError):
    code = "sealed_value_unreadable"


def key_id(key_material: str) -> str:
    """The short public name of a key (contract point 1)."""
    return hashlib.sha256(b"fnbus secrets key id\0" + key_material.encode()).hexdigest()[:KEY_ID_CHARS]


def key_id_of(sealed: bytes) -> str | None:
    """The key id a sealed value names, or None for a value sealed before key ids."""
    if not sealed.startswith(SEALED_PREFIX) or sealed[HEADER_BYTES - 1:HEADER_BYTES] != b":":
        return None
    return sealed[len(SEALED_PREFIX):HEADER_BYTES - 1].decode("ascii", "replace")


def _fernet(key_material: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key_material.encode()).digest()))


@dataclass(frozen=True)
class Keys:
    """One generation of the ring: the current key and the ones that may still open values."""

    current_id: str
    fernets: dict[str, Fernet]  # key id -> Fernet; the current key first, then the retired ones

    @classmethod
    def build(cls, current: str, old: Sequence[str]) -> Keys:
        if not current:
            raise ValueError("the current secrets key is empty")
        fernets = {key_id(current): _fernet(current)}
        for material in old:
            if material:
                fernets.setdefault(key_id(material), _fernet(material))
        return cls(current_id=key_id(current), fernets=fernets)

    @property
    def old_ids(self) -> list[str]:
        return [k for k in self.fernets if k != self.current_id]


def read_env_file(path: Path) -> tuple[str, list[str]] | None:
    """The current and retired keys an env file names, or None when it names no current key.

    Raises ValueError when the retired keys are not a JSON list of strings.
    """
    values = dotenv_values(path)
    current = (values.get(KEY_VARIABLE) or "").strip()
    if not current:
        return None
    raw = (values.get(OLD_KEYS_VARIABLE) or "").strip()
    old: list[str] = []
    if raw:
        parsed = json.loads(raw)
        if not isinstance(parsed, list) or not all(isinstance(k, str) for k in parsed):
            raise ValueError(f"{OLD_KEYS_VARIABLE} must be a JSON list of strings")
        old = parsed
    return current, old


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class SecretBox:
    """The registry's keyring (contract in the module docstring)."""

    def __init__(self, key_material: str, old_keys: Sequence[str] = (), *,
                 env_file: Path | None = None,
                 reload_interval_s: float = DEFAULT_RELOAD_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = Keys.build(key_material, old_keys)
        self._clock = clock
        self._reload_interval_s = reload_interval_s
        self._env_file: Path | None = None
        self._stamp: tuple[int, int] | None = None
        self._checked_at = clock()
        if env_file is not None and self._file_follows(env_file, key_material):
            self._env_file = env_file
            self._stamp = _file_stamp(env_file)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The ring of a service: its settings' keys, following ``<home>/secrets.env``."""
        return cls(settings.secrets_key, settings.secrets_old_keys,
                   env_file=Path(settings.home) / "secrets.env")

    @staticmethod
    def _file_follows(path: Path, running_key: str) -> bool:
        if _file_stamp(path) is None:
            return True
        try:
            found = read_env_file(path)
        except (OSError, ValueError):
            return False
        return found is None or found[0] == running_key

    # -- the ring ---------------------------------------------------------------------
    @property
    def current_key_id(self) -> str:
        self._maybe_reload()
        return self._keys.current_id

    @property
    def old_key_ids(self) -> list[str]:
        self._maybe_reload()
        return self._keys.old_ids

    def knows(self, kid: str) -> bool:
        self._maybe_reload()
        return kid in self._keys.fernets

    def _maybe_reload(self) -> None:
        if self._env_file is None:
            return
        now = self._clock()
        if now - self._checked_at < self._reload_interval_s:
            return
        self._checked_at = now
        stamp = _file_stamp(self._env_file)
        if stamp is None or stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            found = read_env_file(self._env_file)
            if found is None:
                raise ValueError(f"it names no {KEY_VARIABLE}")
            keys = Keys.build(*found)
        except (OSError, ValueError) as exc:
            log.error("secrets keyring: kept the keys in use, the env file is unusable",
                      extra={"env_file": str(self._env_file), "error": str(exc)})
            return
        if keys.fernets.keys() != self._keys.fernets.keys() or keys.current_id != self._keys.current_id:
            log.warning("secrets keyring reloaded", extra={
                "current_key_id": keys.current_id, "old_key_ids": keys.old_ids,
                "previous_key_id": self._keys.current_id})
        self._keys = keys

    # -- sealing ------------------------------------------------------------------------
    def seal(self, value: str) -> bytes:
        self._maybe_reload()
        keys = self._keys
        token = keys.fernets[keys.current_id].encrypt(value.encode())
        return SEALED_PREFIX + keys.current_id.encode() + b":" + token

    def open(self, sealed: bytes) -> str:
        self._maybe_reload()
        keys = self._keys
        sealed = bytes(sealed)
        kid = key_id_of(sealed)
        if kid is None:
            return self._open_unlabelled(keys, sealed)
        fernet = keys.fernets.get(kid)
        if fernet is None:
            raise UnknownSecretsKey(
                f"a stored value is sealed with secrets key {kid}, which is neither the current "
                f"key ({keys.current_id}) nor one of {OLD_KEYS_VARIABLE} "
                f"({', '.join(keys.old_ids) or 'none'}); add that key back to "
                f"{OLD_KEYS_VARIABLE}")
        try:
            return fernet.decrypt(sealed[HEADER_BYTES:]).decode()
        except InvalidToken:
            raise UnreadableValue(
                f"a stored value names secrets key {kid} but does not open with it "
                "(damaged or forged)") from None

    @staticmethod
    def _open_unlabelled(keys: Keys, sealed: bytes) -> str:
        for fernet in keys.fernets.values():
            try:
                return fernet.decrypt(sealed).decode()
            except InvalidToken:
                continue
        raise UnreadableValue(
            "a stored value sealed before key ids opens with neither the current secrets key "
            f"({keys.current_id}) nor one of {OLD_KEYS_VARIABLE} "
            f"({', '.join(keys.old_ids) or 'none'})")

    def reseal(self, sealed: bytes) -> bytes | None:
        """The value sealed with the current key, or None when it already is."""
        if key_id_of(bytes(sealed)) == self.current_key_id:
            return None
        return self.seal(self.open(sealed))


#: What a reader sees instead of a secret value: the same for every value, so listing
#: never opens one (nor hints at its length).
OBFUSCATED = "********"
