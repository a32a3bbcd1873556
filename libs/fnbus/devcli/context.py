"""The profile selected for this run (``fnbus --profile NAME …`` or FNBUS_PROFILE)."""

from __future__ import annotations

from fnbus.devcli.client import Api
from fnbus.devcli.config import DEFAULT_PROFILE, load_profile, save_profile

selected = {"profile": DEFAULT_PROFILE}


def open_api() -> Api:
    """An API client for the selected profile; a fresh OAuth token is kept in the profile."""
    name = selected["profile"]
    profile = load_profile(name)
    token = profile.token
    api = Api(profile)
    if profile.token != token:
        save_profile(name, profile)
    return api
