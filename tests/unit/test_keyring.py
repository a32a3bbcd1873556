"""The secrets keyring: key ids in sealed values, old format, retired keys, reloading its env file."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from fnbus.admin import _status, install_key
from services.registry.crypto import (
    SecretBox,
    UnknownSecretsKey,
    UnreadableValue,
    key_id,
    key_id_of,
)

OLD = "old-secrets-key-material-0123456789"
NEW = "new-secrets-key-material-9876543210"
OTHER = "some-other-key-material-nobody-has"


def legacy_seal(key_material: str, value: str) -> bytes:
    """How values were sealed before key ids (the previous SecretBox)."""
    key = base64.urlsafe_b64encode(hashlib.sha256(key_material.encode()).digest())
    return Fernet(key).encrypt(value.encode())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_sealed_value_names_its_key_and_opens() -> None:
    box = SecretBox(NEW)
    sealed = box.seal("s3cr3t")
    assert sealed.startswith(b"fnk1:" + key_id(NEW).encode() + b":")
    assert key_id_of(sealed) == key_id(NEW) == box.current_key_id
    assert b"s3cr3t" not in sealed
    assert box.open(sealed) == "s3cr3t"


def test_key_id_reveals_no_bits_of_the_fernet_key() -> None:
    fernet_key_hex = hashlib.sha256(NEW.encode()).hexdigest()
    assert len(key_id(NEW)) == 8
    assert not fernet_key_hex.startswith(key_id(NEW))


def test_retired_key_opens_its_values_and_new_values_use_the_current_key() -> None:
    sealed_old = SecretBox(OLD).seal("before")
    box = SecretBox(NEW, [OLD])
    assert box.open(sealed_old) == "before"
    assert key_id_of(box.seal("after")) == key_id(NEW)
    assert box.old_key_ids == [key_id(OLD)]


@pytest.mark.parametrize("old_keys", [[], [OLD]])
def test_values_sealed_before_key_ids_open_with_current_or_retired_key(old_keys: list[str]) -> None:
    box = SecretBox(NEW, old_keys)
    assert box.open(legacy_seal(NEW, "by current")) == "by current"
    if old_keys:
        assert box.open(legacy_seal(OLD, "by retired")) == "by retired"


def test_unknown_key_id_is_a_clear_error_naming_the_key() -> None:
    sealed = SecretBox(OTHER).seal("lost")
    box = SecretBox(NEW, [OLD])
    with pytest.raises(UnknownSecretsKey) as caught:
        box.open(sealed)
    err = caught.value
    assert err.status == 500 and err.code == "secrets_key_unknown"
    assert key_id(OTHER) in err.message and key_id(NEW) in err.message
    assert "FNBUS_SECRETS_OLD_KEYS" in err.message
    assert "lost" not in err.message


def test_unlabelled_value_no_key_opens_is_a_clear_error() -> None:
    with pytest.raises(UnreadableValue) as caught:
        SecretBox(NEW, [OLD]).open(legacy_seal(OTHER, "x"))
    assert caught.value.code == "sealed_value_unreadable"


def test_tampered_value_under_a_known_key_is_unreadable_not_a_crash() -> None:
    box = SecretBox(NEW)
    sealed = bytearray(box.seal("value"))
    sealed[-5] ^= 1
    with pytest.raises(UnreadableValue):
        box.open(bytes(sealed))


def test_reseal_moves_values_to_the_current_key_and_skips_those_already_there() -> None:
    box = SecretBox(NEW, [OLD])
    fresh = box.reseal(SecretBox(OLD).seal("v"))
    assert fresh is not None and key_id_of(fresh) == key_id(NEW) and box.open(fresh) == "v"
    assert box.reseal(fresh) is None
    legacy = box.reseal(legacy_seal(NEW, "w"))
    assert legacy is not None and key_id_of(legacy) == key_id(NEW)


def _write_env(path: Path, current: str, old: list[str]) -> None:
    path.write_text(f"FNBUS_SERVICE_TOKEN=x\nFNBUS_SECRETS_KEY={current}\n"
                    f"FNBUS_SECRETS_OLD_KEYS='{json.dumps(old)}'\n")
    # Size and mtime are the change signal; make sure the mtime moves in tests.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_ring_follows_its_env_file_after_the_interval(tmp_path: Path) -> None:
    env = tmp_path / "secrets.env"
    _write_env(env, OLD, [])
    clock = Clock()
    box = SecretBox(OLD, env_file=env, clock=clock)
    before = box.seal("v")
    _write_env(env, NEW, [OLD])
    assert box.current_key_id == key_id(OLD)  # not yet: checked once per interval
    clock.now += 1.5
    assert box.current_key_id == key_id(NEW)
    assert box.open(before) == "v"
    assert key_id_of(box.seal("w")) == key_id(NEW)
    # The operator drops the retired key once nothing is sealed with it.
    _write_env(env, NEW, [])
    clock.now += 1.5
    with pytest.raises(UnknownSecretsKey):
        box.open(before)


def test_unusable_env_file_keeps_the_keys_in_use(tmp_path: Path) -> None:
    env = tmp_path / "secrets.env"
    clock = Clock()
    box = SecretBox(OLD, env_file=env, clock=clock)  # no file yet: it will be followed
    env.write_text("FNBUS_SECRETS_KEY=\n")
    clock.now += 2
    assert box.current_key_id == key_id(OLD)
    env.write_text(f"FNBUS_SECRETS_KEY={NEW}\nFNBUS_SECRETS_OLD_KEYS=not-json\n")
    clock.now += 2
    assert box.current_key_id == key_id(OLD)


def test_env_file_holding_another_key_than_the_running_one_is_not_followed(tmp_path: Path) -> None:
    env = tmp_path / "secrets.env"
    _write_env(env, OTHER, [])
    clock = Clock()
    box = SecretBox(OLD, env_file=env, clock=clock)  # the key came from the environment
    _write_env(env, NEW, [])
    clock.now += 2
    assert box.current_key_id == key_id(OLD)


def test_install_key_retires_the_current_key_and_keeps_other_lines(tmp_path: Path) -> None:
    env = tmp_path / "secrets.env"
    env.write_text(f"FNBUS_SERVICE_TOKEN=t\nFNBUS_SECRETS_KEY={OLD}\n")
    retired = install_key(env, NEW, OLD, [OTHER])
    assert retired == [OLD, OTHER]
    text = env.read_text()
    assert "FNBUS_SERVICE_TOKEN=t\n" in text
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    box = SecretBox(NEW, env_file=env)
    assert box.current_key_id == key_id(NEW)
    from services.registry.crypto import read_env_file
    assert read_env_file(env) == (NEW, [OLD, OTHER])


def test_status_says_which_old_keys_can_go() -> None:
    box = SecretBox(NEW, [OLD, OTHER])
    counts = {key_id(NEW): {"secrets": 3}, key_id(OLD): {"certificates": 1}}
    status = _status(box, counts)
    assert status["values_not_under_current_key"] == 1
    assert status["old_keys_safe_to_drop"] == [key_id(OTHER)]
    states = {k["key_id"]: k["state"] for k in status["keys"]}
    assert states == {key_id(NEW): "current", key_id(OLD): "old", key_id(OTHER): "old"}
    status = _status(box, {**counts, "unlabelled": {"secrets": 1}, "deadbeef": {"secrets": 2}})
    assert status["old_keys_safe_to_drop"] == []
    assert {k["key_id"]: k["state"] for k in status["keys"]}["deadbeef"] == "unknown"


def test_admin_commands_parse() -> None:
    from fnbus.cli import build_parser

    args = build_parser().parse_args(["admin", "rotate-secrets-key", "--reseal-only", "--batch-size", "50"])
    assert (args.admin_command, args.reseal_only, args.new_key, args.batch_size) == (
        "rotate-secrets-key", True, None, 50)
    args = build_parser().parse_args(["admin", "secrets-key-status"])
    assert args.admin_command == "secrets-key-status"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["admin", "rotate-secrets-key", "--reseal-only", "--new-key", "k" * 30])
