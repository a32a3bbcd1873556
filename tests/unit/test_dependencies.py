"""Dependency specs a lambda may declare, and the size of what gets installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from fnbus.dependencies import (
    DependencyRefused,
    check_dependencies,
    installed_bytes,
    spec_problem,
    too_large,
)


@pytest.mark.parametrize("spec", ["1.2.3", "^1.2.0", "~1.2", "~=1.4", ">=2,<3", ">=1.0.0 <2.0.0",
                                  "1.x", "*", "latest", "1 || 2", "2.0.0-beta.1", "==0.9", "!=1.1"])
def test_registry_versions_and_ranges_pass(spec: str) -> None:
    assert spec_problem("pkg", spec) is None
    check_dependencies({"pkg": spec})


@pytest.mark.parametrize(("spec", "kind"), [
    ("git+https://github.com/acme/pkg.git", "a URL"),
    ("git+ssh://git@github.com/acme/pkg.git#v1", "a URL"),
    ("git://github.com/acme/pkg", "a URL"),
    ("git@github.com:acme/pkg.git", "a git repository"),
    ("https://example.com/pkg-1.0.0.tgz", "a URL"),
    ("http://example.com/x", "a URL"),
    ("github:acme/pkg", "a hosted git repository"),
    ("gitlab:acme/pkg", "a hosted git repository"),
    ("acme/pkg", "a GitHub shorthand"),
    ("acme/pkg#main", "a GitHub shorthand"),
    ("file:../secret", "a local path"),
    ("..", "a local path"),
    (".", "a local path"),
    ("./vendor/pkg", "a local path"),
    ("/etc", "a local path"),
    ("~/pkg", "a local path"),
    ("C:\\pkg", "a local path"),
    ("link:../x", "a local path"),
    ("npm:other@1.0.0", "an alias"),
    ("pkg-1.0.0.tgz", "a tarball"),
    ("pkg-1.0-py3-none-any.whl", "a tarball"),
    ("1.0 @ x", "not a version"),
])
def test_git_url_path_and_alias_specs_are_refused_with_the_reason(spec: str, kind: str) -> None:
    problem = spec_problem("left-pad", spec)
    assert problem is not None and kind in problem
    assert "'left-pad'" in problem and repr(spec) in problem
    with pytest.raises(DependencyRefused, match="only versions and version ranges"):
        check_dependencies({"ok": "1.0.0", "left-pad": spec})


@pytest.mark.parametrize("name", ["../x", ".hidden", "c:x", "a\\b"])
def test_names_that_are_paths_are_refused(name: str) -> None:
    with pytest.raises(DependencyRefused, match="not a package name"):
        check_dependencies({name: "1.0.0"})


def test_installed_bytes_counts_files_not_link_targets(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one").write_bytes(b"x" * 1000)
    (tmp_path / "two").write_bytes(b"y" * 24)
    big = tmp_path.parent / f"{tmp_path.name}-outside"
    big.write_bytes(b"z" * 100_000)
    (tmp_path / "link").symlink_to(big)
    assert installed_bytes(tmp_path) == 1024 + len(str(big))  # the link itself, not its target
    assert installed_bytes(tmp_path / "missing") == 0


def test_the_size_cause_says_both_sizes() -> None:
    assert too_large(60 * 2**20, 50 * 2**20) == (
        "the installed dependencies take 60.0 MiB; the limit is 50 MiB (max_dependencies_bytes)")
