"""Login profiles in ``$XDG_CONFIG_HOME/fnbus/config.json`` (``~/.config/fnbus``), mode 0600."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fnbus.devcli.errors import CliError, Exit

DEFAULT_PROFILE = "default"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fnbus" / "config.json"


@dataclass
class Profile:
    url: str
    account: str
    api_key: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    token: str | None = None
    token_expires_at: float | None = None


def load_all() -> dict[str, Any]:
    path = config_path()
    if not path.exists():
        return {"profiles": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise CliError(f"{path} is not an fnbus config file")
    return data


def save_all(data: dict[str, Any]) -> Path:
    """Write the config atomically, readable by its owner only."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def load_profile(name: str) -> Profile:
    profiles = load_all()["profiles"]
    if name not in profiles:
        raise CliError(f"no profile {name!r}: run `fnbus login --profile {name}` first", Exit.AUTH)
    fields = {k: v for k, v in profiles[name].items() if k in Profile.__dataclass_fields__}
    return Profile(**fields)


def save_profile(name: str, profile: Profile) -> Path:
    data = load_all()
    data["profiles"][name] = {k: v for k, v in asdict(profile).items() if v is not None}
    return save_all(data)


def remove_profile(name: str) -> bool:
    data = load_all()
    if data["profiles"].pop(name, None) is None:
        return False
    save_all(data)
    return True
