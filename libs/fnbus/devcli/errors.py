"""Exit codes of the developer CLI (docs/cli.md) and the one error type that carries them."""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    OK = 0
    USAGE = 1  # bad arguments, a missing project file, no profile
    API_ERROR = 2  # the API refused the request (4xx other than the ones below)
    NOT_FOUND = 3  # 404, or no function of that name
    AUTH = 4  # 401/403: not logged in, bad key, missing permission
    SERVER = 5  # 5xx, or the gateway cannot be reached
    LAMBDA_FAILED = 6  # the function failed (invocation error, deployment Failed)


class CliError(Exception):
    """A failure shown to the user as one line, ending the command with ``code``."""

    def __init__(self, message: str, code: Exit = Exit.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def exit_for_status(status: int) -> Exit:
    """The exit code of an HTTP error status."""
    if status in (401, 403):
        return Exit.AUTH
    if status == 404:
        return Exit.NOT_FOUND
    if status >= 500:
        return Exit.SERVER
    return Exit.API_ERROR
