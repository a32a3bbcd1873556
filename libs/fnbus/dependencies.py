"""Which dependency specs a lambda may declare, and how big its dependencies may grow.

A lambda's dependencies (``{"package": "version spec"}``) are installed by the
deployer with npm or pip, on a host that also holds the Docker socket. Only
versions and version ranges from the package registry are allowed: git
repositories, URLs, tarballs, local paths, GitHub shorthands and npm aliases are
refused: npm packs a git dependency by running its ``prepare`` script, a URL or
tarball reaches wherever the deployer can, and a path reads the deployer's own
files — all on a host that holds the Docker socket.

The registry calls :func:`check_dependencies` when a version is saved (a clear
422 for the author), and the deployer again before it installs anything (versions
saved before this rule existed fail their deployment with the same message).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

#: The original platform has no dependencies; this is ours (Settings.max_dependencies_bytes).
DEFAULT_MAX_DEPENDENCIES_BYTES = 50 * 1024 * 1024

_TARBALL = re.compile(r"\.(tgz|tar|tar\.gz|zip|whl)$", re.IGNORECASE)


class DependencyRefused(ValueError):
    """A dependency spec that is not a registry version or range; the message says why."""


def spec_problem(name: str, spec: str) -> str | None:
    """Why ``name: spec`` is refused, or None when it is a registry version or range."""
    value = spec.strip()
    lowered = value.lower()
    kind: str | None = None
    if "://" in value or lowered.startswith(("http:", "https:")):
        kind = "a URL"
    elif lowered.startswith(("git+", "git:", "git@")):
        kind = "a git repository"
    elif lowered.startswith(("github:", "gitlab:", "bitbucket:", "gist:")):
        kind = "a hosted git repository"
    elif lowered.startswith(("file:", "link:", "portal:", "workspace:")) or value.startswith(
            (".", "/", "\\", "~/")) or re.match(r"^[a-zA-Z]:[\\/]", value):
        kind = "a local path"
    elif lowered.startswith(("npm:", "patch:")):
        kind = "an alias of another package"
    elif _TARBALL.search(value):
        kind = "a tarball"
    elif "/" in value:
        kind = "a GitHub shorthand (owner/repository)"
    elif "@" in value or ":" in value or "\\" in value:
        kind = "not a version or version range"
    if kind is None:
        return None
    return (f"dependency {name!r}: {spec!r} is {kind}; only versions and version ranges "
            "from the package registry are allowed (for example \"^1.2.0\" or \">=2,<3\")")


def check_dependencies(dependencies: Mapping[str, str]) -> None:
    """Raise :class:`DependencyRefused` for the first spec that is not a registry version."""
    for name, spec in dependencies.items():
        if name.startswith(".") or ":" in name or "\\" in name:
            raise DependencyRefused(f"dependency name {name!r} is not a package name")
        problem = spec_problem(name, spec)
        if problem:
            raise DependencyRefused(problem)


def installed_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (symbolic links are not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue  # removed while we looked (an install still running)
            total += st.st_size
    return total


def too_large(size_bytes: int, max_bytes: int) -> str:
    """The deployment's cause when the installed dependencies exceed the cap."""
    return (f"the installed dependencies take {size_bytes / 2**20:.1f} MiB; the limit is "
            f"{max_bytes / 2**20:g} MiB (max_dependencies_bytes)")
